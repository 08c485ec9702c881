-- A claim for several projects (p_projects; NULL: every project): fair share between them, then
-- wn_claim_pick within each (priority, then FIFO; quotas; concurrency keys), wn_claim_hand for
-- each job taken. Rows in hand-out order.
-- Fair share: each job goes to the project, among those with a job this worker can take, whose
-- usage of the pool (wn_project_usage: decayed with the pool's half-life, running attempts
-- included) is the lowest against its share. Within one claim, each job taken adds to its
-- project's usage what an attempt of that project recently cost (its usage / attempts), so one
-- claim of many jobs is shared as well; equal standings go to the project holding the least of
-- the pool now against its share, then to the oldest project. Work-conserving: a project without
-- a job the worker can take is passed over, whatever its standing. Running jobs are never
-- preempted.
-- Quota locks: the first project with a quota this claim meets is waited for; later ones are
-- only tried (a claim waits for at most one lock, so claims never wait on each other in a circle).
CREATE OR REPLACE FUNCTION wn_claim_pool(
    p_projects bigint[], p_worker_id bigint, p_worker_name text,
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
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_ids bigint[];
    v_share double precision[];
    v_usage double precision[];
    v_cost double precision[];
    v_tie double precision[];
    v_quota boolean[];
    v_active boolean[];
    v_n integer;
    v_live integer;
    v_cpu integer := p_free_cpu;
    v_acc integer := p_free_acc;
    v_left integer := p_max_jobs;
    v_locked boolean := false;
    v_best integer;
    v_key double precision;
    v_best_key double precision;
    v_new bigint[];
    v_took record;
BEGIN
    IF p_max_jobs <= 0 OR v_cpu < 0 OR v_acc < 0 THEN
        RETURN;
    END IF;
    SELECT array_agg(u.project_id ORDER BY u.project_id), array_agg(u.share ORDER BY u.project_id),
           array_agg(u.usage ORDER BY u.project_id),
           array_agg(CASE WHEN u.attempts >= 1 THEN u.usage / u.attempts ELSE 0 END ORDER BY u.project_id),
           array_agg(u.running_weight ORDER BY u.project_id),
           array_agg(p.max_gpus IS NOT NULL OR p.max_cpus IS NOT NULL OR p.max_running IS NOT NULL
                     ORDER BY u.project_id)
      INTO v_ids, v_share, v_usage, v_cost, v_tie, v_quota
      FROM wn_project_usage(ARRAY(
               SELECT p.id FROM projects p LEFT JOIN claim_marks m ON m.project_id = p.id
                WHERE (p_projects IS NULL OR p.id = ANY (p_projects))
                  AND EXISTS (SELECT 1 FROM jobs j
                               WHERE j.project_id = p.id AND j.status = 'PENDING'
                                 AND j.unmet_deps = 0
                                 AND (-(j.priority::bigint), j.id)
                                     >= (coalesce(m.rank, -9223372036854775807), coalesce(m.id, 0))
                                 AND j.available_at <= now()
                                 AND j.required_cpu <= p_total_cpu
                                 AND j.required_accelerators <= p_total_acc
                                 AND (p_time_left IS NULL OR j.timeout IS NULL
                                      OR j.timeout <= p_time_left)))) u
      JOIN projects p ON p.id = u.project_id;
    v_n := coalesce(cardinality(v_ids), 0);
    v_live := v_n;
    v_active := array_fill(true, ARRAY[v_n]);
    WHILE v_left > 0 AND v_live > 0 LOOP
        v_best := NULL;
        FOR i IN 1 .. v_n LOOP
            CONTINUE WHEN NOT v_active[i];
            v_key := v_usage[i] / v_share[i];
            IF v_best IS NULL OR v_key < v_best_key
               OR (v_key = v_best_key AND v_tie[i] / v_share[i] < v_tie[v_best] / v_share[v_best]) THEN
                v_best := i;
                v_best_key := v_key;
            END IF;
        END LOOP;
        v_new := wn_claim_pick(v_ids[v_best], v_cpu, v_acc, p_total_cpu, p_total_acc, p_tags,
                               CASE WHEN v_live = 1 THEN v_left ELSE 1 END, p_starve, p_tasks,
                               p_with_command, NOT v_locked, p_time_left);
        v_locked := v_locked OR v_quota[v_best];
        IF cardinality(v_new) = 0 THEN
            v_active[v_best] := false;
            v_live := v_live - 1;
            CONTINUE;
        END IF;
        SELECT count(*)::integer AS n, sum(j.required_cpu)::integer AS cpus,
               sum(j.required_accelerators)::integer AS gpus,
               sum(wn_usage_weight(j.required_cpu, j.required_accelerators)) AS weight
          INTO v_took FROM jobs j WHERE j.id = ANY (v_new);
        v_cpu := v_cpu - v_took.cpus;
        v_acc := v_acc - v_took.gpus;
        v_left := v_left - v_took.n;
        v_usage[v_best] := v_usage[v_best] + v_took.n * v_cost[v_best];
        v_tie[v_best] := v_tie[v_best] + v_took.weight;
        RETURN QUERY SELECT * FROM wn_claim_hand(v_new, p_worker_id, p_worker_name, p_lease, p_actor);
    END LOOP;
END $$;
