-- Announce the jobs among p_ids that are now eligible (pending, dependencies met; a retry delay
-- may still hold them back: a woken claim learns when they become eligible), summarised for the
-- servers' waiting claims: how many, the smallest needs, the tags all of them need.
-- Returns how many it announced.
CREATE OR REPLACE FUNCTION wn_notify_eligible(p_project bigint, p_ids bigint[], p_tag text)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    s record;
BEGIN
    SELECT count(*) AS n, min(j.required_cpu) AS cpu, min(j.required_accelerators) AS gpus,
           CASE WHEN min(j.required_tags) = max(j.required_tags) THEN min(j.required_tags) END AS tags
      INTO s
      FROM jobs j
     WHERE j.id = ANY (p_ids) AND j.project_id = p_project AND j.status = 'PENDING' AND j.unmet_deps = 0;
    IF s.n > 0 THEN
        PERFORM wn_notify_jobs(p_project, s.n::integer, p_tag, s.cpu, s.gpus, s.tags);
    END IF;
    RETURN s.n;
END $$;
