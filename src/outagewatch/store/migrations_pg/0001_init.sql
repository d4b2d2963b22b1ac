-- outagewatch PostgreSQL schema, version 1: the tables of SQLite's versions 1 and 2.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Opaque pipeline state, one row per pipeline: 'pipeline' (one process) or 'partition/N'
-- (a worker's partition). `position` is the last bus position folded into `value`.
CREATE TABLE state (
    key      TEXT PRIMARY KEY,
    value    BYTEA NOT NULL,
    position BIGINT
);

-- One row per incident; `doc` is the contract section 4 JSON object.
CREATE TABLE incidents (
    id         TEXT PRIMARY KEY,
    service    TEXT NOT NULL,
    status     TEXT NOT NULL CHECK (status IN ('ongoing', 'resolved')),
    started_at BIGINT NOT NULL,
    ended_at   BIGINT,
    doc        JSONB NOT NULL
);
CREATE INDEX incidents_service_started ON incidents (service, started_at);
CREATE INDEX incidents_started ON incidents (started_at);

-- State changes are rows: every open / peak / resolve of an incident.
CREATE TABLE transitions (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident   TEXT NOT NULL,
    service    TEXT NOT NULL,
    action     TEXT NOT NULL,
    from_state TEXT NOT NULL,
    to_state   TEXT NOT NULL,
    at         DOUBLE PRECISION NOT NULL,
    detail     JSONB NOT NULL
);
CREATE INDEX transitions_incident ON transitions (incident, seq);

-- Counted reports per minute, country and problem, one packed chunk per service and hour.
CREATE TABLE minute_counts (
    service TEXT NOT NULL,
    hour    BIGINT NOT NULL,
    data    BYTEA NOT NULL,
    PRIMARY KEY (service, hour)
);

-- Accepted probe, status and metric events, kept as they came (normalised).
CREATE TABLE events (
    seq     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type    TEXT NOT NULL,
    service TEXT NOT NULL,
    ts      DOUBLE PRECISION NOT NULL,
    body    BYTEA NOT NULL
);
CREATE INDEX events_service_ts ON events (service, ts);

-- The in-process bus's journal (see the SQLite migration 0002).
CREATE TABLE journal (
    seq      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received DOUBLE PRECISION NOT NULL,
    lines    BYTEA NOT NULL
);
