-- Appends for several jobs in one round trip (p_batches: JSON array of {id, attempt, lines}), in
-- the order given (a worker sends them sorted by job id, so that concurrent batches lock alike).
CREATE OR REPLACE FUNCTION wn_append_logs_many(p_batches jsonb, p_keep integer)
RETURNS TABLE (id bigint, code integer, status text, message text, appended integer, dropped bigint)
LANGUAGE sql AS $$
    SELECT r.id, o.code, o.status, o.message, o.appended, o.dropped
      FROM jsonb_array_elements(p_batches) WITH ORDINALITY AS e(doc, ord)
     CROSS JOIN LATERAL jsonb_to_record(e.doc) AS r(id bigint, attempt integer, lines text[])
     CROSS JOIN LATERAL wn_append_logs(r.id, r.attempt, r.lines, p_keep) o
     ORDER BY e.ord;
$$;
