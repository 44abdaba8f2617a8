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


-- genq.secure_objects as in 0011, with set_user_limits and get_user_limits added to the
-- backend's functions (the only change).
-- genq.secure_objects: creates (or checks) this database's three roles, gives every object
-- of schema genq to the owner role and grants the backend and worker roles exactly what
-- they use. `p_prefix` NULL or '' keeps the stored prefix ('genq' on a first run). Runs as
-- the migrating role (not SECURITY DEFINER); idempotent; returns the prefix in use.
CREATE OR REPLACE FUNCTION genq.secure_objects(p_prefix text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_stored  text;
    v_prefix  text;
    v_owner   text;
    v_backend text;
    v_worker  text;
    v_claim   text := 'genq: roles of database ' || current_database();
    v_role    text;
    v_other   text;
    r         record;
BEGIN
    -- One run at a time per database (daemons may migrate concurrently).
    PERFORM pg_advisory_xact_lock(hashtextextended('genq.secure_objects', 0));

    SELECT c.prefix INTO v_stored FROM genq.role_config c;
    v_prefix := coalesce(nullif(p_prefix, ''), v_stored, 'genq');
    IF v_prefix !~ '^[a-z][a-z0-9_]{0,39}$' THEN
        RAISE EXCEPTION 'genq: role prefix % is invalid: expected a lowercase letter, then up to 39 lowercase letters, digits or underscores',
            quote_literal(v_prefix) USING ERRCODE = '22023';
    END IF;
    v_owner := v_prefix || '_owner';
    v_backend := v_prefix || '_backend';
    v_worker := v_prefix || '_worker';

    -- Claims: a role set another (existing) database uses is refused.
    FOREACH v_role IN ARRAY ARRAY[v_owner, v_backend, v_worker] LOOP
        SELECT substr(d.description, length('genq: roles of database ') + 1) INTO v_other
          FROM pg_catalog.pg_roles r2
          JOIN pg_catalog.pg_shdescription d
            ON d.objoid = r2.oid AND d.classoid = 'pg_catalog.pg_authid'::regclass
         WHERE r2.rolname = v_role AND d.description LIKE 'genq: roles of database %';
        IF v_other IS NOT NULL AND v_other <> current_database()
           AND EXISTS (SELECT 1 FROM pg_catalog.pg_database WHERE datname = v_other) THEN
            RAISE EXCEPTION 'genq: role % serves the genq of database %; each database needs its own roles: set database.role_prefix (GENQ_DATABASE_ROLE_PREFIX) for this one', v_role, v_other
                USING ERRCODE = '42710',
                      HINT = 'Set database.role_prefix (GENQ_DATABASE_ROLE_PREFIX) to a prefix for this database, e.g. '
                             || quote_literal(left(regexp_replace(lower(current_database()), '[^a-z0-9_]', '_', 'g'), 30) || '_genq')
                             || ', and migrate again.';
        END IF;
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = v_role AND (rolsuper OR rolbypassrls
                   OR (v_role = v_owner AND (rolcanlogin OR rolcreaterole OR rolcreatedb OR rolreplication)))) THEN
            RAISE EXCEPTION 'genq: role % exists with powers it must not have (superuser, bypassrls, or for the owner: login, createrole, createdb, replication)', v_role
                USING ERRCODE = '42501',
                      HINT = 'Remove them (ALTER ROLE ... NOSUPERUSER NOLOGIN ...) or choose another database.role_prefix.';
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = v_role) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS', v_role);
            EXCEPTION
                WHEN duplicate_object OR unique_violation THEN
                    NULL; -- a concurrent migration created it a moment ago
                WHEN insufficient_privilege THEN
                    RAISE EXCEPTION 'genq: role % does not exist and the migrating role % may not create roles: a superuser must create it (docs/credits.md, Who migrates)', v_role, current_user
                        USING ERRCODE = '42501',
                              HINT = format('Have a superuser run: CREATE ROLE %I NOLOGIN; GRANT %I TO %I; then migrate again (docs/credits.md).',
                                            v_role, v_role, current_user);
            END;
        END IF;
        IF v_other IS DISTINCT FROM current_database() THEN
            BEGIN
                EXECUTE format('COMMENT ON ROLE %I IS %L', v_role, v_claim);
            EXCEPTION WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'genq: the migrating role % may not claim role % for this database: a superuser must run COMMENT ON ROLE %I IS %L', current_user, v_role, v_role, v_claim
                    USING ERRCODE = '42501';
            END;
        END IF;
    END LOOP;

    -- The migrating role hands objects to the owner role, so it must be a member.
    IF NOT pg_has_role(current_user, v_owner, 'MEMBER') THEN
        BEGIN
            EXECUTE format('GRANT %I TO %I', v_owner, current_user);
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE EXCEPTION 'genq: the migrating role % must be a member of %: a superuser must run GRANT %I TO %I', current_user, v_owner, v_owner, current_user
                USING ERRCODE = '42501';
        END;
    END IF;

    -- Roles of a previous prefix, and 0003's role names when they are no longer ours, keep
    -- no rights here.
    FOREACH v_role IN ARRAY ARRAY[v_stored || '_owner', v_stored || '_backend', v_stored || '_worker',
                                 'genq_backend', 'genq_worker'] LOOP
        CONTINUE WHEN v_role IS NULL OR v_role IN (v_owner, v_backend, v_worker)
                   OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = v_role);
        EXECUTE format('REVOKE ALL ON SCHEMA genq FROM %I', v_role);
        EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA genq FROM %I', v_role);
        EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA genq FROM %I', v_role);
        EXECUTE format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA genq FROM %I', v_role);
        IF v_stored IS NOT NULL AND v_role LIKE v_stored || '\_%' THEN
            EXECUTE format('COMMENT ON ROLE %I IS NULL', v_role);
        END IF;
    END LOOP;

    -- Ownership. Sequences and indexes follow their tables.
    EXECUTE format('GRANT USAGE, CREATE ON SCHEMA genq TO %I', v_owner);
    FOR r IN
        SELECT c.relname, c.relkind FROM pg_catalog.pg_class c
         WHERE c.relnamespace = 'genq'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
           AND c.relowner <> v_owner::regrole
           AND NOT (c.relkind = 'S' AND EXISTS (
                   SELECT 1 FROM pg_catalog.pg_depend d
                    WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
                      AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.deptype IN ('a', 'i')))
    LOOP
        EXECUTE format('ALTER %s genq.%I OWNER TO %I',
                       CASE r.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                      WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
                       r.relname, v_owner);
    END LOOP;
    FOR r IN
        SELECT p.oid::regprocedure AS sig, p.prokind FROM pg_catalog.pg_proc p
         WHERE p.pronamespace = 'genq'::regnamespace AND p.proowner <> v_owner::regrole
    LOOP
        EXECUTE format('ALTER %s %s OWNER TO %I',
                       CASE r.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END,
                       r.sig, v_owner);
    END LOOP;
    FOR r IN
        SELECT t.oid::regtype AS typ FROM pg_catalog.pg_type t
         WHERE t.typnamespace = 'genq'::regnamespace AND t.typowner <> v_owner::regrole
           AND t.typtype IN ('e', 'd', 'r', 'm') AND t.typelem = 0
    LOOP
        EXECUTE format('ALTER %s %s OWNER TO %I',
                       CASE WHEN (SELECT typtype FROM pg_catalog.pg_type WHERE oid = r.typ) = 'd'
                            THEN 'DOMAIN' ELSE 'TYPE' END, r.typ, v_owner);
    END LOOP;

    -- Exact rights. Everything is revoked from PUBLIC and the two roles, then granted again.
    REVOKE ALL ON SCHEMA genq FROM PUBLIC;
    REVOKE ALL ON ALL TABLES IN SCHEMA genq FROM PUBLIC;
    REVOKE ALL ON ALL SEQUENCES IN SCHEMA genq FROM PUBLIC;
    REVOKE ALL ON ALL FUNCTIONS IN SCHEMA genq FROM PUBLIC;
    FOREACH v_role IN ARRAY ARRAY[v_backend, v_worker] LOOP
        EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA genq FROM %I', v_role);
        EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA genq FROM %I', v_role);
        EXECUTE format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA genq FROM %I', v_role);
        EXECUTE format('GRANT USAGE ON SCHEMA genq TO %I', v_role);
    END LOOP;

    -- The backend: the SQL API and the tables README documents for reading results.
    FOR r IN
        SELECT p.oid::regprocedure AS sig FROM pg_catalog.pg_proc p
         WHERE p.pronamespace = 'genq'::regnamespace
           AND p.proname IN ('enqueue', 'enqueue_many', 'enqueue_generation', 'grant_credits',
                             'credit_balance', 'cancel_generation', 'record_invoice', 'register_blob',
                             'request_erasure', 'request_export', 'delete_generation',
                             'set_user_limits', 'get_user_limits')
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', r.sig, v_backend);
    END LOOP;
    FOR r IN
        SELECT c.relname FROM pg_catalog.pg_class c
         WHERE c.relnamespace = 'genq'::regnamespace
           AND c.relname IN ('generations', 'payments', 'blobs', 'erasure_requests', 'export_requests')
    LOOP
        EXECUTE format('GRANT SELECT ON genq.%I TO %I', r.relname, v_backend);
    END LOOP;

    -- The worker: every function but this one, and per table what the daemon's SQL (and
    -- the non-SECURITY DEFINER functions and triggers it runs) does. A table this list does
    -- not know yet (a later migration's) gets SELECT, INSERT, UPDATE, DELETE.
    FOR r IN
        SELECT p.oid::regprocedure AS sig FROM pg_catalog.pg_proc p
         WHERE p.pronamespace = 'genq'::regnamespace AND p.proname <> 'secure_objects'
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', r.sig, v_worker);
    END LOOP;
    FOR r IN
        SELECT c.relname, c.relkind, w.privileges FROM pg_catalog.pg_class c
          LEFT JOIN (VALUES
              ('_sqlx_migrations', 'SELECT'),
              ('queues', 'SELECT, INSERT, UPDATE'),
              ('jobs', 'SELECT, UPDATE, DELETE'),
              ('periodic_slots', 'SELECT, INSERT, UPDATE'),
              ('stats_meta', 'SELECT, UPDATE'),
              ('queue_stats', 'SELECT, INSERT, DELETE'),
              ('enqueued_totals', 'SELECT, INSERT, UPDATE'),
              ('accounts', 'SELECT'),
              ('ledger', 'SELECT'),
              ('generations', 'SELECT, UPDATE'),
              ('provider_gates', 'SELECT, INSERT, UPDATE'),
              ('provider_calls', 'SELECT, INSERT, DELETE'),
              ('webhook_events', 'SELECT, INSERT, UPDATE'),
              ('payments', 'SELECT, UPDATE'),
              ('retention_policies', 'SELECT'),
              ('blobs', 'SELECT, UPDATE'),
              ('deletion_log', 'SELECT, INSERT'),
              ('erasure_requests', 'SELECT, UPDATE'),
              ('export_requests', 'SELECT, UPDATE'),
              ('role_config', NULL)
          ) AS w (relname, privileges) ON w.relname = c.relname
         WHERE c.relnamespace = 'genq'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
    LOOP
        CONTINUE WHEN r.relname = 'role_config';
        EXECUTE format('GRANT %s ON genq.%I TO %I',
                       CASE WHEN r.relkind IN ('v', 'm') THEN 'SELECT'
                            ELSE coalesce(r.privileges, 'SELECT, INSERT, UPDATE, DELETE') END,
                       r.relname, v_worker);
    END LOOP;
    EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA genq TO %I', v_worker);

    INSERT INTO genq.role_config (prefix) VALUES (v_prefix)
    ON CONFLICT (singleton) DO UPDATE SET prefix = EXCLUDED.prefix, updated_at = now()
     WHERE genq.role_config.prefix <> EXCLUDED.prefix;
    RETURN v_prefix;
END
$fn$;

-- Rights for everything above (genq migrate runs this after every migration too).
SELECT genq.secure_objects(current_setting('genq.role_prefix', true));
