-- The claim wn_enqueue runs for a claim waiting on the submitting server: wn_claim with its
-- arguments from a JSON object (project_id, worker_id, worker_name, free_cpu, free_acc, total_cpu,
-- total_acc, tags, max_jobs, lease, starve, tasks, with_command, actor), its rows as a JSON array in
-- hand-out order; NULL when there is no such claim, it waits for another project than p_project,
-- or it took nothing.
CREATE OR REPLACE FUNCTION wn_enqueue_claim(p_project bigint, p_claim jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_rows jsonb;
BEGIN
    IF p_claim IS NULL OR (p_claim->>'project_id')::bigint IS DISTINCT FROM p_project THEN
        RETURN NULL;
    END IF;
    SELECT jsonb_agg(to_jsonb(c) ORDER BY c.priority DESC, c.id) INTO v_rows
      FROM wn_claim(p_project::text, (p_claim->>'worker_id')::bigint, p_claim->>'worker_name',
                    (p_claim->>'free_cpu')::integer, (p_claim->>'free_acc')::integer,
                    (p_claim->>'total_cpu')::integer, (p_claim->>'total_acc')::integer,
                    ARRAY(SELECT jsonb_array_elements_text(p_claim->'tags')),
                    (p_claim->>'max_jobs')::integer, (p_claim->>'lease')::double precision,
                    (p_claim->>'starve')::double precision,
                    CASE WHEN jsonb_typeof(p_claim->'tasks') = 'array'
                         THEN ARRAY(SELECT jsonb_array_elements_text(p_claim->'tasks')) END,
                    coalesce((p_claim->>'with_command')::boolean, false), p_claim->>'actor') c;
    RETURN v_rows;
END $$;
