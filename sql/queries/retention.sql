-- Retention: deleting what is older than the retention, one batch per statement.

-- name: prune
-- One batch of retention (wn_prune) in its own transaction, from where the batch before stopped
-- (:after_at, :after_id; NULL: from the oldest): busy (another server is pruning, so nothing was
-- done), how many rows of each kind went (with :dry_run, would go), and where it stopped
-- (next_at, next_id; NULL when there are no more jobs to look at). :project (a name or an id;
-- NULL: every project) is resolved first (404 naming it when unknown).
SELECT r.busy, r.jobs, r.events, r.logs, r.artifacts, r.dependencies, r.workers, r.sessions, r.groups,
       r.allocations, r.next_at, r.next_id
  FROM wn_prune(:older_than::float8,
                CASE WHEN :project::text IS NULL THEN NULL ELSE wn_project_id(:project::text) END,
                :batch::integer, :dry_run::boolean, :after_at::timestamptz, :after_id::bigint) r;
