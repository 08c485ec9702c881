-- Retention: one batch of what is older than p_older_than seconds, in the caller's transaction
-- (keep it short: call again for the next batch, each call its own transaction).
--
-- * Up to p_batch jobs wn_prunable allows (finished before the cutoff, of project p_project or
--   of every project when NULL, nothing that may still run downstream of them or in their
--   group), in the order they finished, after the position (p_after_at, p_after_id) where the
--   batch before stopped (NULL: from the oldest), with their history (job_events), output lines
--   (job_logs), artifact records (artifacts, checkpoints included) and dependency rows either
--   way; and the groups they leave empty.
-- * Once fewer than p_batch jobs were found (the jobs are done), and p_project is NULL: up to
--   p_batch worker rows not heard from since the cutoff (left, or lost) that run nothing and that
--   at most p_batch jobs still name (kept ones: they keep its worker_name and lose its worker_id;
--   a worker more jobs name stays until they go, so that no batch rewrites many jobs), up to
--   p_batch expired dashboard sessions, and up to p_batch allocations (workers started on SLURM
--   or RUN:AI) that ended before the cutoff.
--
-- Answers the rows deleted by kind and where the batch stopped (next_at, next_id: the last job
-- it looked at; NULL when it found fewer than p_batch). One server prunes at a time (a
-- transaction-level advisory lock, taken without waiting): a call that finds it held answers
-- busy and deletes nothing. Rows are locked without waiting (SKIP LOCKED) and the rules checked
-- again once they are: a job locked by a concurrent change (a retry, a submission that depends on
-- it, a new member of its group) is left for a later round.
--
-- p_dry_run deletes nothing, locks nothing and counts what the same batch would delete; a group
-- counts on the page that holds the last of its members, workers and sessions on the last page
-- (every worker not heard from that runs nothing: how many jobs will still name it is not known
-- before they go).
CREATE OR REPLACE FUNCTION wn_prune(p_older_than double precision, p_project bigint, p_batch integer,
                                    p_dry_run boolean, p_after_at timestamptz, p_after_id bigint)
RETURNS TABLE (busy boolean, jobs bigint, events bigint, logs bigint, artifacts bigint,
               dependencies bigint, workers bigint, sessions bigint, groups bigint,
               allocations bigint, next_at timestamptz, next_id bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_cutoff timestamptz := now() - make_interval(secs => p_older_than);
    v_after_at timestamptz := coalesce(p_after_at, '-infinity');
    v_after_id bigint := coalesce(p_after_id, 0);
    v_page bigint[];
    v_ids bigint[];
    v_groups bigint[];
    v_found integer := 0;
    v_last_at timestamptz;
    v_last_id bigint;
    v_next_at timestamptz;
    v_next_id bigint;
    v_jobs bigint := 0;
    v_events bigint := 0;
    v_logs bigint := 0;
    v_artifacts bigint := 0;
    v_deps bigint := 0;
    v_workers bigint := 0;
    v_sessions bigint := 0;
    v_emptied bigint := 0;
    v_allocs bigint := 0;
BEGIN
    IF NOT p_dry_run AND NOT pg_try_advisory_xact_lock(hashtext('whatsnext.retention')) THEN
        RETURN QUERY SELECT true, 0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint,
                            0::bigint, 0::bigint, 0::bigint, p_after_at, p_after_id;
        RETURN;
    END IF;

    -- The page: the next jobs retention may delete, in the order they finished.
    SELECT array_agg(p.id ORDER BY p.finished_at, p.id), count(*),
           (array_agg(p.finished_at ORDER BY p.finished_at DESC, p.id DESC))[1],
           (array_agg(p.id ORDER BY p.finished_at DESC, p.id DESC))[1]
      INTO v_page, v_found, v_last_at, v_last_id
      FROM (SELECT p.id, p.finished_at FROM wn_prunable(v_cutoff, p_project) p
             WHERE (p.finished_at, p.id) > (v_after_at, v_after_id)
             ORDER BY p.finished_at, p.id
             LIMIT p_batch) p;
    IF v_found = p_batch THEN
        v_next_at := v_last_at;
        v_next_id := v_last_id;
    END IF;

    IF p_dry_run THEN
        v_ids := coalesce(v_page, '{}');
        SELECT count(*) INTO v_events FROM job_events e WHERE e.job_id = ANY (v_ids);
        SELECT count(*) INTO v_logs FROM job_logs l WHERE l.job_id = ANY (v_ids);
        SELECT count(*) INTO v_artifacts FROM artifacts a WHERE a.job_id = ANY (v_ids);
        SELECT count(*) INTO v_deps FROM job_dependencies d
         WHERE d.job_id = ANY (v_ids) OR d.depends_on = ANY (v_ids);
        -- Groups whose members all go, the last of them on this page: every other member went on
        -- an earlier page.
        SELECT count(*) INTO v_emptied
          FROM (SELECT DISTINCT j.group_id FROM jobs j
                 WHERE j.id = ANY (v_ids) AND j.group_id IS NOT NULL) g
         WHERE NOT EXISTS (SELECT 1 FROM jobs m
                            WHERE m.group_id = g.group_id
                              AND NOT (m.id = ANY (v_ids))
                              AND ((m.finished_at, m.id) > (v_after_at, v_after_id) IS NOT FALSE
                                   OR NOT EXISTS (SELECT 1 FROM wn_prunable(v_cutoff, p_project) p
                                                   WHERE p.id = m.id)));
        v_jobs := v_found;
    ELSE
        IF v_page IS NOT NULL THEN
            -- Lock the page's jobs (those another transaction holds are left for later) ...
            SELECT array_agg(l.id) INTO v_ids
              FROM (SELECT j.id FROM jobs j WHERE j.id = ANY (v_page) ORDER BY j.id
                       FOR UPDATE OF j SKIP LOCKED) l;
        END IF;
        IF v_ids IS NOT NULL THEN
            -- ... and their groups, against new members until this transaction ends (a group a
            -- submission holds now is left for later) ...
            SELECT array_agg(g.id) INTO v_groups
              FROM (SELECT g.id FROM job_groups g
                     WHERE g.id IN (SELECT j.group_id FROM jobs j WHERE j.id = ANY (v_ids))
                     ORDER BY g.id
                     FOR UPDATE SKIP LOCKED) g;
            -- ... then check the rules again on what is committed now that they are locked: a job
            -- that came to depend on one meanwhile, or a member that joined a group, keeps it (the
            -- page's range bounds the scan).
            SELECT array_agg(p.id ORDER BY p.id) INTO v_ids
              FROM wn_prunable(v_cutoff, p_project) p
             WHERE (p.finished_at, p.id) > (v_after_at, v_after_id)
               AND (p.finished_at, p.id) <= (v_last_at, v_last_id)
               AND p.id = ANY (v_ids) AND (p.group_id IS NULL OR p.group_id = ANY (v_groups));
        END IF;
        IF v_ids IS NOT NULL THEN
            DELETE FROM job_events e WHERE e.job_id = ANY (v_ids);
            GET DIAGNOSTICS v_events = ROW_COUNT;
            DELETE FROM job_logs l WHERE l.job_id = ANY (v_ids);
            GET DIAGNOSTICS v_logs = ROW_COUNT;
            DELETE FROM artifacts a WHERE a.job_id = ANY (v_ids);
            GET DIAGNOSTICS v_artifacts = ROW_COUNT;
            DELETE FROM job_dependencies d WHERE d.job_id = ANY (v_ids) OR d.depends_on = ANY (v_ids);
            GET DIAGNOSTICS v_deps = ROW_COUNT;
            DELETE FROM jobs j WHERE j.id = ANY (v_ids);
            GET DIAGNOSTICS v_jobs = ROW_COUNT;
            IF v_groups IS NOT NULL THEN
                DELETE FROM job_groups g
                 WHERE g.id = ANY (v_groups) AND NOT EXISTS (SELECT 1 FROM jobs m WHERE m.group_id = g.id);
                GET DIAGNOSTICS v_emptied = ROW_COUNT;
            END IF;
        END IF;
    END IF;

    IF p_project IS NULL AND v_found < p_batch THEN
        IF p_dry_run THEN
            SELECT count(*) INTO v_workers FROM workers w
             WHERE w.last_seen < v_cutoff
               AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.worker_id = w.id AND j.status = 'RUNNING');
            SELECT count(*) INTO v_sessions FROM ui_sessions s WHERE s.expires_at <= now();
            SELECT count(*) INTO v_allocs FROM allocations a
             WHERE a.state IN ('FINISHED', 'FAILED', 'CANCELLED')
               AND coalesce(a.ended_at, a.updated_at) < v_cutoff;
        ELSE
            -- A worker that comes back after its row went registers again (its heartbeat is
            -- answered 404).
            DELETE FROM workers w
             WHERE w.id IN (SELECT o.id FROM workers o
                             WHERE o.last_seen < v_cutoff
                               AND NOT EXISTS (SELECT 1 FROM jobs j
                                                WHERE j.worker_id = o.id AND j.status = 'RUNNING')
                               AND (SELECT count(*) FROM (SELECT 1 FROM jobs j WHERE j.worker_id = o.id
                                                           LIMIT p_batch + 1) n) <= p_batch
                             ORDER BY o.last_seen
                             LIMIT p_batch
                             FOR UPDATE SKIP LOCKED);
            GET DIAGNOSTICS v_workers = ROW_COUNT;
            DELETE FROM ui_sessions s
             WHERE s.hash IN (SELECT o.hash FROM ui_sessions o
                               WHERE o.expires_at <= now()
                               ORDER BY o.expires_at
                               LIMIT p_batch
                               FOR UPDATE SKIP LOCKED);
            GET DIAGNOSTICS v_sessions = ROW_COUNT;
            DELETE FROM allocations a
             WHERE a.id IN (SELECT o.id FROM allocations o
                             WHERE o.state IN ('FINISHED', 'FAILED', 'CANCELLED')
                               AND coalesce(o.ended_at, o.updated_at) < v_cutoff
                             ORDER BY o.id
                             LIMIT p_batch
                             FOR UPDATE SKIP LOCKED);
            GET DIAGNOSTICS v_allocs = ROW_COUNT;
        END IF;
    END IF;

    RETURN QUERY SELECT false, v_jobs, v_events, v_logs, v_artifacts, v_deps, v_workers, v_sessions,
                        v_emptied, v_allocs, v_next_at, v_next_id;
END $$;
