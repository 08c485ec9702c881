-- Retention: finished jobs older than the server's --retention (or a manual prune) are deleted in
-- small batches, oldest first (wn_prune), and so are the rows of workers gone as long.
-- depends: 0014_sweeps

-- What each batch reads: finished jobs in the order they finished, from where the last batch
-- stopped. Without it every batch, and every minute's look when nothing is old enough, reads the
-- whole table.
CREATE INDEX jobs_finished ON jobs (finished_at, id) WHERE status IN ('COMPLETED', 'FAILED', 'CANCELLED');

-- Which jobs refer to a worker, whatever their status: deleting a worker row looks its jobs up
-- (the foreign key of jobs.worker_id sets it to NULL) and, without it, reads the whole table for
-- each worker. Few distinct values: the index stays small (deduplicated).
CREATE INDEX jobs_worker_any ON jobs (worker_id) WHERE worker_id IS NOT NULL;
