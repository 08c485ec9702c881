-- Sharing the pool: claims of several projects, and what they read about their projects.

-- name: sharing_claim
-- A claim of several projects (:projects, ids; NULL: every project), fair share between them.
SELECT * FROM wn_claim_pool(:projects::bigint[], :worker_id, :worker_name, :free_cpu,
                            :free_accelerators, :total_cpu, :total_accelerators, :tags, :max_jobs,
                            :lease_seconds, :starvation_seconds, :tasks::text[], :with_command,
                            :actor::text, :time_left::float8);

-- name: sharing_projects
-- The projects named by :keys (names or ids), as (key, id, name) rows; a key naming no project
-- has no row. One index probe per key (a name cannot be all digits: a key is one or the other).
SELECT k.key, p.id, p.name
  FROM unnest(:keys::text[]) AS k(key)
  JOIN projects p ON p.name = k.key
UNION ALL
SELECT k.key, p.id, p.name
  FROM unnest(:keys::text[]) AS k(key)
  JOIN projects p ON p.id = CASE WHEN k.key ~ '^[0-9]{1,18}$' THEN k.key::bigint END;

-- name: sharing_next_available
-- In how many seconds the next delayed (retrying) job of :projects (NULL: any project) becomes
-- eligible, on the database's clock; NULL when none waits (wn_next_due of each project).
SELECT extract(epoch FROM min(wn_next_due(p.id)) - now())::float8
  FROM projects p
 WHERE :projects::bigint[] IS NULL OR p.id = ANY (:projects::bigint[]);

-- name: sharing_busy
-- The projects among :projects (NULL: all) with a pending or running job, by id (an idle summary
-- of several projects sums theirs); one index probe per project.
SELECT p.id AS project_id
  FROM projects p
 WHERE (:projects::bigint[] IS NULL OR p.id = ANY (:projects::bigint[]))
   AND EXISTS (SELECT 1 FROM jobs j WHERE j.project_id = p.id AND j.status IN ('PENDING', 'RUNNING'));

-- name: sharing_half_life
-- Set the pool's half-life (every server writes its own at start; one value for all): the value
-- it replaced.
UPDATE pool_settings s SET half_life = :half_life
  FROM (SELECT half_life FROM pool_settings WHERE id = 1 FOR UPDATE) old
 WHERE s.id = 1
RETURNING old.half_life;
