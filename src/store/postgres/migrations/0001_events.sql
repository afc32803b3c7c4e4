-- The log: one row per event. `position` is global, 1-based, gapless and in
-- commit order because every append transaction takes the one row of
-- hookledger_head FOR UPDATE before it picks positions (see writer.rs).
CREATE TABLE hookledger_events (
    position        bigint  PRIMARY KEY CHECK (position > 0),
    stream          text    NOT NULL,
    version         bigint  NOT NULL CHECK (version >= 0),
    event_type      text    NOT NULL,
    schema_version  integer NOT NULL,
    -- Microseconds since the Unix epoch, UTC: exactly what the hash covers.
    recorded_at     bigint  NOT NULL,
    -- Canonical JSON, kept as bytes: the hash covers these exact bytes.
    data            bytea   NOT NULL,
    metadata        bytea   NOT NULL,
    prev_hash       bytea   NOT NULL CHECK (length(prev_hash) = 32),
    hash            bytea   NOT NULL CHECK (length(hash) = 32),
    UNIQUE (stream, version)
);

-- The head of the log and the time of its last event. Its one row is the
-- write lock: whoever holds it FOR UPDATE is the only one assigning positions.
CREATE TABLE hookledger_head (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    position    bigint  NOT NULL,
    recorded_at bigint  NOT NULL
);
INSERT INTO hookledger_head (id, position, recorded_at) VALUES (true, 0, 0);

-- Claims taken by appends (Idempotency-Key, sourceKey): unique for good,
-- written in the transaction of the append that takes them.
CREATE TABLE hookledger_claims (
    claim_sha256 bytea  PRIMARY KEY CHECK (length(claim_sha256) = 32),
    claim        text   NOT NULL,
    position     bigint NOT NULL
);
