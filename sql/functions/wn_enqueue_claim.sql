-- The claim wn_enqueue runs for a claim waiting on the submitting server: wn_claim (or, for a claim
-- of several projects, wn_claim_pool) with its arguments from a JSON object (project_id or
-- projects, worker_id, worker_name, free_cpu, free_acc, total_cpu, total_acc, tags, max_jobs,
-- lease, starve, tasks, with_command, actor, time_left), its rows as a JSON array in hand-out order; NULL when
-- there is no such claim, it waits for other projects than p_project, or it took nothing.
-- A claim of several projects has "pool": true and "projects": their ids (null: every project).
CREATE OR REPLACE FUNCTION wn_enqueue_claim(p_project bigint, p_claim jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_rows jsonb;
    v_pool boolean := coalesce((p_claim->>'pool')::boolean, false);
    v_projects bigint[];
    v_tags text[];
    v_tasks text[];
BEGIN
    IF p_claim IS NULL THEN
        RETURN NULL;
    END IF;
    IF v_pool THEN
        IF jsonb_typeof(p_claim->'projects') = 'array' THEN
            v_projects := ARRAY(SELECT jsonb_array_elements_text(p_claim->'projects')::bigint);
            IF NOT p_project = ANY (v_projects) THEN
                RETURN NULL;
            END IF;
        END IF;
    ELSIF (p_claim->>'project_id')::bigint IS DISTINCT FROM p_project THEN
        RETURN NULL;
    END IF;
    v_tags := ARRAY(SELECT jsonb_array_elements_text(p_claim->'tags'));
    IF jsonb_typeof(p_claim->'tasks') = 'array' THEN
        v_tasks := ARRAY(SELECT jsonb_array_elements_text(p_claim->'tasks'));
    END IF;
    IF v_pool THEN
        SELECT jsonb_agg(to_jsonb(c)) INTO v_rows
          FROM wn_claim_pool(v_projects, (p_claim->>'worker_id')::bigint, p_claim->>'worker_name',
                             (p_claim->>'free_cpu')::integer, (p_claim->>'free_acc')::integer,
                             (p_claim->>'total_cpu')::integer, (p_claim->>'total_acc')::integer,
                             v_tags, (p_claim->>'max_jobs')::integer,
                             (p_claim->>'lease')::double precision,
                             (p_claim->>'starve')::double precision, v_tasks,
                             coalesce((p_claim->>'with_command')::boolean, false),
                             p_claim->>'actor', (p_claim->>'time_left')::double precision) c;
    ELSE
        SELECT jsonb_agg(to_jsonb(c) ORDER BY c.priority DESC, c.id) INTO v_rows
          FROM wn_claim(p_project::text, (p_claim->>'worker_id')::bigint, p_claim->>'worker_name',
                        (p_claim->>'free_cpu')::integer, (p_claim->>'free_acc')::integer,
                        (p_claim->>'total_cpu')::integer, (p_claim->>'total_acc')::integer,
                        v_tags, (p_claim->>'max_jobs')::integer,
                        (p_claim->>'lease')::double precision,
                        (p_claim->>'starve')::double precision, v_tasks,
                        coalesce((p_claim->>'with_command')::boolean, false), p_claim->>'actor',
                        (p_claim->>'time_left')::double precision) c;
    END IF;
    RETURN v_rows;
END $$;
