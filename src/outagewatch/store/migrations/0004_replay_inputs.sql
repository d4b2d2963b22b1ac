-- outagewatch schema, version 4: the replay ledger.
-- How much of each replayed input is committed, written in the same transaction as the
-- pipeline state it went into (`state_key`), so a re-run or a resumed replay counts each
-- line once. An input is known by its content: `head` (digest of its first bytes) finds the
-- candidates, `digest` (of its first `byte_offset` bytes) confirms one.
CREATE TABLE replay_inputs (
    state_key   TEXT NOT NULL,
    id          TEXT NOT NULL,
    name        TEXT NOT NULL,
    head        BLOB NOT NULL,
    byte_offset BIGINT NOT NULL,
    lines       BIGINT NOT NULL,
    digest      BLOB NOT NULL,
    updated_at  REAL NOT NULL,
    PRIMARY KEY (state_key, id)
);
