-- Bodies kept beside the log, outside the hash chain, so they can be erased:
-- a 16-byte salt and the body's canonical JSON, whose SHA-256 the event's
-- hashed data holds. Written in the append's transaction; erasing a body
-- deletes its row, and the event itself is never touched.
CREATE TABLE hookledger_contents (
    position bigint PRIMARY KEY REFERENCES hookledger_events (position),
    content  bytea  NOT NULL CHECK (length(content) > 16)
);
