-- A claim for one project: the jobs wn_claim_pick chooses, handed out by wn_claim_hand (see both).
-- A claim for several projects is wn_claim_pool.
CREATE OR REPLACE FUNCTION wn_claim(
    p_project text, p_worker_id bigint, p_worker_name text,
    p_free_cpu integer, p_free_acc integer, p_total_cpu integer, p_total_acc integer,
    p_tags text[], p_max_jobs integer, p_lease double precision, p_starve double precision,
    p_tasks text[] DEFAULT NULL, p_with_command boolean DEFAULT false, p_actor text DEFAULT NULL,
    p_time_left double precision DEFAULT NULL
) RETURNS TABLE (
    id bigint, name text, task text, parameters jsonb, priority integer, attempt integer,
    required_cpu integer, required_accelerators integer, timeout double precision,
    max_attempts integer, max_lost integer, lease_expires_at timestamptz, inputs text[],
    outputs text[], eligible_at timestamptz, previous_external_ids text[], command text,
    defaults jsonb, shell boolean, project text, checkpoint text, resume boolean,
    upstream jsonb
)
LANGUAGE plpgsql AS $$
DECLARE
    v_picked bigint[] := wn_claim_pick(wn_project_id(p_project), p_free_cpu, p_free_acc, p_total_cpu,
                                       p_total_acc, p_tags, p_max_jobs, p_starve, p_tasks,
                                       p_with_command, true, p_time_left);
BEGIN
    IF cardinality(v_picked) = 0 THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT * FROM wn_claim_hand(v_picked, p_worker_id, p_worker_name, p_lease, p_actor);
END $$;
