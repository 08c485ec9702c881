-- When an attempt ends (a RUNNING job leaves RUNNING, or is handed out again as a new attempt),
-- its usage of the pool is added to its project's usage (project_usage, in the row of this
-- session's stripe), decayed to now. Every way an attempt ends goes through here: reports, the
-- reaper, cancel, a worker's deregistration.
-- When the project has a quota or the job a concurrency key, the attempt's end may let a waiting
-- job of the project run: one waiting claim that could take a job like it is woken.
CREATE OR REPLACE FUNCTION wn_account_attempt() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_half double precision := (SELECT half_life FROM pool_settings WHERE id = 1);
    v_seconds double precision :=
        greatest(extract(epoch FROM now() - coalesce(OLD.started_at, now())), 0);
    v_quota boolean;
BEGIN
    INSERT INTO project_usage AS u (project_id, stripe, usage, gpu_seconds, cpu_seconds, attempts, updated_at)
    VALUES (OLD.project_id, (pg_backend_pid() % 8)::smallint,
            wn_decayed_span(wn_usage_weight(OLD.required_cpu, OLD.required_accelerators), v_seconds, v_half),
            wn_decayed_span(OLD.required_accelerators, v_seconds, v_half),
            wn_decayed_span(OLD.required_cpu, v_seconds, v_half), 1, now())
    ON CONFLICT (project_id, stripe) DO UPDATE
       SET usage = wn_decayed(u.usage, extract(epoch FROM now() - u.updated_at), v_half) + excluded.usage,
           gpu_seconds = wn_decayed(u.gpu_seconds, extract(epoch FROM now() - u.updated_at), v_half)
                         + excluded.gpu_seconds,
           cpu_seconds = wn_decayed(u.cpu_seconds, extract(epoch FROM now() - u.updated_at), v_half)
                         + excluded.cpu_seconds,
           attempts = wn_decayed(u.attempts, extract(epoch FROM now() - u.updated_at), v_half) + 1,
           updated_at = greatest(u.updated_at, now());
    IF OLD.concurrency_key IS NOT NULL THEN
        v_quota := true;
    ELSE
        SELECT p.max_gpus IS NOT NULL OR p.max_cpus IS NOT NULL OR p.max_running IS NOT NULL
          INTO v_quota FROM projects p WHERE p.id = OLD.project_id;
    END IF;
    IF v_quota THEN
        PERFORM wn_notify_jobs(OLD.project_id, 1, 'e' || OLD.id || ':' || OLD.attempt,
                               OLD.required_cpu, OLD.required_accelerators);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_account_attempt AFTER UPDATE OF status, attempt ON jobs FOR EACH ROW
    WHEN (OLD.status = 'RUNNING' AND (NEW.status <> 'RUNNING' OR NEW.attempt <> OLD.attempt))
    EXECUTE FUNCTION wn_account_attempt();
