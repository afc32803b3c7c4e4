-- Claims may now expire (an Idempotency-Key is kept for a time; a sourceKey
-- for good): the last log time, in microseconds, at which a claim holds, or
-- NULL for good. A claim found expired is taken again by the next append
-- that names it, in place.
ALTER TABLE hookledger_claims ADD COLUMN expires_at bigint;
