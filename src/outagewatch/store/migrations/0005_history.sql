-- outagewatch schema, version 5: compacted history (issue 20).
-- One block per service and UTC day (days since the epoch): the day's counted reports by
-- bucket, country and problem at `res` minutes per bucket (1, 15 or 60), encoded by
-- outagewatch.store.codec; `total` is the day's sum (the 90-day bar reads only it).
-- Complete raw hours of minute_counts are folded in by compaction and deleted.
CREATE TABLE count_days (
    service TEXT NOT NULL,
    day     INTEGER NOT NULL,
    res     INTEGER NOT NULL,
    total   BIGINT NOT NULL,
    data    BLOB NOT NULL,
    PRIMARY KEY (service, day)
) WITHOUT ROWID;
CREATE INDEX count_days_res ON count_days (res, day);
-- The blocks are compressed already: PostgreSQL stores them as they are.
--postgresql: ALTER TABLE count_days ALTER COLUMN data SET STORAGE EXTERNAL;
