-- Claims that stay fast while a long transaction holds back the xmin horizon.
-- depends: 0018_counters
--
-- A claim reads the pending jobs of a project in hand-out order: highest priority first, then
-- oldest. While a transaction pins the horizon (a migration, an analytics reader, a forgotten
-- psql session), the index entries of the jobs claimed since it began cannot be removed, and
-- each claim walked all of them (and the table row behind each) before it found a job: every
-- claim slower than the one before. A claim now starts at a mark: the place in hand-out order
-- before which no job can be handed out (claim_marks, one row per project). A background sweep
-- (wn_advance_marks) moves each mark forward to the first pending job; any statement that makes
-- a job eligible at a place before the mark moves the mark back (wn_lower_mark, from triggers on
-- jobs). No row: no mark, the claim reads from the start.

-- The place is (rank, id) with rank = -priority, so that hand-out order is ascending in both
-- and a row comparison (rank, id) >= (mark) starts the index scan at the mark.
CREATE TABLE claim_marks (
    project_id bigint PRIMARY KEY REFERENCES projects (id) ON DELETE CASCADE,
    rank       bigint NOT NULL,
    id         bigint NOT NULL
);

-- Hand-out order, replacing jobs_eligible (project_id, priority DESC, id): the same entries,
-- the same order, in a form a row comparison can start from.
CREATE INDEX jobs_claim_order ON jobs (project_id, (-(priority::bigint)), id)
    WHERE status = 'PENDING' AND unmet_deps = 0;
DROP INDEX jobs_eligible;
