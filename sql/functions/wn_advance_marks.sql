-- Moves each project's claim mark (see migration 0019) forward to its first job in hand-out order
-- that is PENDING with every dependency met (handed out or not, due or delayed, locked by a claim
-- or not), or past the end when there is none (the next job made eligible moves it back, see
-- wn_lower_mark). Reads from the current mark: a few index entries, not every job claimed
-- since a transaction began to hold back the horizon.
-- A project whose jobs a transaction is making eligible (its shared lock) is skipped this time;
-- its exclusive lock, held until this commits, holds back the next such statement, which then
-- sees the new mark. Returns how many marks moved.
-- p_from_start: read from the start of hand-out order instead, and move a mark back as well when a
-- job that can be handed out lies before it (the server does so every tenth sweep: a mark that a
-- missed statement left too far forward strands nothing for longer than that).
CREATE OR REPLACE FUNCTION wn_advance_marks(p_from_start boolean DEFAULT false) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_project bigint;
    v_mark record;
    v_rank bigint;
    v_id bigint;
    v_moved integer := 0;
BEGIN
    FOR v_project IN SELECT p.id FROM projects p ORDER BY p.id LOOP
        CONTINUE WHEN NOT pg_try_advisory_xact_lock(hashtext('whatsnext.claim_marks'),
                                                    (v_project % 2147483647)::integer);
        -- Statements after the lock: every job made eligible before it is visible.
        SELECT m.rank, m.id INTO v_mark FROM claim_marks m WHERE m.project_id = v_project;
        SELECT -(j.priority::bigint), j.id INTO v_rank, v_id
          FROM jobs j
         WHERE j.project_id = v_project AND j.status = 'PENDING' AND j.unmet_deps = 0
           AND (-(j.priority::bigint), j.id)
               >= (coalesce(CASE WHEN p_from_start THEN NULL ELSE v_mark.rank END, -9223372036854775807),
                   coalesce(CASE WHEN p_from_start THEN NULL ELSE v_mark.id END, 0))
         ORDER BY -(j.priority::bigint), j.id
         LIMIT 1;
        IF NOT FOUND THEN
            v_rank := 9223372036854775807;
            v_id := 9223372036854775807;
        END IF;
        CONTINUE WHEN v_mark.id IS NOT NULL AND (v_mark.rank, v_mark.id) = (v_rank, v_id);
        INSERT INTO claim_marks (project_id, rank, id) VALUES (v_project, v_rank, v_id)
            ON CONFLICT (project_id) DO UPDATE SET rank = EXCLUDED.rank, id = EXCLUDED.id;
        v_moved := v_moved + 1;
    END LOOP;
    RETURN v_moved;
END $$;
