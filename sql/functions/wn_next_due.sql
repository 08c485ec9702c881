-- When the next delayed job of a project (pending, every dependency met, not handed out before
-- available_at) becomes eligible; NULL when none waits. A claim that finds nothing asks this
-- before it waits (project_resolve, sharing_next_available). Read from the project's claim mark
-- (see wn_claim_pick): a delayed job holds the mark before it, and the index entries of the jobs
-- handed out before the mark, which a transaction holding back the horizon keeps, are not read.
CREATE OR REPLACE FUNCTION wn_next_due(p_project bigint) RETURNS timestamptz
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_rank bigint;
    v_id bigint;
BEGIN
    SELECT m.rank, m.id INTO v_rank, v_id FROM claim_marks m WHERE m.project_id = p_project;
    RETURN (SELECT min(j.available_at) FROM jobs j
             WHERE j.project_id = p_project AND j.status = 'PENDING' AND j.unmet_deps = 0
               -- no mark: from the start
               AND (-(j.priority::bigint), j.id) >= (coalesce(v_rank, -9223372036854775807), coalesce(v_id, 0))
               AND j.available_at > now());
END $$;
