-- outagewatch PostgreSQL schema, version 4: the replay ledger (as SQLite's version 4).
CREATE TABLE replay_inputs (
    state_key   TEXT NOT NULL,
    id          TEXT NOT NULL,
    name        TEXT NOT NULL,
    head        BYTEA NOT NULL,
    byte_offset BIGINT NOT NULL,
    lines       BIGINT NOT NULL,
    digest      BYTEA NOT NULL,
    updated_at  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (state_key, id)
);
