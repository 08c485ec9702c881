-- Retention: deleting what is older than the retention, one batch per statement.

-- name: prune
-- One batch of retention (wn_prune) in its own transaction: busy (another server is pruning, so
-- nothing was done) and how many rows of each kind went; with :dry_run, how many would go in all.
-- :project (a name or an id; NULL: every project) is resolved first (404 naming it when unknown).
SELECT r.busy, r.jobs, r.events, r.logs, r.artifacts, r.dependencies, r.workers, r.sessions, r.groups
  FROM wn_prune(:older_than::float8,
                CASE WHEN :project::text IS NULL THEN NULL ELSE wn_project_id(:project::text) END,
                :batch::integer, :dry_run::boolean) r;
