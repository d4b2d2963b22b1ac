-- outagewatch PostgreSQL schema, version 5: compacted history (see the SQLite migration 0005).
CREATE TABLE count_days (
    service TEXT NOT NULL,
    day     INTEGER NOT NULL,
    res     INTEGER NOT NULL,
    total   BIGINT NOT NULL,
    data    BYTEA NOT NULL,
    PRIMARY KEY (service, day)
);
CREATE INDEX count_days_res ON count_days (res, day);
-- The blocks are compressed already: store them as they are.
ALTER TABLE count_days ALTER COLUMN data SET STORAGE EXTERNAL;
