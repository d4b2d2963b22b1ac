-- outagewatch PostgreSQL schema, version 8: visitors' email subscriptions and admin page
-- sessions (the same tables as SQLite's version 8).
CREATE TABLE visitor_subscribers (
    id           TEXT PRIMARY KEY,
    email        TEXT NOT NULL,
    services     TEXT NOT NULL,
    confirm_hash TEXT,
    created_at   DOUBLE PRECISION NOT NULL,
    confirmed_at DOUBLE PRECISION
);
CREATE INDEX visitor_subscribers_email ON visitor_subscribers (email);

CREATE TABLE admin_sessions (
    hash       TEXT PRIMARY KEY,
    expires_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE site_keys (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
