-- outagewatch PostgreSQL schema, version 2: worker liveness and partition leases.
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
