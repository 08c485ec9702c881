-- name: worker_register
-- A worker of one project (:project), of several (:project_ids) or of all its token's (:all_projects);
-- :deadline is when its time ends (NULL: no end), :lease_seconds the lease it is granted.
INSERT INTO workers (project_id, project_ids, all_projects, name, entity, host, pid, cpu, accelerators,
                     tags, token_id, deadline, lease_seconds)
VALUES (CASE WHEN :project::text IS NULL THEN NULL ELSE wn_project_id(:project) END,
        :project_ids::bigint[], :all_projects, :name, :entity, :host, :pid, :cpu, :accelerators, :tags,
        :token_id, :deadline::timestamptz, :lease_seconds)
RETURNING id, project_id, project_ids, all_projects, name, entity, host, pid, cpu, accelerators, tags,
          wn_worker_status(status, last_seen, lease_seconds) AS status, registered_at, last_seen,
          lease_seconds, deadline;

-- name: worker_heartbeat
-- Extend the worker's leases; the ids of its jobs to cancel.
SELECT wn_heartbeat(:worker_id, :lease_seconds, :running, :grace);

-- name: worker_leases
-- The running attempts a worker holds, as (id, attempt). Read right after its heartbeat, in the
-- same transaction, these are the leases the heartbeat extended (or fresher ones, just claimed).
SELECT id, attempt FROM jobs WHERE worker_id = :worker_id AND status = 'RUNNING' ORDER BY id;

-- name: worker_deregister
-- The worker leaves; how many jobs it still held (back to the queue as lost).
SELECT wn_deregister(:worker_id);

-- name: worker_list
-- Workers (the one :worker_id, NULL: all) serving :project (NULL: any), with the status :status
-- (ONLINE, LOST or OFFLINE as wn_worker_status says; NULL: any), of :projects only (NULL: no
-- restriction), with the jobs each holds now and the CPUs and GPUs those need.
SELECT w.id, w.project_id,
       CASE WHEN :projects::bigint[] IS NULL THEN w.project_ids
            ELSE ARRAY(SELECT x FROM unnest(w.project_ids) x WHERE x = ANY (:projects::bigint[]) ORDER BY x)
       END AS project_ids,
       w.all_projects, w.name, w.entity, w.host, w.pid, w.cpu, w.accelerators, w.tags,
       wn_worker_status(w.status, w.last_seen, w.lease_seconds) AS status,
       w.registered_at, w.last_seen, w.lease_seconds, w.deadline,
       coalesce(array_agg(j.id ORDER BY j.id) FILTER (WHERE j.id IS NOT NULL), '{}') AS running,
       coalesce(sum(j.required_cpu), 0)::int AS used_cpu,
       coalesce(sum(j.required_accelerators), 0)::int AS used_accelerators
  FROM workers w LEFT JOIN jobs j ON j.worker_id = w.id AND j.status = 'RUNNING'
 WHERE (:worker_id::bigint IS NULL OR w.id = :worker_id)
   AND (:project::text IS NULL OR w.project_id = wn_project_id(:project)
        OR wn_project_id(:project) = ANY (w.project_ids) OR (w.all_projects AND w.project_ids IS NULL))
   AND (:status::text IS NULL OR wn_worker_status(w.status, w.last_seen, w.lease_seconds) = :status)
   AND (:projects::bigint[] IS NULL OR w.project_id = ANY(:projects) OR w.project_ids && :projects)
 GROUP BY w.id ORDER BY w.id;

-- name: reap
-- One sweep of the lease reaper (at most :batch jobs): how many jobs it handled, by project, task
-- and resulting status (no rows if another server holds it), after a row with status EXTENDED
-- (jobs: leases extended, away: seconds) when the queue was away since the last sweep.
SELECT project_name, task_name, status, jobs, away FROM wn_reap_sweep(:batch, :lease, :grace, :every);

-- name: worker_stops
-- The running attempts a worker is asked to stop (cancelled or requeued), as (id, attempt, stop);
-- one row with a NULL id when there are none, no row when there is no such worker.
SELECT j.id, j.attempt,
       CASE WHEN j.cancel_requested THEN 'cancel' ELSE 'requeue' END AS stop
  FROM workers w
  LEFT JOIN jobs j ON j.worker_id = w.id AND j.status = 'RUNNING'
                  AND (j.cancel_requested OR j.requeue_attempt = j.attempt)
 WHERE w.id = :worker_id
 ORDER BY j.id;
