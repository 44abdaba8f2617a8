-- Bulk enqueue by COPY (issue 17, decision 55).
--
-- A bound statement, however its values are shaped, is inserted row by row; COPY inserts
-- rows in pages (PostgreSQL's multi-insert), and with a client that streams while the
-- server writes it is the fastest way into a table. genq.jobs now takes COPY (and plain
-- INSERT) from the backend, for the columns a caller chooses and nothing else:
--
--     COPY genq.jobs (kind, payload, queue, run_at, priority, max_attempts, fairness_key,
--                     limit_group) FROM STDIN
--
-- Direct inserts keep the rules of genq.enqueue_many:
-- - validation: the table's CHECK constraints (kind not empty, max_attempts >= 1,
--   fairness_key and limit_group lengths, limit_group not empty) and, new here, a payload of
--   at most 1 MiB and a kind of at most 255 bytes. A bad row fails the statement and nothing is written.
-- - unique keys: not insertable directly (the column is not granted): a job with a unique
--   key goes through genq.enqueue or genq.enqueue_many, which skip held keys.
-- - what genq.enqueue_many does after its insert is done by genq.jobs_intake, a statement
--   trigger over the inserted rows: queue rows created, a fair queue's keyless jobs given
--   the empty key, its keys marked waiting (genq.mark_fair_keys, one statement for every
--   key), one NOTIFY per queue that got a job due now (delivered at commit).
--
-- The trigger fires only for inserts made by roles other than the owner of genq's objects:
-- the enqueue functions run as the owner (SECURITY DEFINER) and apply the rules themselves,
-- so a single genq.enqueue pays nothing for it (measured: 70 us per call either way; 175 us
-- if the trigger fired for them too). The owner's name is in the trigger's WHEN clause, so
-- genq.secure_objects (re)creates the trigger with the role prefix it applies; the column
-- grant to the backend is there too (both below).
--
-- genq.enqueue_many (arrays) marks the keys of its batch with genq.mark_fair_keys as well:
-- one statement for the batch instead of one genq.mark_fair_key call per key (20,000 keys
-- took 23 s that way).

-- New rows only (NOT VALID): existing rows came through functions that already checked it.
-- The kind's limit is 255 bytes in the enqueue functions (the older CHECK counts characters).
ALTER TABLE genq.jobs
    ADD CONSTRAINT jobs_payload_size_check CHECK (pg_column_size(payload) <= 1048576) NOT VALID,
    ADD CONSTRAINT jobs_kind_bytes_check CHECK (octet_length(kind) <= 255) NOT VALID;

-- genq.mark_fair_key for many keys at once: each (queue, key) of a fair queue that is not
-- waiting becomes waiting, a new key starts at its queue's clock, a returning one at
-- least there. Keys are locked in (queue, key) order, so two batches cannot deadlock, and
-- only KEY SHARE on keys already waiting (the claim updates those rows concurrently).
CREATE FUNCTION genq.mark_fair_keys(p_queues text[], p_keys text[]) RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH wanted AS (
        SELECT DISTINCT w.queue, w.key
          FROM unnest(p_queues, p_keys) AS w(queue, key)
         WHERE w.key <> '' AND w.queue IS NOT NULL
    ), present AS (
        SELECT k.queue, k.key, k.waiting
          FROM genq.fair_keys k JOIN wanted w ON (k.queue, k.key) = (w.queue, w.key)
         ORDER BY k.queue, k.key
           FOR KEY SHARE OF k
    ), added AS (
        INSERT INTO genq.fair_keys (queue, key, vtime, waiting)
        SELECT w.queue, w.key, q.fair_clock, true
          FROM wanted w JOIN genq.queues q ON q.name = w.queue
         WHERE NOT EXISTS (SELECT 1 FROM present p WHERE (p.queue, p.key) = (w.queue, w.key))
         ORDER BY w.queue, w.key
        ON CONFLICT (queue, key) DO NOTHING
    )
    UPDATE genq.fair_keys k
       SET waiting = true, vtime = greatest(k.vtime, q.fair_clock), updated_at = now()
      FROM present p JOIN genq.queues q ON q.name = p.queue
     WHERE (k.queue, k.key) = (p.queue, p.key) AND NOT p.waiting AND NOT k.waiting;
$$;

-- What genq.enqueue_many does after its insert, for rows inserted directly (COPY, INSERT).
-- Statement-level over the inserted rows: a COPY of 100,000 jobs runs it once. Created by
-- genq.secure_objects below, which knows the owner its WHEN clause leaves out.
CREATE FUNCTION genq.jobs_intake() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_queues text[];
    v_wake   text[];
    v_fair   text[];
    v_queue  text;
BEGIN
    SELECT array_agg(DISTINCT n.queue), array_agg(DISTINCT n.queue) FILTER (WHERE n.run_at <= now())
      INTO v_queues, v_wake
      FROM new_jobs n;
    IF v_queues IS NULL THEN
        RETURN NULL;
    END IF;
    INSERT INTO genq.queues (name) SELECT unnest(v_queues) ON CONFLICT (name) DO NOTHING;
    SELECT array_agg(q.name) INTO v_fair FROM genq.queues q WHERE q.name = ANY (v_queues) AND q.fair;
    IF v_fair IS NOT NULL THEN
        -- A fair queue's job without a key is in the keyless bucket (''), as genq.enqueue
        -- puts it; rows probed by id.
        UPDATE genq.jobs j SET fairness_key = ''
         WHERE j.id = ANY (ARRAY(SELECT n.id FROM new_jobs n
                                  WHERE n.queue = ANY (v_fair) AND n.fairness_key IS NULL));
        PERFORM genq.mark_fair_keys(array_agg(n.queue), array_agg(n.fairness_key))
           FROM new_jobs n
          WHERE n.queue = ANY (v_fair) AND n.fairness_key <> '';
    END IF;
    IF v_wake IS NOT NULL THEN
        FOREACH v_queue IN ARRAY v_wake LOOP
            PERFORM pg_notify('genq_jobs', v_queue);
        END LOOP;
    END IF;
    RETURN NULL;
END
$$;

-- 0018's array form, marking its batch's keys with genq.mark_fair_keys.
CREATE OR REPLACE FUNCTION genq.enqueue_many(
    kind         text[],
    payload      jsonb[],
    queue        text[],
    run_at       timestamptz[],
    priority     integer[],
    max_attempts integer[],
    unique_key   text[],
    fairness_key text[],
    limit_group  text[]
) RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_n            integer := coalesce(cardinality(enqueue_many.kind), 0);
    v_count        bigint;
    v_queues       text[];
    v_fair_queues  text[];
    v_wake         text[];
    v_keys         jsonb[];
    v_queue        text;
    v_bad_kind     boolean;
    v_bad_attempts boolean;
    v_big_payload  boolean;
    v_long_key     boolean;
    v_bad_group    boolean;
    v_has_unique   boolean;
BEGIN
    IF kind IS NULL THEN
        RAISE EXCEPTION 'genq.enqueue_many: expected an array of kinds' USING ERRCODE = '22023';
    END IF;
    IF (payload IS NOT NULL AND cardinality(payload) <> v_n)
       OR (queue IS NOT NULL AND cardinality(queue) <> v_n)
       OR (run_at IS NOT NULL AND cardinality(run_at) <> v_n)
       OR (priority IS NOT NULL AND cardinality(priority) <> v_n)
       OR (max_attempts IS NOT NULL AND cardinality(max_attempts) <> v_n)
       OR (unique_key IS NOT NULL AND cardinality(unique_key) <> v_n)
       OR (fairness_key IS NOT NULL AND cardinality(fairness_key) <> v_n)
       OR (limit_group IS NOT NULL AND cardinality(limit_group) <> v_n) THEN
        RAISE EXCEPTION 'genq.enqueue_many: every array needs one element per kind (or NULL)'
            USING ERRCODE = '22023';
    END IF;
    IF v_n = 0 THEN
        RETURN 0;
    END IF;

    -- One pass over the input for every check, the batch's queues, and whether any job
    -- has a unique key. NULL elements take the defaults of genq.enqueue.
    SELECT bool_or(coalesce(t.k, '') = ''),
           bool_or(t.a < 1),
           bool_or(pg_column_size(t.p) > 1048576),
           bool_or(octet_length(t.u) > 255 OR octet_length(t.k) > 255
                   OR octet_length(t.f) > 255 OR octet_length(t.g) > 255),
           bool_or(t.g = ''),
           bool_or(t.u IS NOT NULL),
           array_agg(DISTINCT coalesce(t.q, 'default'))
      INTO v_bad_kind, v_bad_attempts, v_big_payload, v_long_key, v_bad_group, v_has_unique,
           v_queues
      FROM unnest(enqueue_many.kind, enqueue_many.payload, enqueue_many.queue,
                  enqueue_many.max_attempts, enqueue_many.unique_key, enqueue_many.fairness_key,
                  enqueue_many.limit_group) AS t(k, p, q, a, u, f, g);
    IF v_bad_kind THEN
        RAISE EXCEPTION 'genq.enqueue_many: every job needs a non-empty "kind"' USING ERRCODE = '22023';
    END IF;
    IF v_bad_attempts THEN
        RAISE EXCEPTION 'genq.enqueue_many: max_attempts must be at least 1' USING ERRCODE = '22023';
    END IF;
    IF v_big_payload THEN
        RAISE EXCEPTION 'genq.enqueue_many: a payload is over 1 MiB (1048576 bytes)' USING ERRCODE = '54000';
    END IF;
    IF v_long_key THEN
        RAISE EXCEPTION 'genq.enqueue_many: a kind, unique_key, fairness_key or limit_group is over 255 bytes'
            USING ERRCODE = '22023';
    END IF;
    IF v_bad_group THEN
        RAISE EXCEPTION 'genq.enqueue_many: limit_group must be null or a non-empty string' USING ERRCODE = '22023';
    END IF;

    INSERT INTO genq.queues (name) SELECT unnest(v_queues) ON CONFLICT (name) DO NOTHING;
    SELECT coalesce(array_agg(q.name), '{}') INTO v_fair_queues
      FROM genq.queues q WHERE q.name = ANY (v_queues) AND q.fair;

    IF v_has_unique THEN
        -- Keys can conflict: insert what is free, and wake and mark from what was inserted.
        WITH inserted AS (
            INSERT INTO genq.jobs AS j (kind, payload, queue, run_at, priority, max_attempts,
                                        unique_key, fairness_key, limit_group)
            SELECT t.k, coalesce(t.p, '{}'::jsonb), coalesce(t.q, 'default'), coalesce(t.r, now()),
                   coalesce(t.pr, 0), coalesce(t.a, 20), t.u,
                   CASE WHEN coalesce(t.q, 'default') = ANY (v_fair_queues)
                        THEN coalesce(t.f, '') ELSE t.f END,
                   t.g
              FROM unnest(enqueue_many.kind, enqueue_many.payload, enqueue_many.queue,
                          enqueue_many.run_at, enqueue_many.priority, enqueue_many.max_attempts,
                          enqueue_many.unique_key, enqueue_many.fairness_key,
                          enqueue_many.limit_group) AS t(k, p, q, r, pr, a, u, f, g)
            ON CONFLICT (unique_key)
                WHERE unique_key IS NOT NULL AND state IN ('available', 'running', 'retryable')
                DO NOTHING
            RETURNING j.queue, j.run_at, j.fairness_key
        )
        SELECT count(*), array_agg(DISTINCT i.queue) FILTER (WHERE i.run_at <= now()),
               array_agg(DISTINCT jsonb_build_array(i.queue, i.fairness_key))
                   FILTER (WHERE i.fairness_key <> '' AND i.queue = ANY (v_fair_queues))
          INTO v_count, v_wake, v_keys
          FROM inserted i;
    ELSE
        -- Nothing can conflict: every job is inserted, so the input says what to wake and mark.
        INSERT INTO genq.jobs (kind, payload, queue, run_at, priority, max_attempts, unique_key,
                               fairness_key, limit_group)
        SELECT t.k, coalesce(t.p, '{}'::jsonb), coalesce(t.q, 'default'), coalesce(t.r, now()),
               coalesce(t.pr, 0), coalesce(t.a, 20), NULL,
               CASE WHEN coalesce(t.q, 'default') = ANY (v_fair_queues)
                    THEN coalesce(t.f, '') ELSE t.f END,
               t.g
          FROM unnest(enqueue_many.kind, enqueue_many.payload, enqueue_many.queue,
                      enqueue_many.run_at, enqueue_many.priority, enqueue_many.max_attempts,
                      enqueue_many.fairness_key, enqueue_many.limit_group)
               AS t(k, p, q, r, pr, a, f, g);
        GET DIAGNOSTICS v_count = ROW_COUNT;
        IF run_at IS NULL OR array_position(run_at, NULL) IS NOT NULL THEN
            -- Some job is due now: which queues (one pass only when run_at varies).
            IF queue IS NULL OR cardinality(v_queues) = 1 THEN
                v_wake := v_queues;
            ELSE
                SELECT array_agg(DISTINCT coalesce(t.q, 'default')) INTO v_wake
                  FROM unnest(enqueue_many.queue, enqueue_many.run_at) AS t(q, r)
                 WHERE t.r IS NULL OR t.r <= now();
            END IF;
        ELSE
            SELECT array_agg(DISTINCT coalesce(t.q, 'default')) INTO v_wake
              FROM unnest(enqueue_many.queue, enqueue_many.run_at) AS t(q, r) WHERE t.r <= now();
        END IF;
        IF cardinality(v_fair_queues) > 0 THEN
            SELECT array_agg(DISTINCT jsonb_build_array(coalesce(t.q, 'default'), t.f)) INTO v_keys
              FROM unnest(enqueue_many.queue, enqueue_many.fairness_key) AS t(q, f)
             WHERE t.f <> '' AND coalesce(t.q, 'default') = ANY (v_fair_queues);
        END IF;
    END IF;

    -- Each key of a fair queue once, in one statement.
    IF v_keys IS NOT NULL THEN
        PERFORM genq.mark_fair_keys(array_agg(k->>0), array_agg(k->>1)) FROM unnest(v_keys) k;
    END IF;
    IF v_wake IS NOT NULL THEN
        FOREACH v_queue IN ARRAY v_wake LOOP
            PERFORM pg_notify('genq_jobs', v_queue);
        END LOOP;
    END IF;
    RETURN v_count;
END
$$;


-- secure_objects as in 0015, plus the backend's column grant and the intake trigger.
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
                             'set_user_limits', 'get_user_limits',
                             'get_generation', 'list_generations', 'recreate_generation')
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

    -- Direct inserts into genq.jobs (0020, decision 55): the backend may insert these columns,
    -- COPY ... FROM STDIN included; the others take their defaults. genq.jobs_intake applies
    -- genq.enqueue_many's rules to inserts by any role but the owner, whose functions apply
    -- them themselves. The WHEN clause names the owner, so it follows the prefix.
    EXECUTE format('GRANT INSERT (kind, payload, queue, run_at, priority, max_attempts, '
                   'fairness_key, limit_group) ON genq.jobs TO %I', v_backend);
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t
                    WHERE t.tgrelid = 'genq.jobs'::regclass AND t.tgname = 'jobs_intake'
                      AND pg_catalog.pg_get_triggerdef(t.oid)
                          LIKE '%CURRENT_USER <> ' || quote_literal(v_owner) || '::name%') THEN
        DROP TRIGGER IF EXISTS jobs_intake ON genq.jobs;
        EXECUTE format('CREATE TRIGGER jobs_intake AFTER INSERT ON genq.jobs '
                       'REFERENCING NEW TABLE AS new_jobs FOR EACH STATEMENT '
                       'WHEN (CURRENT_USER <> %L::name) EXECUTE FUNCTION genq.jobs_intake()', v_owner);
    END IF;

    INSERT INTO genq.role_config (prefix) VALUES (v_prefix)
    ON CONFLICT (singleton) DO UPDATE SET prefix = EXCLUDED.prefix, updated_at = now()
     WHERE genq.role_config.prefix <> EXCLUDED.prefix;
    RETURN v_prefix;
END
$fn$;


-- Rights and the trigger (genq migrate runs this after every migration too).
SELECT genq.secure_objects(current_setting('genq.role_prefix', true));
