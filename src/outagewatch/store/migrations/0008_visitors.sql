-- outagewatch schema, version 8: visitors' email subscriptions and admin page sessions
-- (issue 19). Only what is needed: the address, its services, and hashes of the secrets.

-- One visitor's request to follow some services by email. Until confirmed (double opt-in)
-- it holds the SHA-256 (hex) of the confirmation token; confirmed, the alerter's
-- subscriptions (channel email, config.visitor = id) carry the alerts.
CREATE TABLE visitor_subscribers (
    id           TEXT PRIMARY KEY,
    email        TEXT NOT NULL,
    services     TEXT NOT NULL,
    confirm_hash TEXT,
    created_at   REAL NOT NULL,
    confirmed_at REAL
);
CREATE INDEX visitor_subscribers_email ON visitor_subscribers (email);

-- Admin page sessions: the SHA-256 (hex) of the session id in the cookie.
CREATE TABLE admin_sessions (
    hash       TEXT PRIMARY KEY,
    expires_at REAL NOT NULL
);

-- Random keys made once and shared by every node of the deployment (the HMAC key of
-- unsubscribe links, which must stay valid without storing a token per subscriber).
CREATE TABLE site_keys (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
