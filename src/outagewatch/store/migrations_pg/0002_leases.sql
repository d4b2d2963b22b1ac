-- outagewatch PostgreSQL schema, version 2: the in-process bus's journal (SQLite's version 2;
-- a PostgreSQL database made before this sequence was shared has it from version 1), worker
-- liveness and partition leases.
CREATE TABLE IF NOT EXISTS journal (
    seq      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received DOUBLE PRECISION NOT NULL,
    lines    BYTEA NOT NULL
);

-- A lease is taken when it is free or expired, and every take increments `epoch`; a commit
-- for a partition locks its lease row and checks (owner, epoch), so a worker that lost its
-- lease can never write over its successor. Released leases keep their row (expired), so
-- epochs never repeat.
CREATE TABLE workers (
    id         TEXT PRIMARY KEY,
    expires_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    epoch      BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
