-- What one running attempt weighs in its project's usage of the pool, per second: its GPUs, or
-- its CPUs divided by 8 when that is more (a CPU-only job of 8 CPUs weighs as much as one GPU).
CREATE OR REPLACE FUNCTION wn_usage_weight(p_cpu integer, p_gpus integer) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT greatest(coalesce(p_gpus, 0)::double precision, coalesce(p_cpu, 0) / 8.0);
$$;
