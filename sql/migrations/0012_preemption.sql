-- Preemptions bounded per job at submission, and checkpoints recorded with the attempt that named
-- them: among the job's artifacts and in its history.
-- depends: 0011_outage

-- A job may give its own max_preempted when it is queued (else its task's).
ALTER TYPE wn_job_entry ADD ATTRIBUTE max_preempted integer;

-- What an artifact is: 'declared' (an input or output the job declared, as its worker found it) or
-- 'checkpoint' (a checkpoint an attempt named in its report, handed to the next attempt). attempt:
-- the attempt that recorded it (NULL for artifacts recorded before this version).
ALTER TABLE artifacts ADD COLUMN kind    text NOT NULL DEFAULT 'declared'
                                         CHECK (kind IN ('declared', 'checkpoint')),
                      ADD COLUMN attempt integer;

-- The checkpoint an attempt named when it ended, on the history row of that ending.
ALTER TABLE job_events ADD COLUMN checkpoint text;
