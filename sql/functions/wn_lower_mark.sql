-- Keeps claim_marks true (see migration 0019): when a statement makes a job eligible (PENDING with
-- every dependency met: a new job, a job put back, a job whose last dependency was met, a job
-- whose priority went up) at a place in hand-out order (p_rank = -priority, p_id) before its
-- project's mark, the mark moves back to it, so that no claim starts after it. Called by the
-- triggers on jobs: wn_mark_inserted (new jobs), wn_mark_updated (jobs that became eligible).
-- The shared lock, held until commit, keeps wn_advance_marks from moving the mark of the project
-- meanwhile; taken before the mark is read, it waits for a sweep already under way, whose new
-- mark the UPDATE then sees (a sweep's snapshot may have missed the statement's jobs).
CREATE OR REPLACE FUNCTION wn_lower_mark(p_project bigint, p_rank bigint, p_id bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(hashtext('whatsnext.claim_marks'),
                                         (p_project % 2147483647)::integer);
    UPDATE claim_marks m SET rank = p_rank, id = p_id
     WHERE m.project_id = p_project AND (m.rank, m.id) > (p_rank, p_id);
END $$;
