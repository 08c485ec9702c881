-- The usage of weight p_weight held for p_seconds up to now, as it counts now under the pool's
-- half-life p_half_life: the integral of w * 2^-((now - t) / half_life) dt over the span. For spans
-- short against the half-life, about p_weight * p_seconds.
CREATE OR REPLACE FUNCTION wn_decayed_span(p_weight double precision, p_seconds double precision,
                                           p_half_life double precision) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT p_weight * p_half_life / ln(2.0::double precision)
           * (1 - power(2.0::double precision, -greatest(p_seconds, 0) / p_half_life));
$$;
