-- outagewatch schema, version 9: an admin page session remembers the token it was opened
-- with (the SHA-256 of the token, as `tokens.hash` keeps it), so that revoking the token, or
-- changing the bootstrap token, ends its sessions. Sessions opened before say nothing of
-- their token: they end here (their users log in again).
DELETE FROM admin_sessions;
ALTER TABLE admin_sessions ADD COLUMN token_hash TEXT NOT NULL DEFAULT '';
