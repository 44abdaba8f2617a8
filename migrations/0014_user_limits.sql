-- Plans and quotas: per-user limits the backend sets (genq.set_user_limits), defaults the
-- daemon writes from `[users]` at start, and the quota check in genq.enqueue_generation
-- (SQLSTATE GQ429, nothing written). Why: docs/fairness.md (Plans and quotas) and
-- docs/decisions.md (36, 37).
--
-- A limit is an integer >= 1 or NULL (unlimited). A user's plan row overrides the defaults
-- field by field: a NULL field follows the default. genq.set_user_limits replaces the whole
-- plan (each call says every override it wants), so an omitted argument resets that field.

-- The enqueue defaults, one row: NULL = unlimited. Written by the daemon's start hook
-- (`[users]`). The default max_in_flight is the generation queue's per-key limit
-- (genq.queues.key_max_active, 0013), which the daemon writes from `[users] max_in_flight`.
CREATE TABLE genq.user_limit_defaults (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    max_queued    integer CHECK (max_queued >= 1),
    per_minute    integer CHECK (per_minute >= 1),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
INSERT INTO genq.user_limit_defaults (singleton) VALUES (true);

-- Per-user overrides (a plan). NULL fields follow the defaults; weight NULL means 1.
CREATE TABLE genq.user_limits (
    user_id       text PRIMARY KEY CHECK (length(user_id) > 0),
    max_in_flight integer CHECK (max_in_flight >= 1),
    max_queued    integer CHECK (max_queued >= 1),
    per_minute    integer CHECK (per_minute >= 1),
    weight        real CHECK (weight > 0),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- The two counts enqueue_generation makes, each over an index and bounded by its limit:
-- generations not yet submitted, and generations created in the last minute.
CREATE INDEX generations_waiting_user_idx ON genq.generations (user_id)
    WHERE state IN ('queued', 'submitting');
CREATE INDEX generations_user_created_idx ON genq.generations (user_id, created_at);

-- A limit argument: NULL, or 1..1,000,000.
CREATE FUNCTION genq.check_limit(p_fn text, p_name text, p_value integer) RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_value IS NOT NULL AND p_value NOT BETWEEN 1 AND 1000000 THEN
        RAISE EXCEPTION '%: % must be between 1 and 1000000, or NULL for the default (got %)', p_fn, p_name, p_value
            USING ERRCODE = '22023';
    END IF;
END
$$;

-- genq.apply_user_limit_defaults: the daemon's start hook writes `[users]` max_queued and
-- per_minute here (NULL = unlimited), so the SQL functions read the same defaults on every
-- node.
CREATE FUNCTION genq.apply_user_limit_defaults(max_queued integer, per_minute integer)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    PERFORM genq.check_limit('genq.apply_user_limit_defaults', 'max_queued', apply_user_limit_defaults.max_queued);
    PERFORM genq.check_limit('genq.apply_user_limit_defaults', 'per_minute', apply_user_limit_defaults.per_minute);
    UPDATE genq.user_limit_defaults d
       SET max_queued = apply_user_limit_defaults.max_queued,
           per_minute = apply_user_limit_defaults.per_minute,
           updated_at = now()
     WHERE d.singleton
       AND (d.max_queued, d.per_minute) IS DISTINCT FROM
           (apply_user_limit_defaults.max_queued, apply_user_limit_defaults.per_minute);
END
$$;

-- genq.get_user_limits: a user's effective limits (NULL = unlimited) and, for each, whether
-- it is the default. A user without a plan gets the defaults (all *_default true).
CREATE FUNCTION genq.get_user_limits(user_id text)
RETURNS TABLE (max_in_flight integer, max_in_flight_default boolean,
               max_queued integer, max_queued_default boolean,
               per_minute integer, per_minute_default boolean,
               weight real, weight_default boolean)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    PERFORM genq.check_user_id('genq.get_user_limits', get_user_limits.user_id);
    RETURN QUERY
    SELECT coalesce(u.max_in_flight, (SELECT q.key_max_active FROM genq.queues q WHERE q.name = 'generation')),
           u.max_in_flight IS NULL,
           coalesce(u.max_queued, d.max_queued), u.max_queued IS NULL,
           coalesce(u.per_minute, d.per_minute), u.per_minute IS NULL,
           coalesce(u.weight, 1)::real, u.weight IS NULL
      FROM genq.user_limit_defaults d
      LEFT JOIN genq.user_limits u ON u.user_id = get_user_limits.user_id
     WHERE d.singleton;
END
$$;

-- genq.sync_user_fair_key: mirrors a user's plan into the claim's per-key limits (queue
-- 'generation', key = user id), so the claim enforces max_in_flight and weight.
CREATE FUNCTION genq.sync_user_fair_key(p_user text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_weight real;
    v_max    integer;
BEGIN
    SELECT u.weight, u.max_in_flight INTO v_weight, v_max
      FROM genq.user_limits u WHERE u.user_id = p_user;
    -- NULL weight: 1; NULL max_in_flight: the generation queue's default (`[users]`).
    PERFORM genq.set_fair_key('generation', p_user, v_weight, v_max);
END
$$;

-- genq.set_user_limits: sets a user's plan. Each call replaces the whole plan: a NULL (or
-- omitted) argument makes that field follow the default, so set_user_limits(user) alone
-- resets the user to the defaults. Limits are 1..1,000,000 and weight 0.01..1000. Read the
-- effective limits back with genq.get_user_limits. Work already enqueued is not touched;
-- the next enqueue and the next claim see the new plan.
CREATE FUNCTION genq.set_user_limits(user_id text, max_in_flight integer DEFAULT NULL,
                                     max_queued integer DEFAULT NULL, per_minute integer DEFAULT NULL,
                                     weight real DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    PERFORM genq.check_user_id('genq.set_user_limits', set_user_limits.user_id);
    PERFORM genq.check_limit('genq.set_user_limits', 'max_in_flight', set_user_limits.max_in_flight);
    PERFORM genq.check_limit('genq.set_user_limits', 'max_queued', set_user_limits.max_queued);
    PERFORM genq.check_limit('genq.set_user_limits', 'per_minute', set_user_limits.per_minute);
    IF set_user_limits.weight IS NOT NULL AND NOT (set_user_limits.weight BETWEEN 0.01 AND 1000) THEN
        RAISE EXCEPTION 'genq.set_user_limits: weight must be between 0.01 and 1000, or NULL for the default 1 (got %)',
            set_user_limits.weight USING ERRCODE = '22023';
    END IF;

    IF num_nulls(set_user_limits.max_in_flight, set_user_limits.max_queued,
                 set_user_limits.per_minute, set_user_limits.weight) = 4 THEN
        DELETE FROM genq.user_limits u WHERE u.user_id = set_user_limits.user_id;
    ELSE
        INSERT INTO genq.user_limits AS u (user_id, max_in_flight, max_queued, per_minute, weight)
        VALUES (set_user_limits.user_id, set_user_limits.max_in_flight, set_user_limits.max_queued,
                set_user_limits.per_minute, set_user_limits.weight)
        ON CONFLICT (user_id) DO UPDATE
           SET max_in_flight = EXCLUDED.max_in_flight, max_queued = EXCLUDED.max_queued,
               per_minute = EXCLUDED.per_minute, weight = EXCLUDED.weight, updated_at = now();
    END IF;
    PERFORM genq.sync_user_fair_key(set_user_limits.user_id);
END
$$;

-- genq.check_user_quota: raises GQ429 when `p_user` may not enqueue one more generation:
-- max_queued generations already wait (queued or submitting, not yet at the provider), or
-- per_minute were enqueued in the last minute. Called by enqueue_generation after it locked
-- the account row, so concurrent enqueues of one user are counted one after the other.
-- Each count stops at its limit (LIMIT), so a deep backlog costs no more than the limit.
CREATE FUNCTION genq.check_user_quota(p_user text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_max_queued integer;
    v_per_minute integer;
    v_count      bigint;
BEGIN
    SELECT coalesce(u.max_queued, d.max_queued), coalesce(u.per_minute, d.per_minute)
      INTO v_max_queued, v_per_minute
      FROM genq.user_limit_defaults d
      LEFT JOIN genq.user_limits u ON u.user_id = p_user
     WHERE d.singleton;

    IF v_max_queued IS NOT NULL THEN
        SELECT count(*) INTO v_count FROM (
            SELECT 1 FROM genq.generations g
             WHERE g.user_id = p_user AND g.state IN ('queued', 'submitting')
             LIMIT v_max_queued) w;
        IF v_count >= v_max_queued THEN
            SELECT count(*) INTO v_count FROM genq.generations g
             WHERE g.user_id = p_user AND g.state IN ('queued', 'submitting');
            RAISE EXCEPTION 'too many queued generations: % waiting, at most % allowed', v_count, v_max_queued
                USING ERRCODE = 'GQ429',
                      DETAIL = jsonb_build_object('limit', 'max_queued', 'max', v_max_queued, 'current', v_count)::text,
                      HINT = 'Nothing was held or enqueued. Retry once some of this user''s generations were submitted.';
        END IF;
    END IF;

    IF v_per_minute IS NOT NULL THEN
        SELECT count(*) INTO v_count FROM (
            SELECT 1 FROM genq.generations g
             WHERE g.user_id = p_user AND g.created_at > now() - interval '1 minute'
             LIMIT v_per_minute) m;
        IF v_count >= v_per_minute THEN
            SELECT count(*) INTO v_count FROM genq.generations g
             WHERE g.user_id = p_user AND g.created_at > now() - interval '1 minute';
            RAISE EXCEPTION 'too many generations per minute: % in the last minute, at most % allowed', v_count, v_per_minute
                USING ERRCODE = 'GQ429',
                      DETAIL = jsonb_build_object('limit', 'per_minute', 'max', v_per_minute, 'current', v_count)::text,
                      HINT = 'Nothing was held or enqueued. Retry in a minute.';
        END IF;
    END IF;
END
$$;

-- genq.enqueue_generation: as in 0013, plus the quota check (GQ429) after the account lock
-- and the idempotency lookup (a repeated call still returns its generation), before credits.
CREATE OR REPLACE FUNCTION genq.enqueue_generation(
    user_id         text,
    provider        text,
    model           text,
    input           jsonb,
    cost            bigint,
    idempotency_key text
) RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_id        uuid;
    v_available bigint;
BEGIN
    PERFORM genq.check_user_id('genq.enqueue_generation', enqueue_generation.user_id);
    IF enqueue_generation.provider IS NULL
       OR enqueue_generation.provider NOT IN ('fal', 'byteplus', 'replicate') THEN
        RAISE EXCEPTION 'genq.enqueue_generation: unknown provider %: expected one of fal, byteplus, replicate',
            coalesce(quote_literal(enqueue_generation.provider), 'NULL') USING ERRCODE = '22023';
    END IF;
    IF enqueue_generation.model IS NULL OR length(enqueue_generation.model) = 0 THEN
        RAISE EXCEPTION 'genq.enqueue_generation: model must be a non-empty string' USING ERRCODE = '22023';
    END IF;
    IF enqueue_generation.input IS NULL OR jsonb_typeof(enqueue_generation.input) = 'null' THEN
        RAISE EXCEPTION 'genq.enqueue_generation: input must be the model input as JSON, not null'
            USING ERRCODE = '22023';
    END IF;
    IF enqueue_generation.cost IS NULL OR enqueue_generation.cost < 0 THEN
        RAISE EXCEPTION 'genq.enqueue_generation: cost must be zero or more credits (got %)',
            coalesce(enqueue_generation.cost::text, 'NULL') USING ERRCODE = '22023';
    END IF;
    PERFORM genq.check_length('genq.enqueue_generation', 'model', enqueue_generation.model, 255);
    PERFORM genq.check_json_size('genq.enqueue_generation', 'input', enqueue_generation.input);
    PERFORM genq.check_credits('genq.enqueue_generation', 'cost', enqueue_generation.cost);
    PERFORM genq.check_length('genq.enqueue_generation', 'idempotency_key', enqueue_generation.idempotency_key, 255);
    IF enqueue_generation.idempotency_key IS NULL OR length(enqueue_generation.idempotency_key) = 0 THEN
        RAISE EXCEPTION 'genq.enqueue_generation: idempotency_key must be a non-empty string'
            USING ERRCODE = '22023';
    END IF;

    -- Lock the user's balance first: concurrent calls for one user wait here, and each then
    -- sees what the previous one committed (a generation with the same key, the new balance).
    v_available := genq.lock_account(enqueue_generation.user_id);

    SELECT g.id INTO v_id FROM genq.generations g
     WHERE g.user_id = enqueue_generation.user_id
       AND g.idempotency_key = enqueue_generation.idempotency_key;
    IF v_id IS NOT NULL THEN
        RETURN v_id;
    END IF;

    -- Plans (0014): over the user's queued or per-minute quota, GQ429 and nothing written.
    PERFORM genq.check_user_quota(enqueue_generation.user_id);

    IF v_available < enqueue_generation.cost THEN
        RAISE EXCEPTION 'insufficient credits: needed %, available %', enqueue_generation.cost, v_available
            USING ERRCODE = 'GQ402',
                  DETAIL = jsonb_build_object('needed', enqueue_generation.cost, 'available', v_available)::text,
                  HINT = 'Nothing was held or enqueued. Add credits (genq.grant_credits), then retry with the same idempotency key.';
    END IF;

    INSERT INTO genq.generations (user_id, provider, model, input, cost, idempotency_key)
    VALUES (enqueue_generation.user_id, enqueue_generation.provider, enqueue_generation.model,
            enqueue_generation.input, enqueue_generation.cost, enqueue_generation.idempotency_key)
    RETURNING id INTO v_id;

    INSERT INTO genq.ledger (user_id, kind, amount, generation_id)
    VALUES (enqueue_generation.user_id, 'hold', enqueue_generation.cost, v_id);
    UPDATE genq.accounts a
       SET available = a.available - enqueue_generation.cost,
           held = a.held + enqueue_generation.cost,
           updated_at = now()
     WHERE a.user_id = enqueue_generation.user_id;

    PERFORM genq.enqueue('generation.submit', jsonb_build_object('generation_id', v_id),
                         queue => 'generation', max_attempts => 10,
                         unique_key => 'generation.submit:' || v_id::text,
                         fairness_key => enqueue_generation.user_id,
                         limit_group => 'render:' || enqueue_generation.provider);
    RETURN v_id;
END
$$;


-- set_user_limits and get_user_limits join the backend's functions in 0015's
-- genq.secure_objects (one copy of that function body per schema change, not two).

-- Rights for everything above (genq migrate runs this after every migration too).
SELECT genq.secure_objects(current_setting('genq.role_prefix', true));
