-- Retention: finished jobs older than the server's --retention (or a manual prune) are deleted in
-- small batches, oldest first (wn_prune), and so are the worker rows no job refers to any more.
-- depends: 0014_sweeps

-- What each batch reads first: finished jobs in the order they finished. Without it every batch,
-- and every minute's look when nothing is old enough, reads the whole table.
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE status IN ('COMPLETED', 'FAILED', 'CANCELLED');

-- Which jobs refer to a worker, whatever their status: deleting a worker row looks its jobs up
-- (the foreign key of jobs.worker_id) and retention deletes only workers no job refers to. Few
-- distinct values: the index stays small (deduplicated).
CREATE INDEX jobs_worker_any ON jobs (worker_id) WHERE worker_id IS NOT NULL;
