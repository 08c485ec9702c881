-- A worker says how it started an attempt: its handle outside the worker's host (a SLURM job id,
-- a RUN:AI workload) and the GPU ids it gave the job. Handles of lost attempts are forgotten: the
-- worker cancelled them before starting. Returns (code, status, message) like a report.
CREATE OR REPLACE FUNCTION wn_job_started(p_job bigint, p_attempt integer, p_external_id text,
                                          p_gpus integer[])
RETURNS TABLE (code integer, status text, message text)
LANGUAGE plpgsql AS $$
DECLARE
    j record;
BEGIN
    SELECT jobs.status, jobs.attempt INTO j FROM jobs WHERE jobs.id = p_job FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 404, NULL::text, format('job %s not found', p_job);
        RETURN;
    END IF;
    IF j.status <> 'RUNNING' OR j.attempt <> p_attempt THEN
        RETURN QUERY SELECT 409, j.status,
            format('stale attempt: job %s is %s at attempt %s, this is attempt %s',
                   p_job, j.status, j.attempt, p_attempt);
        RETURN;
    END IF;
    UPDATE jobs SET external_id = coalesce(p_external_id, external_id), gpus = coalesce(p_gpus, gpus),
           lost_external_ids = '{}'
     WHERE jobs.id = p_job;
    RETURN QUERY SELECT 200, j.status, NULL::text;
END $$;
