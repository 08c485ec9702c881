-- Resolve a project by id (all ASCII digits) or by name; WN404 naming `project` when unknown.
CREATE OR REPLACE FUNCTION wn_project_id(p_key text) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_id bigint;
BEGIN
    IF p_key ~ '^[0-9]{1,18}$' THEN
        SELECT id INTO v_id FROM projects WHERE id = p_key::bigint;
    ELSE
        SELECT id INTO v_id FROM projects WHERE name = p_key;
    END IF;
    IF v_id IS NULL THEN
        RAISE EXCEPTION 'project % not found', p_key USING ERRCODE = 'WN404', DETAIL = 'project';
    END IF;
    RETURN v_id;
END $$;
