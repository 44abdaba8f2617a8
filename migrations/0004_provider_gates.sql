-- Fleet-wide protection of AI providers: an in-flight cap, a token-bucket rate limit and a
-- circuit breaker per provider, shared by every daemon through one row per provider.
-- In-flight calls are leases (rows with an expiry), so a daemon that dies mid-call cannot
-- leak a slot for longer than the lease.

CREATE TABLE genq.provider_gates (
    provider             text PRIMARY KEY,
    tokens               double precision NOT NULL,
    refilled_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    consecutive_failures integer NOT NULL DEFAULT 0,
    open_until           timestamptz,
    updated_at           timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE genq.provider_calls (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider   text NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX provider_calls_provider_idx ON genq.provider_calls (provider, expires_at);

-- Asks for one call to `p_provider`. Granted: a slot id to release afterwards. Refused:
-- how long to wait and why (circuit open, in-flight cap, rate limit).
CREATE FUNCTION genq.provider_acquire(
    p_provider text, p_max_in_flight integer, p_rate_per_sec float8, p_burst integer,
    p_lease_secs float8)
RETURNS TABLE (granted boolean, slot bigint, wait_secs float8, reason text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g        genq.provider_gates;
    v_tokens float8;
    v_now    timestamptz := clock_timestamp();
    v_busy   bigint;
    v_slot   bigint;
BEGIN
    INSERT INTO genq.provider_gates (provider, tokens) VALUES (p_provider, p_burst)
        ON CONFLICT (provider) DO NOTHING;
    SELECT * INTO g FROM genq.provider_gates WHERE provider = p_provider FOR UPDATE;

    IF g.open_until IS NOT NULL AND g.open_until > v_now THEN
        RETURN QUERY SELECT false, NULL::bigint,
            extract(epoch FROM g.open_until - v_now)::float8, 'circuit open'::text;
        RETURN;
    END IF;

    DELETE FROM genq.provider_calls WHERE provider = p_provider AND expires_at < v_now;
    SELECT count(*) INTO v_busy FROM genq.provider_calls WHERE provider = p_provider;
    IF v_busy >= p_max_in_flight THEN
        RETURN QUERY SELECT false, NULL::bigint, 0.2::float8, 'in-flight cap'::text;
        RETURN;
    END IF;

    v_tokens := least(p_burst::float8,
                      g.tokens + p_rate_per_sec * extract(epoch FROM v_now - g.refilled_at));
    IF v_tokens < 1 THEN
        UPDATE genq.provider_gates SET tokens = v_tokens, refilled_at = v_now, updated_at = now()
         WHERE provider = p_provider;
        RETURN QUERY SELECT false, NULL::bigint,
            ((1 - v_tokens) / greatest(p_rate_per_sec, 0.001))::float8, 'rate limit'::text;
        RETURN;
    END IF;

    UPDATE genq.provider_gates SET tokens = v_tokens - 1, refilled_at = v_now, updated_at = now()
     WHERE provider = p_provider;
    INSERT INTO genq.provider_calls (provider, expires_at)
    VALUES (p_provider, v_now + make_interval(secs => p_lease_secs))
    RETURNING id INTO v_slot;
    RETURN QUERY SELECT true, v_slot, 0::float8, NULL::text;
END
$$;

-- Ends a call. 'failure' (5xx, timeouts, connection errors, ambiguous submits) counts
-- toward opening the circuit for p_cooldown_secs after p_threshold in a row; 'success'
-- (including a definitive refusal such as a validation error: the provider is up) closes
-- it; 'neutral' (throttled with a Retry-After) changes nothing. After the cooldown, calls
-- are admitted again and the first success closes the circuit. Returns whether it is open.
CREATE FUNCTION genq.provider_release(
    p_provider text, p_slot bigint, p_outcome text, p_threshold integer, p_cooldown_secs float8)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_open boolean;
BEGIN
    IF p_slot IS NOT NULL THEN
        DELETE FROM genq.provider_calls WHERE id = p_slot;
    END IF;
    IF p_outcome = 'success' THEN
        UPDATE genq.provider_gates SET consecutive_failures = 0, open_until = NULL, updated_at = now()
         WHERE provider = p_provider AND (consecutive_failures <> 0 OR open_until IS NOT NULL);
    ELSIF p_outcome = 'failure' THEN
        UPDATE genq.provider_gates
           SET consecutive_failures = consecutive_failures + 1,
               open_until = CASE WHEN consecutive_failures + 1 >= p_threshold
                                 THEN clock_timestamp() + make_interval(secs => p_cooldown_secs)
                                 ELSE open_until END,
               updated_at = now()
         WHERE provider = p_provider;
    END IF;
    SELECT open_until IS NOT NULL AND open_until > clock_timestamp() INTO v_open
      FROM genq.provider_gates WHERE provider = p_provider;
    RETURN coalesce(v_open, false);
END
$$;

REVOKE EXECUTE ON FUNCTION genq.provider_acquire(text, integer, float8, integer, float8) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION genq.provider_release(text, bigint, text, integer, float8) FROM PUBLIC;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'genq_worker') THEN
        GRANT ALL ON genq.provider_gates, genq.provider_calls TO genq_worker;
        GRANT EXECUTE ON FUNCTION genq.provider_acquire(text, integer, float8, integer, float8),
                                  genq.provider_release(text, bigint, text, integer, float8)
            TO genq_worker;
    END IF;
END
$$;
