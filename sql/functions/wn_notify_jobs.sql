-- The one place that builds a job notification (channel whatsnext_jobs), sent at commit. The
-- payload is a JSON object:
--   {"p": project id, "n": count, "t": tag, "c": cpus, "g": gpus, "tags": [...] or null}
-- n > 0: that many jobs became eligible; the smallest of them needs c CPUs and g GPUs, and every
--        one of them needs `tags` (null: no tag every one of them needs). A server wakes only
--        waiting claims that could take such a job.
-- n = 0: a job of the project finished (workers waiting to exit when it is done look again).
-- PostgreSQL folds identical notifications of one transaction into one, so a notification that
-- counts jobs carries a tag that keeps it distinct from the others of its transaction.
-- The server parses it in one place (whatsnext/api/server/notify.py, JobsEvent).
CREATE OR REPLACE FUNCTION wn_notify_jobs(p_project bigint, p_count integer, p_tag text DEFAULT NULL,
                                          p_cpu integer DEFAULT 0, p_gpus integer DEFAULT 0,
                                          p_tags text[] DEFAULT NULL)
RETURNS void
LANGUAGE sql AS $$
    SELECT pg_notify('whatsnext_jobs', json_build_object(
        'p', p_project, 'n', greatest(p_count, 0), 't', p_tag, 'c', coalesce(p_cpu, 0),
        'g', coalesce(p_gpus, 0), 'tags', CASE WHEN cardinality(p_tags) > 0 THEN p_tags END)::text);
$$;
