-- Generation reads for the product's backend and browser: progress while a provider
-- renders, a version per change, a machine error code next to the internal reason, a
-- NOTIFY in the transaction of every change, and the SQL API to read one generation, a
-- user's history, and to run one again (Recreate). Why: docs/generation.md (Reads, progress
-- and change notifications) and docs/decisions.md (39, 40).

-- The version of a generation: taken from one sequence, so it grows on every change of a
-- row and across rows (the SSE event id). Rows that existed before this migration start at
-- 0 (no table rewrite) and get a real version at their next change.
CREATE SEQUENCE genq.generation_versions;

ALTER TABLE genq.generations
    -- What the provider last said while it works (NULL until it says something):
    -- {"phase", "queue_position", "percent", "message", "updated_at"}; written by the poll
    -- only when it changed, at most 1 KiB (the daemon caps the message at 200 characters).
    ADD COLUMN progress   jsonb,
    ADD COLUMN version    bigint NOT NULL DEFAULT 0,
    -- Why it failed or was cancelled, as a machine code (docs/generation.md lists them);
    -- `error` keeps the internal detail, never shown to the user as it is.
    ADD COLUMN error_code text;
ALTER TABLE genq.generations
    ALTER COLUMN version SET DEFAULT nextval('genq.generation_versions');
-- NOT VALID: every existing row is NULL; new writes are checked.
ALTER TABLE genq.generations
    ADD CONSTRAINT generations_progress_bounded
        CHECK (progress IS NULL OR (jsonb_typeof(progress) = 'object' AND octet_length(progress::text) <= 1024))
        NOT VALID,
    ADD CONSTRAINT generations_error_code_format
        CHECK (error_code ~ '^[a-z][a-z_]{0,39}$') NOT VALID;

-- A user's history, newest first, keyset-paginated on (created_at, id). It also serves
-- every `user_id = $1` lookup the single-column index served (erasure, export).
CREATE INDEX generations_user_history_idx ON genq.generations (user_id, created_at DESC, id DESC);
DROP INDEX genq.generations_user_idx;

-- Codes for the generations that ended before this migration, from their reasons (the
-- texts src/jobs/generation wrote). The touch trigger is off meanwhile: updated_at keeps
-- telling when the generation last changed.
ALTER TABLE genq.generations DISABLE TRIGGER generations_touch;
UPDATE genq.generations g
   SET error_code = CASE
       WHEN g.state = 'cancelled' THEN 'cancelled'
       WHEN g.error LIKE 'output_unfetchable:%' THEN 'output_unfetchable'
       WHEN g.error ~* '(moderation|content_policy|SensitiveContent|E005)' THEN 'moderation'
       WHEN g.error LIKE 'output could not be stored%' THEN 'storage_failed'
       WHEN g.error LIKE '%did not finish within%' OR g.error LIKE '%: expired: %'
            OR g.error LIKE 'no final state from the provider%' THEN 'timeout'
       WHEN g.error ~ ' refused the request: .*HTTP (400|404|422)' THEN 'invalid_input'
       ELSE 'provider_failed' END
 WHERE g.state IN ('failed', 'cancelled') AND g.error_code IS NULL;
ALTER TABLE genq.generations ENABLE TRIGGER generations_touch;

-- A new version on every change of what a reader sees moving: the state, the progress, or
-- the user deleting it. A final state without a code gets the generic one (SQL paths such
-- as genq.cancel_generation set none); success clears it.
CREATE FUNCTION genq.generations_version() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.state = 'succeeded' THEN
        NEW.error_code := NULL;
    ELSIF NEW.state = 'cancelled' AND NEW.error_code IS NULL THEN
        NEW.error_code := 'cancelled';
    ELSIF NEW.state = 'failed' AND NEW.error_code IS NULL THEN
        NEW.error_code := 'internal_error';
    END IF;
    IF NEW.state IS DISTINCT FROM OLD.state OR NEW.progress IS DISTINCT FROM OLD.progress
       OR NEW.deleted_at IS DISTINCT FROM OLD.deleted_at THEN
        NEW.version := nextval('genq.generation_versions');
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER generations_version BEFORE UPDATE ON genq.generations
    FOR EACH ROW EXECUTE FUNCTION genq.generations_version();

-- The change notification: channel `genq_generation`, payload
-- {"id", "user_id", "version", "state"} (user ids are at most 255 bytes, so the payload stays
-- far below NOTIFY's 8000 bytes). Sent in the transaction that makes the change, so
-- listeners get it at commit and never for a rollback. Listeners read the rest with
-- genq.get_generation.
CREATE FUNCTION genq.generations_notify() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pg_notify('genq_generation',
                      json_build_object('id', NEW.id, 'user_id', NEW.user_id,
                                        'version', NEW.version, 'state', NEW.state)::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER generations_notify_insert AFTER INSERT ON genq.generations
    FOR EACH ROW EXECUTE FUNCTION genq.generations_notify();
CREATE TRIGGER generations_notify_update AFTER UPDATE ON genq.generations
    FOR EACH ROW WHEN (OLD.version IS DISTINCT FROM NEW.version)
    EXECUTE FUNCTION genq.generations_notify();

-- The user-safe text of an error code. The internal reason (`error`) may name provider
-- codes and our configuration; this is what a user may read.
CREATE FUNCTION genq.generation_error_message(p_code text) RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE p_code
        WHEN 'moderation' THEN 'The request or its result was blocked by the provider''s content policy.'
        WHEN 'invalid_input' THEN 'The provider rejected the request''s input.'
        WHEN 'provider_failed' THEN 'The provider could not complete the generation.'
        WHEN 'timeout' THEN 'The provider did not finish in time.'
        WHEN 'cancelled' THEN 'The generation was cancelled.'
        WHEN 'output_unfetchable' THEN 'The result could not be retrieved from the provider.'
        WHEN 'storage_failed' THEN 'The result could not be saved.'
        ELSE 'The generation failed.'
    END
$$;

-- One generation as the API shows it (get_generation, list_generations and the events the
-- daemon streams): everything but the internal reason, the provider's request id and meta,
-- and the input once retention scrubbed it. `credits`: what is held now, captured and
-- released, from the ledger.
CREATE FUNCTION genq.generation_json(g genq.generations) RETURNS jsonb
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $$
    SELECT jsonb_build_object(
        'id', g.id,
        'user_id', g.user_id,
        'provider', g.provider,
        'model', g.model,
        'state', g.state,
        'progress', g.progress,
        'output', g.output,
        'error', CASE WHEN g.error_code IS NOT NULL THEN
                     jsonb_build_object('code', g.error_code,
                                        'message', genq.generation_error_message(g.error_code)) END,
        'cost', g.cost,
        'credits', (SELECT jsonb_build_object(
                        'held', coalesce(sum(l.amount) FILTER (WHERE l.kind = 'hold'), 0)
                                - coalesce(sum(l.amount) FILTER (WHERE l.kind IN ('capture', 'release')), 0),
                        'captured', coalesce(sum(l.amount) FILTER (WHERE l.kind = 'capture'), 0),
                        'released', coalesce(sum(l.amount) FILTER (WHERE l.kind = 'release'), 0))
                      FROM genq.ledger l
                     WHERE l.generation_id = g.id AND l.kind IN ('hold', 'capture', 'release')),
        'input', CASE WHEN g.scrubbed_at IS NULL THEN g.input END,
        'input_scrubbed', g.scrubbed_at IS NOT NULL,
        'cancel_requested', g.cancel_requested_at IS NOT NULL,
        'created_at', g.created_at,
        'submitted_at', g.submitted_at,
        'finished_at', g.finished_at,
        'updated_at', g.updated_at,
        'deleted_at', g.deleted_at,
        'version', g.version)
$$;

-- genq.get_generation: one generation as JSON (genq.generation_json), NULL when there is
-- none with this id. The caller decides who may see it (the JSON names its user_id).
CREATE FUNCTION genq.get_generation(id uuid) RETURNS jsonb
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT genq.generation_json(g) FROM genq.generations g WHERE g.id = $1
$$;

-- genq.list_generations: a user's history, newest first (created_at, then id, descending),
-- one JSON object per row as genq.get_generation returns it; generations the user deleted
-- are left out. `p_limit` 1..100 (22023 otherwise); `p_before`: the id of the last
-- generation of the previous page (the next page starts after it), which must be one of
-- this user's generations (P0002 otherwise).
CREATE FUNCTION genq.list_generations(user_id text, p_limit integer DEFAULT 20, p_before uuid DEFAULT NULL)
RETURNS SETOF jsonb
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_created timestamptz;
    v_id      uuid;
BEGIN
    PERFORM genq.check_user_id('genq.list_generations', list_generations.user_id);
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION 'genq.list_generations: p_limit must be 1 to 100 (got %)', coalesce(p_limit::text, 'NULL')
            USING ERRCODE = '22023';
    END IF;
    IF p_before IS NULL THEN
        RETURN QUERY
            SELECT genq.generation_json(g) FROM genq.generations g
             WHERE g.user_id = list_generations.user_id AND g.deleted_at IS NULL
             ORDER BY g.created_at DESC, g.id DESC
             LIMIT p_limit;
        RETURN;
    END IF;
    SELECT g.created_at, g.id INTO v_created, v_id FROM genq.generations g
     WHERE g.id = p_before AND g.user_id = list_generations.user_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'genq.list_generations: p_before % is not a generation of this user', p_before
            USING ERRCODE = 'P0002',
                  HINT = 'Pass the id of the last generation of the previous page, or NULL for the first page.';
    END IF;
    RETURN QUERY
        SELECT genq.generation_json(g) FROM genq.generations g
         WHERE g.user_id = list_generations.user_id AND g.deleted_at IS NULL
           AND (g.created_at, g.id) < (v_created, v_id)
         ORDER BY g.created_at DESC, g.id DESC
         LIMIT p_limit;
END
$$;

-- genq.recreate_generation: a new generation with the same user, provider, model, input
-- and cost as generation `id`, through genq.enqueue_generation (credits held, GQ402 when
-- insufficient, idempotent per (user, idempotency_key): the same key again returns the
-- first call's generation). Unknown id: P0002. Its input scrubbed by retention, or the
-- generation deleted by its user: GQ410, nothing written.
CREATE FUNCTION genq.recreate_generation(id uuid, idempotency_key text) RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_source   genq.generations%ROWTYPE;
    v_existing uuid;
BEGIN
    IF recreate_generation.idempotency_key IS NULL OR length(recreate_generation.idempotency_key) = 0 THEN
        RAISE EXCEPTION 'genq.recreate_generation: idempotency_key must be a non-empty string'
            USING ERRCODE = '22023';
    END IF;
    PERFORM genq.check_length('genq.recreate_generation', 'idempotency_key',
                              recreate_generation.idempotency_key, 255);
    SELECT * INTO v_source FROM genq.generations g WHERE g.id = recreate_generation.id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'generation % not found', recreate_generation.id USING ERRCODE = 'P0002';
    END IF;
    -- A repeated call returns what the first one created, even if the source was scrubbed
    -- since (genq.enqueue_generation checks again under the account lock).
    SELECT g.id INTO v_existing FROM genq.generations g
     WHERE g.user_id = v_source.user_id AND g.idempotency_key = recreate_generation.idempotency_key;
    IF v_existing IS NOT NULL THEN
        RETURN v_existing;
    END IF;
    IF v_source.scrubbed_at IS NOT NULL OR v_source.deleted_at IS NOT NULL THEN
        RAISE EXCEPTION 'genq.recreate_generation: generation % cannot be recreated: its input was %',
            recreate_generation.id,
            CASE WHEN v_source.deleted_at IS NOT NULL THEN 'deleted with it by the user'
                 ELSE 'scrubbed by retention' END
            USING ERRCODE = 'GQ410',
                  HINT = 'Nothing was held or enqueued. Ask the user for the input again and call genq.enqueue_generation.';
    END IF;
    RETURN genq.enqueue_generation(v_source.user_id, v_source.provider, v_source.model,
                                   v_source.input, v_source.cost, recreate_generation.idempotency_key);
END
$$;

-- secure_objects as in 0014 (0011 plus set_user_limits and get_user_limits), with the three
-- reads above in the backend's list.
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

    INSERT INTO genq.role_config (prefix) VALUES (v_prefix)
    ON CONFLICT (singleton) DO UPDATE SET prefix = EXCLUDED.prefix, updated_at = now()
     WHERE genq.role_config.prefix <> EXCLUDED.prefix;
    RETURN v_prefix;
END
$fn$;

-- Rights for everything above, and ownership by this database's owner role.
SELECT genq.secure_objects(current_setting('genq.role_prefix', true));
