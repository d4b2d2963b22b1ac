-- outagewatch PostgreSQL schema, version 3: alert subscriptions and the delivery log
-- (the same tables as SQLite's version 3).
CREATE TABLE subscriptions (
    id           TEXT PRIMARY KEY,
    service      TEXT,
    grp          TEXT,
    min_severity TEXT NOT NULL CHECK (min_severity IN ('problems', 'outage')),
    channel      TEXT NOT NULL,
    config       TEXT NOT NULL,
    created_at   DOUBLE PRECISION NOT NULL
);

CREATE TABLE deliveries (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key          TEXT NOT NULL UNIQUE,
    subscription TEXT NOT NULL,
    incident     TEXT NOT NULL,
    kind         TEXT NOT NULL,
    channel      TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      DOUBLE PRECISION,
    last_error   TEXT,
    payload      TEXT NOT NULL,
    created_at   DOUBLE PRECISION NOT NULL,
    sent_at      DOUBLE PRECISION
);
CREATE INDEX deliveries_status ON deliveries (status, next_at);
CREATE INDEX deliveries_incident ON deliveries (incident);
CREATE INDEX deliveries_subscription ON deliveries (subscription, id);
