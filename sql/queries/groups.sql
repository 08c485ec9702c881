-- name: group_ensure
-- The ids of a project's groups by name, creating those that do not exist yet.
INSERT INTO job_groups (project_id, name)
SELECT wn_project_id(:project), n FROM unnest(:names::text[]) n
ON CONFLICT (project_id, name) DO UPDATE SET name = EXCLUDED.name
RETURNING id, name;

-- name: group_list
-- A project's groups, newest first, with their job counts by status.
SELECT g.id, g.project_id, g.name, g.created_at,
       coalesce(sum(c.n), 0)::bigint AS total,
       coalesce(sum(c.n) FILTER (WHERE c.status IN ('COMPLETED', 'FAILED', 'CANCELLED')), 0)::bigint
         AS finished,
       coalesce(jsonb_object_agg(c.status, c.n) FILTER (WHERE c.status IS NOT NULL), '{}') AS counts
  FROM job_groups g
  LEFT JOIN LATERAL (SELECT j.status, count(*) AS n FROM jobs j WHERE j.group_id = g.id
                      GROUP BY j.status) c ON true
 WHERE g.project_id = wn_project_id(:project)
 GROUP BY g.id
 ORDER BY g.id DESC
 LIMIT :limit;

-- name: group_get
-- One group of a project, by name or id, with its job counts by status.
SELECT g.id, g.project_id, g.name, g.created_at,
       coalesce(sum(c.n), 0)::bigint AS total,
       coalesce(sum(c.n) FILTER (WHERE c.status IN ('COMPLETED', 'FAILED', 'CANCELLED')), 0)::bigint
         AS finished,
       coalesce(jsonb_object_agg(c.status, c.n) FILTER (WHERE c.status IS NOT NULL), '{}') AS counts
  FROM job_groups g
  LEFT JOIN LATERAL (SELECT j.status, count(*) AS n FROM jobs j WHERE j.group_id = g.id
                      GROUP BY j.status) c ON true
 WHERE g.project_id = wn_project_id(:project)
   AND (g.name = :group OR g.id::text = :group)
 GROUP BY g.id;

-- name: group_cancel
-- Cancel a group's unfinished jobs: pending and blocked ones at once, running ones through their
-- workers. How many jobs it touched.
SELECT count(wn_cancel(j.id, 'group cancelled', :actor))
  FROM (SELECT id FROM jobs WHERE group_id = :group_id AND status IN ('PENDING', 'BLOCKED', 'RUNNING')
         ORDER BY id FOR UPDATE) j;

-- name: group_retry
-- Put a group's failed, lost or cancelled jobs back in the queue (those of the kinds chosen), with
-- what they blocked and, with :downstream, the dependants that already ran over their results:
-- the ids of every job put back, and of those dependants.
SELECT ids, downstream
  FROM wn_retry_group(:group_id, :actor, :failed, :cancelled, :lost, :downstream);
