-- outagewatch PostgreSQL schema, version 7: running a live server (the same tables as
-- SQLite's version 7): scoped API tokens (hashes only), incident updates, maintenance.
CREATE TABLE api_tokens (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    scopes     TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE,
    created_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE incident_updates (
    seq      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident TEXT NOT NULL,
    at       DOUBLE PRECISION NOT NULL,
    status   TEXT NOT NULL,
    text     TEXT NOT NULL
);
CREATE INDEX incident_updates_incident ON incident_updates (incident, seq);

CREATE TABLE maintenance (
    id         TEXT PRIMARY KEY,
    service    TEXT NOT NULL,
    starts_at  DOUBLE PRECISION NOT NULL,
    ends_at    DOUBLE PRECISION NOT NULL,
    title      TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX maintenance_ends ON maintenance (ends_at);
