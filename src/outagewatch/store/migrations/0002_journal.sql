-- outagewatch schema, version 2: the in-process bus's journal.
-- Every accepted batch of events is written here (group commit) before the API answers 202;
-- the pipeline state records the last journal seq folded into it (meta 'journal_seq'), so a
-- restart replays exactly the batches the saved state has not seen yet.
CREATE TABLE journal (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    received REAL NOT NULL,
    lines    BLOB NOT NULL
);
