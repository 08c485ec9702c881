-- One tick of a schedule whose row the caller locked (schedule_due, FOR UPDATE SKIP LOCKED), in the
-- caller's transaction: the tick's job is queued through wn_enqueue (p_jobs: its one wn_job_entry,
-- as a submission makes it) and next_run_at moves to p_next, together or not at all.
--
-- outcome:
--   created  the job was queued (job_id), and records the schedule and the tick;
--   existing the job's unique_key named a job the project had: that job is the tick's (job_id);
--   skipped  overlap 'skip' and the last tick's job is still PENDING or RUNNING: no job;
--   done     a job for this tick exists already (made before p_next was stored): nothing again.
-- Each outcome notifies whatsnext_schedules (folded into one per transaction): the other servers
-- read the next tick again.
CREATE OR REPLACE FUNCTION wn_schedule_fire(p_schedule bigint, p_tick timestamptz, p_next timestamptz,
                                            p_jobs jsonb, p_actor text,
                                            OUT outcome text, OUT job_id bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_project bigint;
    v_overlap text;
    v_last_status text;
    v_ids bigint[];
BEGIN
    SELECT s.project_id, s.overlap, j.status INTO v_project, v_overlap, v_last_status
      FROM schedules s LEFT JOIN jobs j ON j.id = s.last_job_id
     WHERE s.id = p_schedule;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'schedule % not found', p_schedule USING ERRCODE = 'WN404', DETAIL = 'schedule';
    END IF;
    PERFORM pg_notify('whatsnext_schedules', '');

    SELECT j.id INTO job_id FROM jobs j WHERE j.schedule_id = p_schedule AND j.scheduled_for = p_tick;
    IF FOUND THEN
        outcome := 'done';
        UPDATE schedules SET next_run_at = p_next WHERE id = p_schedule;
        RETURN;
    END IF;

    IF v_overlap = 'skip' AND v_last_status IN ('PENDING', 'RUNNING') THEN
        outcome := 'skipped';
        UPDATE schedules SET next_run_at = p_next, skipped = skipped + 1, last_skipped_at = p_tick
         WHERE id = p_schedule;
        RETURN;
    END IF;

    SELECT e.ids INTO v_ids FROM wn_enqueue(v_project::text, p_jobs, p_actor, NULL) e;
    job_id := v_ids[1];
    -- A job made by this transaction has its created_at (now()); one that a unique_key found
    -- was made before.
    UPDATE jobs SET schedule_id = p_schedule, scheduled_for = p_tick
     WHERE id = job_id AND created_at = now() AND schedule_id IS NULL;
    outcome := CASE WHEN FOUND THEN 'created' ELSE 'existing' END;
    UPDATE schedules
       SET next_run_at = p_next, last_run_at = p_tick, last_job_id = job_id, runs = runs + 1,
           last_error = NULL, last_error_at = NULL
     WHERE id = p_schedule;
END $$;
