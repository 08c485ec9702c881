-- A value recorded p_age seconds ago, as it counts now under the pool's half-life p_half_life
-- (seconds): halved every half-life.
CREATE OR REPLACE FUNCTION wn_decayed(p_value double precision, p_age double precision,
                                      p_half_life double precision) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT p_value * power(2.0::double precision, -greatest(p_age, 0) / p_half_life);
$$;
