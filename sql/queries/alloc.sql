-- Automatic allocation: the demand for workers, the allocation queues that start them, the lease of
-- the one loop that submits for a queue, and the allocations it submitted.

-- name: alloc_demand
-- The eligible pending jobs (pending, dependencies met, available now) of :projects (NULL: every
-- project), grouped by shape (project, CPUs, GPUs, tags sorted, timeout), each shape with how many
-- of its jobs no live worker could take (unserved): a job could be taken when a worker is ONLINE
-- (wn_worker_status: neither LOST nor OFFLINE), serves its project (registered for it, for several
-- projects among them it, or for every project), offers its CPUs, GPUs and tags in all, and its
-- time left (NULL: no end) is at least the job's timeout (NULL: any time left will do).
WITH pending AS (
    SELECT j.project_id, j.required_cpu AS cpu, j.required_accelerators AS gpus,
           ARRAY(SELECT DISTINCT t FROM unnest(j.required_tags) t ORDER BY t) AS tags, j.timeout
      FROM jobs j
     WHERE j.status = 'PENDING' AND j.unmet_deps = 0 AND j.available_at <= now()
       AND (:projects::bigint[] IS NULL OR j.project_id = ANY (:projects::bigint[]))
), shapes AS (
    SELECT project_id, cpu, gpus, tags, timeout, count(*)::bigint AS pending
      FROM pending
     GROUP BY project_id, cpu, gpus, tags, timeout
), live AS (
    SELECT w.project_id, w.project_ids, w.cpu, w.accelerators, w.tags,
           extract(epoch FROM w.deadline - now())::float8 AS time_left
      FROM workers w
     WHERE wn_worker_status(w.status, w.last_seen, w.lease_seconds) = 'ONLINE'
       AND (w.deadline IS NULL OR w.deadline > now())
)
SELECT p.name AS project, s.cpu, s.gpus, s.tags, s.timeout, s.pending,
       CASE WHEN EXISTS (
                SELECT 1 FROM live w
                 WHERE (w.project_id = s.project_id OR s.project_id = ANY (w.project_ids)
                        OR (w.project_id IS NULL AND w.project_ids IS NULL))
                   AND w.cpu >= s.cpu AND w.accelerators >= s.gpus AND s.tags <@ w.tags
                   AND (s.timeout IS NULL OR w.time_left IS NULL OR w.time_left >= s.timeout))
            THEN 0 ELSE s.pending END AS unserved
  FROM shapes s JOIN projects p ON p.id = s.project_id
 ORDER BY p.name, s.gpus, s.cpu, s.tags, s.timeout NULLS FIRST;

-- name: alloc_queue_list
-- Allocation queues (the one named :name, NULL: all) that serve only projects of :projects (NULL:
-- no restriction): their columns, the names of the projects they serve in their order, and their
-- allocations counted by state.
SELECT q.id, q.name, q.backend,
       ARRAY(SELECT p.name FROM unnest(q.project_ids) WITH ORDINALITY x(id, n)
               JOIN projects p ON p.id = x.id ORDER BY x.n) AS projects,
       q.project_ids, q.worker_args, q.time_limit, q.max_workers, q.workers_per_alloc,
       q.idle_timeout, q.max_submits_per_minute, q.options, q.paused, q.last_error,
       q.last_error_at, q.loop_holder, q.loop_expires_at, q.created_by, q.created_at, q.updated_at,
       (SELECT jsonb_build_object(
                   'QUEUED', count(*) FILTER (WHERE a.state = 'QUEUED'),
                   'RUNNING', count(*) FILTER (WHERE a.state = 'RUNNING'),
                   'FINISHED', count(*) FILTER (WHERE a.state = 'FINISHED'),
                   'FAILED', count(*) FILTER (WHERE a.state = 'FAILED'),
                   'CANCELLED', count(*) FILTER (WHERE a.state = 'CANCELLED'))
          FROM allocations a WHERE a.queue_id = q.id) AS allocations
  FROM alloc_queues q
 WHERE (:name::text IS NULL OR q.name = :name::text)
   AND (:projects::bigint[] IS NULL OR q.project_ids <@ :projects::bigint[])
 ORDER BY q.name;

-- name: alloc_queue_projects
-- The projects (ids) the queue :name serves; no row when there is no such queue.
SELECT project_ids FROM alloc_queues WHERE name = :name;

-- name: alloc_queue_create
-- A new allocation queue; no row when one of that name exists.
INSERT INTO alloc_queues (name, backend, project_ids, worker_args, time_limit, max_workers,
                          workers_per_alloc, idle_timeout, max_submits_per_minute, options, created_by)
VALUES (:name, :backend, :project_ids::bigint[], :worker_args, :time_limit, :max_workers,
        :workers_per_alloc, :idle_timeout, :max_submits_per_minute, :options::jsonb, :created_by)
ON CONFLICT (name) DO NOTHING
RETURNING id;

-- name: alloc_queue_update
-- Change what is given (NULL: keep) of the queue :name; with :set_error, its last error becomes
-- :last_error (NULL: cleared), dated now. No row when there is no such queue.
UPDATE alloc_queues
   SET project_ids = coalesce(:project_ids::bigint[], project_ids),
       worker_args = coalesce(:worker_args::text, worker_args),
       time_limit = coalesce(:time_limit::float8, time_limit),
       max_workers = coalesce(:max_workers::integer, max_workers),
       workers_per_alloc = coalesce(:workers_per_alloc::integer, workers_per_alloc),
       idle_timeout = coalesce(:idle_timeout::float8, idle_timeout),
       max_submits_per_minute = coalesce(:max_submits_per_minute::integer, max_submits_per_minute),
       options = coalesce(:options::jsonb, options),
       paused = coalesce(:paused::boolean, paused),
       last_error = CASE WHEN :set_error::boolean THEN :last_error::text ELSE last_error END,
       last_error_at = CASE WHEN NOT :set_error::boolean THEN last_error_at
                            WHEN :last_error::text IS NULL THEN NULL ELSE now() END,
       updated_at = now()
 WHERE name = :name
RETURNING id;

-- name: alloc_queue_delete
-- Delete the queue :name with its allocations; how many queues went (0 or 1).
WITH gone AS (DELETE FROM alloc_queues WHERE name = :name RETURNING 1)
SELECT count(*)::integer FROM gone;

-- name: alloc_lease_take
-- Take or renew the lease of the queue :name's loop for :seconds: when it is free, expired or
-- already :holder's. No row when another holder's lease is live (or there is no such queue).
UPDATE alloc_queues
   SET loop_holder = :holder, loop_expires_at = now() + make_interval(secs => :seconds)
 WHERE name = :name
   AND (loop_holder = :holder OR loop_expires_at < now() OR loop_holder IS NULL)
RETURNING loop_holder AS holder, loop_expires_at AS expires_at;

-- name: alloc_lease_get
-- Who holds the lease of the queue :name's loop, until when; no row when there is no such queue.
SELECT loop_holder AS holder, loop_expires_at AS expires_at FROM alloc_queues WHERE name = :name;

-- name: alloc_lease_release
-- Give up the lease of the queue :name's loop if :holder holds it; how many leases went (0 or 1).
WITH gone AS (
    UPDATE alloc_queues SET loop_holder = NULL, loop_expires_at = NULL
     WHERE name = :name AND loop_holder = :holder
    RETURNING 1
)
SELECT count(*)::integer FROM gone;

-- name: alloc_create
-- A new allocation of the queue :queue_id; a RUNNING one is started now, an ended one ended now.
INSERT INTO allocations (queue_id, name, external_id, state, reason, workers, time_limit, shape,
                         started_at, ended_at)
VALUES (:queue_id, :name, :external_id::text, :state::text, :reason::text, :workers, :time_limit,
        :shape::jsonb, CASE WHEN :state::text = 'RUNNING' THEN now() END,
        CASE WHEN :state::text IN ('FINISHED', 'FAILED', 'CANCELLED') THEN now() END)
RETURNING id;

-- name: alloc_update
-- Change what is given (NULL: keep) of the allocation :id: a state of RUNNING sets when it started
-- (once), an ended state (FINISHED, FAILED, CANCELLED) when it ended (once); with :set_reason, its
-- reason becomes :reason (NULL: cleared). An ended allocation keeps its state (a change to another
-- state leaves the row as it is: `refused` says so). No row when there is no such allocation.
WITH cur AS (SELECT id, state FROM allocations WHERE id = :id FOR UPDATE),
upd AS (
    UPDATE allocations a
       SET state = coalesce(:state::text, a.state),
           reason = CASE WHEN :set_reason::boolean THEN :reason::text ELSE a.reason END,
           external_id = coalesce(:external_id::text, a.external_id),
           started_at = CASE WHEN :state::text = 'RUNNING' THEN coalesce(a.started_at, now())
                             ELSE a.started_at END,
           ended_at = CASE WHEN :state::text IN ('FINISHED', 'FAILED', 'CANCELLED')
                           THEN coalesce(a.ended_at, now()) ELSE a.ended_at END,
           updated_at = now()
      FROM cur
     WHERE a.id = cur.id
       AND (cur.state NOT IN ('FINISHED', 'FAILED', 'CANCELLED') OR :state::text IS NULL
            OR :state::text = cur.state)
    RETURNING a.id
)
SELECT cur.id, cur.state, NOT EXISTS (SELECT 1 FROM upd) AS refused FROM cur;

-- name: alloc_list
-- Allocations, newest first: of the queue :queue_id (NULL: any) or the one :id (NULL: any), in
-- state :state (NULL: any), at most :limit.
SELECT a.id, q.name AS queue, a.name, a.external_id, a.state, a.reason, a.workers, a.time_limit,
       a.shape, a.submitted_at, a.started_at, a.ended_at, a.updated_at
  FROM allocations a JOIN alloc_queues q ON q.id = a.queue_id
 WHERE (:queue_id::bigint IS NULL OR a.queue_id = :queue_id::bigint)
   AND (:id::bigint IS NULL OR a.id = :id::bigint)
   AND (:state::text IS NULL OR a.state = :state::text)
 ORDER BY a.id DESC
 LIMIT :limit;

-- name: alloc_queue_of
-- The queue of the allocation :id (its name and the projects it serves); no row when there is no
-- such allocation.
SELECT q.name, q.project_ids FROM allocations a JOIN alloc_queues q ON q.id = a.queue_id
 WHERE a.id = :id;

-- name: alloc_recent
-- The latest :per_queue allocations of each queue of :queue_ids, by queue, newest first.
SELECT a.id, q.name AS queue, a.name, a.external_id, a.state, a.reason, a.workers, a.time_limit,
       a.shape, a.submitted_at, a.started_at, a.ended_at, a.updated_at
  FROM (SELECT a.*, row_number() OVER (PARTITION BY a.queue_id ORDER BY a.id DESC) AS n
          FROM allocations a WHERE a.queue_id = ANY (:queue_ids::bigint[])) a
  JOIN alloc_queues q ON q.id = a.queue_id
 WHERE a.n <= :per_queue
 ORDER BY q.name, a.id DESC;
