-- Privileges and bounds. Why: docs/credits.md (roles and privileges, limits) and
-- docs/decisions.md (23).
--
-- 1. Every object of schema genq is owned by `<prefix>_owner`, a NOLOGIN role without
--    SUPERUSER, CREATEROLE or CREATEDB: the SECURITY DEFINER functions run as that role, so
--    code that reaches them (a trigger someone managed to create, a future grant mistake)
--    gets genq's tables and nothing more, never a superuser.
-- 2. `<prefix>_backend` and `<prefix>_worker` get exactly the rights they use: no TRIGGER,
--    REFERENCES or TRUNCATE anywhere.
-- 3. Roles are cluster-wide but each set serves one database: the roles carry a claim
--    (their comment names the database), and a second database that would reuse them is
--    refused with a hint to set `database.role_prefix`. A login granted one database's
--    roles therefore has no rights in another database's genq.
-- 4. genq.secure_objects() re-applies 1 and 2 to every object in the schema; `genq migrate`
--    calls it after every run, so objects later migrations create are covered too.
-- (Bounds on what callers may pass: 0012_bounds.sql.)

-- The prefix of this database's roles (one row, written by genq.secure_objects).
CREATE TABLE genq.role_config (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    prefix     text NOT NULL CHECK (prefix ~ '^[a-z][a-z0-9_]{0,39}$'),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- genq.secure_objects: creates (or checks) this database's three roles, gives every object
-- of schema genq to the owner role and grants the backend and worker roles exactly what
-- they use. `p_prefix` NULL or '' keeps the stored prefix ('genq' on a first run). Runs as
-- the migrating role (not SECURITY DEFINER); idempotent; returns the prefix in use.
CREATE FUNCTION genq.secure_objects(p_prefix text DEFAULT NULL) RETURNS text
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
                             'request_erasure', 'request_export', 'delete_generation')
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

-- 0003 made later tables ALL (TRIGGER included) for genq_worker by default; secure_objects
-- now grants, so those defaults go (they are the migrating role's, who ran 0003).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'genq_worker') THEN
        ALTER DEFAULT PRIVILEGES IN SCHEMA genq REVOKE ALL ON TABLES FROM genq_worker;
        ALTER DEFAULT PRIVILEGES IN SCHEMA genq REVOKE ALL ON SEQUENCES FROM genq_worker;
        ALTER DEFAULT PRIVILEGES IN SCHEMA genq REVOKE ALL ON FUNCTIONS FROM genq_worker;
    END IF;
END
$$;


-- Rights for everything above, and ownership by this database's owner role.
SELECT genq.secure_objects(current_setting('genq.role_prefix', true));
