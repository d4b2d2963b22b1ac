-- outagewatch schema, version 3: alert subscriptions and the delivery log.
-- A subscription watches one service, one group, or everything (both NULL).
CREATE TABLE subscriptions (
    id           TEXT PRIMARY KEY,
    service      TEXT,
    grp          TEXT,
    min_severity TEXT NOT NULL CHECK (min_severity IN ('problems', 'outage')),
    channel      TEXT NOT NULL,
    config       TEXT NOT NULL,
    created_at   REAL NOT NULL
);

-- One row per alert to send. `key` (subscription, incident, kind) is unique: an alert is
-- queued at most once, across restarts and however often a transition is handed in again.
CREATE TABLE deliveries (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    key          TEXT NOT NULL UNIQUE,
    subscription TEXT NOT NULL,
    incident     TEXT NOT NULL,
    kind         TEXT NOT NULL,
    channel      TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      REAL,
    last_error   TEXT,
    payload      TEXT NOT NULL,
    created_at   REAL NOT NULL,
    sent_at      REAL
);
CREATE INDEX deliveries_status ON deliveries (status, next_at);
CREATE INDEX deliveries_incident ON deliveries (incident);
CREATE INDEX deliveries_subscription ON deliveries (subscription, id);
