-- A worker's status tells the truth: ONLINE, LOST (its last heartbeat is older than its lease) or
-- OFFLINE (it left), decided in one place (wn_worker_status) from the columns below.
-- depends: 0014_sweeps

-- The lease the worker was granted, in seconds (at registration, then at each heartbeat: the
-- lease of the server that answered it). Workers registered before have the default lease.
ALTER TABLE workers ADD COLUMN lease_seconds double precision NOT NULL DEFAULT 60;

-- The end of the recovery grace after the queue was away (set by the sweep that found it away):
-- workers could not heartbeat meanwhile, so none counts as LOST before it.
ALTER TABLE reaper_clock ADD COLUMN recovery_until timestamptz;
