-- What keeps one dependency from ever being met (wn_settle_downstream): for a dependency with
-- condition p_condition on the upstream job (p_id, p_name, p_status, p_blocked_by, p_error), the
-- job to name as the cause (root) and the reason, or NULLs while it can still be met. A success
-- dependency on a blocked job takes that job's cause and reason. One row, always (a plain SELECT:
-- the planner inlines it).
CREATE OR REPLACE FUNCTION wn_dependency_bar(p_condition text, p_id bigint, p_name text, p_status text,
                                             p_blocked_by bigint, p_error text)
RETURNS TABLE (root bigint, reason text)
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN NOT barred THEN NULL
                WHEN p_status = 'BLOCKED' AND p_condition = 'success' THEN coalesce(p_blocked_by, p_id)
                ELSE p_id END,
           CASE WHEN NOT barred THEN NULL
                WHEN p_status = 'BLOCKED' AND p_condition = 'success'
                  THEN coalesce(p_error, format('dependency %s (%s) is blocked', p_id, p_name))
                WHEN p_status = 'BLOCKED'
                  THEN format('dependency %s (%s) is blocked: it will not run, so it cannot fail', p_id, p_name)
                WHEN p_condition = 'failure'
                  THEN format('dependency %s (%s) completed: this job runs only if it fails', p_id, p_name)
                WHEN p_status = 'FAILED' THEN format('dependency %s (%s) failed', p_id, p_name)
                ELSE format('dependency %s (%s) was cancelled', p_id, p_name) END
      FROM (SELECT CASE p_condition
                     WHEN 'success' THEN p_status IN ('FAILED', 'CANCELLED', 'BLOCKED')
                     WHEN 'failure' THEN p_status IN ('COMPLETED', 'BLOCKED')
                     ELSE false END AS barred) x
$$;
