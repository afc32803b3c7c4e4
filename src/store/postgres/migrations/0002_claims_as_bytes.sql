-- Claims hold client text (an Idempotency-Key, a sourceKey), and a text
-- column refuses a NUL character that JSON allows and the embedded log keeps.
-- Kept as their UTF-8 bytes instead, every claim the other backends take
-- fits here too.
ALTER TABLE hookledger_claims
    ALTER COLUMN claim TYPE bytea USING convert_to(claim, 'UTF8');
