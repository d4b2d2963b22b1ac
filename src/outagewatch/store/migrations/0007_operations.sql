-- outagewatch schema, version 7: running a live server (contract §8).
-- Scoped API tokens, stored only as SHA-256 hashes (hex) of the token.
CREATE TABLE api_tokens (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    scopes     TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL
);

-- The operator's posts on an incident, in order (`seq`).
CREATE TABLE incident_updates (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    incident TEXT NOT NULL,
    at       REAL NOT NULL,
    status   TEXT NOT NULL,
    text     TEXT NOT NULL
);
CREATE INDEX incident_updates_incident ON incident_updates (incident, seq);

-- Maintenance windows of a service or a group (`service` holds either id).
CREATE TABLE maintenance (
    id         TEXT PRIMARY KEY,
    service    TEXT NOT NULL,
    starts_at  REAL NOT NULL,
    ends_at    REAL NOT NULL,
    title      TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX maintenance_ends ON maintenance (ends_at);
