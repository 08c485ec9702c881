-- Retention: delete one batch of what is older than p_older_than seconds, in the caller's
-- transaction (keep it short: call again for the next batch, each call its own transaction).
--
-- * Jobs finished (COMPLETED, FAILED, CANCELLED) before the cutoff, oldest first, at most p_batch,
--   of project p_project (NULL: every project), with their history (job_events), output lines
--   (job_logs), artifact records (artifacts, checkpoints included) and dependency rows either way;
--   never one wn_prunable keeps (an unfinished job depends on it, or its group has an unfinished
--   member).
-- * The groups those jobs leave empty.
-- * When p_project is NULL: up to p_batch worker rows not heard from since the cutoff (left, or
--   lost) that no remaining job refers to, and up to p_batch expired dashboard sessions.
--
-- One server prunes at a time (a transaction-level advisory lock, taken without waiting): a call
-- that finds it held answers busy and deletes nothing. p_dry_run deletes nothing and counts
-- everything the batches would delete now, all of them together, without the lock.
-- Rows are locked without waiting (SKIP LOCKED) and the rules checked again once they are: a job
-- locked by a concurrent change (a retry, a submission that depends on it, a new member of its
-- group) is left for a later batch.
CREATE OR REPLACE FUNCTION wn_prune(p_older_than double precision, p_project bigint, p_batch integer,
                                    p_dry_run boolean)
RETURNS TABLE (busy boolean, jobs bigint, events bigint, logs bigint, artifacts bigint,
               dependencies bigint, workers bigint, sessions bigint, groups bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_cutoff timestamptz := now() - make_interval(secs => p_older_than);
    v_ids bigint[];
    v_groups bigint[];
    v_jobs bigint := 0;
    v_events bigint := 0;
    v_logs bigint := 0;
    v_artifacts bigint := 0;
    v_deps bigint := 0;
    v_workers bigint := 0;
    v_sessions bigint := 0;
    v_emptied bigint := 0;
BEGIN
    IF p_dry_run THEN
        RETURN QUERY
        WITH c AS MATERIALIZED (SELECT p.id, p.group_id FROM wn_prunable(v_cutoff, p_project) p)
        SELECT false,
               (SELECT count(*) FROM c),
               (SELECT count(*) FROM job_events e WHERE e.job_id IN (SELECT c.id FROM c)),
               (SELECT count(*) FROM job_logs l WHERE l.job_id IN (SELECT c.id FROM c)),
               (SELECT count(*) FROM artifacts a WHERE a.job_id IN (SELECT c.id FROM c)),
               (SELECT count(*) FROM job_dependencies d
                 WHERE d.job_id IN (SELECT c.id FROM c) OR d.depends_on IN (SELECT c.id FROM c)),
               CASE WHEN p_project IS NULL THEN
                   (SELECT count(*) FROM workers w
                     WHERE w.last_seen < v_cutoff
                       AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.worker_id = w.id
                                          AND j.id NOT IN (SELECT c.id FROM c)))
               ELSE 0 END,
               CASE WHEN p_project IS NULL THEN
                   (SELECT count(*) FROM ui_sessions s WHERE s.expires_at <= now())
               ELSE 0 END,
               (SELECT count(*) FROM (SELECT DISTINCT c.group_id FROM c WHERE c.group_id IS NOT NULL) g
                 WHERE NOT EXISTS (SELECT 1 FROM jobs m WHERE m.group_id = g.group_id
                                      AND m.id NOT IN (SELECT c.id FROM c)));
        RETURN;
    END IF;

    IF NOT pg_try_advisory_xact_lock(hashtext('whatsnext.retention')) THEN
        RETURN QUERY SELECT true, 0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint,
                            0::bigint, 0::bigint;
        RETURN;
    END IF;

    -- The oldest finished jobs retention may delete, locked (those another transaction holds are
    -- left for later) ...
    SELECT array_agg(l.id) INTO v_ids
      FROM (SELECT j.id FROM jobs j
             WHERE j.id IN (SELECT p.id FROM wn_prunable(v_cutoff, p_project) p
                             ORDER BY p.finished_at LIMIT p_batch)
               FOR UPDATE OF j SKIP LOCKED) l;
    IF v_ids IS NOT NULL THEN
        -- ... with their groups, locked against new members until this transaction ends (a group
        -- a submission holds now is left for later) ...
        SELECT array_agg(g.id) INTO v_groups
          FROM (SELECT g.id FROM job_groups g
                 WHERE g.id IN (SELECT j.group_id FROM jobs j WHERE j.id = ANY (v_ids))
                 ORDER BY g.id
                 FOR UPDATE SKIP LOCKED) g;
        -- ... and the rules checked again on what is committed now that they are locked: a job
        -- that came to depend on one meanwhile, or a member that joined a group, keeps it.
        SELECT array_agg(p.id ORDER BY p.id) INTO v_ids
          FROM wn_prunable(v_cutoff, p_project) p
         WHERE p.id = ANY (v_ids) AND (p.group_id IS NULL OR p.group_id = ANY (v_groups));
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

    IF p_project IS NULL THEN
        -- A worker that comes back after its row went registers again (its heartbeat is answered
        -- 404); no job refers to it, so no history loses its name.
        DELETE FROM workers w
         WHERE w.id IN (SELECT o.id FROM workers o
                         WHERE o.last_seen < v_cutoff
                           AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.worker_id = o.id)
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
    END IF;

    RETURN QUERY SELECT false, v_jobs, v_events, v_logs, v_artifacts, v_deps, v_workers, v_sessions,
                        v_emptied;
END $$;
