-- Updated jobs and the claim marks (wn_lower_mark): once per row that became eligible (put back,
-- its last dependency met) or moved up (its priority raised). The trigger's WHEN leaves out every
-- other update (a claim's, a report's, a heartbeat's) without calling anything: a statement-level
-- trigger would run at each of them.
CREATE OR REPLACE FUNCTION wn_mark_updated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM wn_lower_mark(NEW.project_id, -(NEW.priority::bigint), NEW.id);
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS jobs_mark_update ON jobs;
CREATE TRIGGER jobs_mark_update AFTER UPDATE ON jobs FOR EACH ROW
    WHEN (NEW.status = 'PENDING' AND NEW.unmet_deps = 0
          AND (OLD.status <> 'PENDING' OR OLD.unmet_deps <> 0 OR NEW.priority > OLD.priority))
    EXECUTE FUNCTION wn_mark_updated();
