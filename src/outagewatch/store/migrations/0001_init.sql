-- outagewatch schema, version 1 (both databases; see store/sql.py `migrations`)
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Opaque pipeline state (baselines, recent minutes, open incidents, dedup windows), one
-- row per pipeline: 'pipeline' (one process) or 'partition/N' (a PostgreSQL worker's
-- partition, whose `position` is the last bus position folded into `value`).
CREATE TABLE state (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
--postgresql: ALTER TABLE state ADD COLUMN position BIGINT;

-- One row per incident; `doc` is the contract §4 JSON object.
CREATE TABLE incidents (
    id         TEXT PRIMARY KEY,
    service    TEXT NOT NULL,
    status     TEXT NOT NULL CHECK (status IN ('ongoing', 'resolved')),
    started_at BIGINT NOT NULL,
    ended_at   BIGINT,
    doc        TEXT NOT NULL
);
--postgresql: ALTER TABLE incidents ALTER COLUMN doc TYPE JSONB USING doc::jsonb;
CREATE INDEX incidents_service_started ON incidents (service, started_at);
CREATE INDEX incidents_started ON incidents (started_at);

-- State changes are rows: every open / peak / resolve of an incident.
CREATE TABLE transitions (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    incident   TEXT NOT NULL,
    service    TEXT NOT NULL,
    action     TEXT NOT NULL,
    from_state TEXT NOT NULL,
    to_state   TEXT NOT NULL,
    at         REAL NOT NULL,
    detail     TEXT NOT NULL
);
--postgresql: ALTER TABLE transitions ALTER COLUMN detail TYPE JSONB USING detail::jsonb;
CREATE INDEX transitions_incident ON transitions (incident, seq);

-- Counted reports per minute, country and problem, one packed chunk per service and hour.
CREATE TABLE minute_counts (
    service TEXT NOT NULL,
    hour    BIGINT NOT NULL,
    data    BLOB NOT NULL,
    PRIMARY KEY (service, hour)
) WITHOUT ROWID;

-- Accepted probe, status and metric events, kept as they came (normalised).
CREATE TABLE events (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    type    TEXT NOT NULL,
    service TEXT NOT NULL,
    ts      REAL NOT NULL,
    body    BLOB NOT NULL
);
CREATE INDEX events_service_ts ON events (service, ts);
