-- A job's lifetime on nodes the queue does not control: the reaper's clock (an outage of the
-- queue does not count against leases), preemptions that use no attempt up to a bound,
-- checkpoints handed from one attempt to the next, and the end of each worker's time.
-- depends: 0009_fair_share

-- When a lease sweep last ran (any server): a sweep that finds it older than a lease knows the
-- queue was away, and extends every running lease by the gap before it reaps.
CREATE TABLE reaper_clock (
    id            integer PRIMARY KEY CHECK (id = 1),
    last_sweep_at timestamptz
);
INSERT INTO reaper_clock (id) VALUES (1);

-- A job handed back by a preemption (or a worker that stops) goes back to the queue without using
-- an attempt, at most max_preempted times (then FAILED "preempted N times"); preempted counts them.
ALTER TABLE tasks ADD COLUMN max_preempted integer NOT NULL DEFAULT 10 CHECK (max_preempted >= 0);
ALTER TABLE jobs ADD COLUMN max_preempted integer NOT NULL DEFAULT 10 CHECK (max_preempted >= 0),
                 ADD COLUMN preempted     integer NOT NULL DEFAULT 0,
                 -- The latest checkpoint a job named (a path or URI), handed to its next attempt.
                 ADD COLUMN checkpoint    text;

-- When a worker's time ends (its --deadline, or its SLURM allocation's end): NULL, no end.
ALTER TABLE workers ADD COLUMN deadline timestamptz;
