-- Retention and privacy: the registry of blobs genq must delete on time, the policies that
-- date them, the deletion log that proves each deletion, and the SQL API the backend calls
-- (register_blob, request_erasure, request_export, delete_generation). Why it is shaped
-- this way: docs/privacy.md.
--
-- Privacy rules, enforced here and by the retention jobs (src/jobs/retention/):
--   * a blob is deleted only once it is due (expires_at <= now(), re-checked under the
--     row's lock right before the store is asked), and every deletion writes
--     genq.deletion_log with the policy that caused it;
--   * a store key belongs to at most one live blob (unique index below), so deleting an
--     expired blob can never delete a newer upload under the same key: registering the key
--     again waits for an in-flight delete of the old blob, then takes the key over;
--   * ledger and payment rows are never deleted by erasure: they are de-identified (the
--     user id replaced by a keyed hash) and kept for their retention period.

CREATE TYPE genq.blob_role AS ENUM (
    'source',     -- an upload a generation consumes; deleted after its generation ends
    'reference',  -- an upload kept for a while (style references); deleted after a TTL
    'output',     -- a generated output genq copied to storage; TTL or kept
    'export'      -- a data export archive genq wrote for the user
);

-- How long each kind of data is kept. The daemon writes its [retention] configuration
-- here when it starts (genq.set_retention_policy), so SQL that dates a blob uses the same
-- numbers as the daemon. keep NULL = kept until the user or an erasure deletes it.
--   source:         after the blob's generation reaches a final state
--   reference, output, export: after the blob is registered
--   inputs:         generation inputs (prompts) and outputs metadata, after the generation ends
--   webhook_bodies: raw provider and payment callbacks, after they were received
--   erasure:        from an account-erasure request to its due date
CREATE TABLE genq.retention_policies (
    name       text PRIMARY KEY CHECK (name IN ('source', 'reference', 'output', 'export',
                                                'inputs', 'webhook_bodies', 'erasure')),
    keep       interval CHECK (keep IS NULL OR keep >= interval '0'),
    updated_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO genq.retention_policies (name, keep) VALUES
    ('source', interval '24 hours'),
    ('reference', interval '7 days'),
    ('output', interval '30 days'),
    ('export', interval '7 days'),
    ('inputs', interval '30 days'),
    ('webhook_bodies', interval '7 days'),
    ('erasure', interval '30 days');

-- One row per object genq is responsible for deleting. Rows are kept after deletion (with
-- deleted_at) as the operational record; erasure de-identifies them.
CREATE TABLE genq.blobs (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       text NOT NULL CHECK (length(user_id) > 0),
    generation_id uuid,
    role          genq.blob_role NOT NULL,
    store         text NOT NULL CONSTRAINT blobs_store_known
                      CHECK (store IN ('local', 's3', 'vercel', 'supabase')),
    -- The object's key (path) in the store; for Vercel Blob also its full URL.
    key           text NOT NULL CHECK (length(key) > 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- When it becomes due for deletion; NULL: not (yet) scheduled (a source whose
    -- generation is still running, an output kept forever).
    expires_at    timestamptz,
    -- The policy that set expires_at: a role's policy, 'user_deletion' or 'erasure'.
    policy        text,
    deleted_at    timestamptz,
    -- The retention.delete job that owns the deletion (re-scheduled by the sweep when it
    -- is final or gone and the blob still exists).
    delete_job_id bigint,
    attempts      integer NOT NULL DEFAULT 0,
    last_error    text,
    last_attempt_at timestamptz,
    CONSTRAINT blobs_due_has_policy CHECK (expires_at IS NULL OR policy IS NOT NULL)
);

CREATE UNIQUE INDEX blobs_live_key_idx ON genq.blobs (store, key) WHERE deleted_at IS NULL;
-- The sweep's scans: live blobs by due date (backlog, status); due blobs no delete job
-- owns yet; blobs a delete job owns (to find those whose job ended without deleting them).
CREATE INDEX blobs_due_idx ON genq.blobs (expires_at) WHERE deleted_at IS NULL AND expires_at IS NOT NULL;
CREATE INDEX blobs_unscheduled_idx ON genq.blobs (expires_at)
    WHERE deleted_at IS NULL AND expires_at IS NOT NULL AND delete_job_id IS NULL;
CREATE INDEX blobs_scheduled_idx ON genq.blobs (delete_job_id)
    WHERE deleted_at IS NULL AND delete_job_id IS NOT NULL;
CREATE INDEX blobs_user_idx ON genq.blobs (user_id);
CREATE INDEX blobs_generation_idx ON genq.blobs (generation_id) WHERE generation_id IS NOT NULL;

-- The proof: one row per deleted or scrubbed item, with the policy that caused it.
CREATE TABLE genq.deletion_log (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT now(),
    -- blob | input (a generation's input and output metadata) | webhook_body
    subject       text NOT NULL CHECK (subject IN ('blob', 'input', 'webhook_body')),
    -- deleted | superseded (a blob's key was registered again after its object was
    -- replaced) | scrubbed
    outcome       text NOT NULL CHECK (outcome IN ('deleted', 'superseded', 'scrubbed')),
    policy        text NOT NULL,
    user_id       text,
    blob_id       bigint,
    generation_id uuid,
    webhook_event_id bigint,
    role          genq.blob_role,
    store         text,
    key           text,
    job_id        bigint
);

CREATE INDEX deletion_log_at_idx ON genq.deletion_log (at);
CREATE INDEX deletion_log_user_idx ON genq.deletion_log (user_id) WHERE user_id IS NOT NULL;

-- Generations: when their input (prompt) was scrubbed, and when the user deleted them.
ALTER TABLE genq.generations
    ADD COLUMN scrubbed_at timestamptz,
    ADD COLUMN deleted_at  timestamptz;
CREATE INDEX generations_scrub_idx ON genq.generations (finished_at)
    WHERE scrubbed_at IS NULL AND finished_at IS NOT NULL;
CREATE INDEX generations_deleted_unscrubbed_idx ON genq.generations (deleted_at)
    WHERE scrubbed_at IS NULL AND deleted_at IS NOT NULL;
CREATE INDEX generations_user_idx ON genq.generations (user_id);

-- Webhook bodies are scrubbed after their window; the row (ids, times) stays.
ALTER TABLE genq.webhook_events
    ALTER COLUMN body DROP NOT NULL,
    ADD COLUMN body_scrubbed_at timestamptz;
CREATE INDEX webhook_events_scrub_idx ON genq.webhook_events (received_at) WHERE body IS NOT NULL;
CREATE INDEX payments_user_idx ON genq.payments (user_id);

-- Account erasure requests. user_id is replaced by NULL when the erasure completes; the
-- keyed hash that replaced the user id everywhere is kept in subject.
CREATE TABLE genq.erasure_requests (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      text CHECK (length(user_id) > 0),
    subject      text,
    requested_at timestamptz NOT NULL DEFAULT now(),
    due_at       timestamptz NOT NULL,
    completed_at timestamptz,
    -- What the erasure did: counts of blobs, generations, webhook bodies, ledger rows...
    summary      jsonb,
    CONSTRAINT erasure_requests_identity CHECK ((completed_at IS NULL) = (user_id IS NOT NULL))
);
CREATE UNIQUE INDEX erasure_requests_pending_idx ON genq.erasure_requests (user_id)
    WHERE completed_at IS NULL;

-- Data export requests; the archive is an 'export' blob with its own expiry.
CREATE TABLE genq.export_requests (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      text NOT NULL CHECK (length(user_id) > 0),
    requested_at timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    blob_id      bigint REFERENCES genq.blobs (id),
    store        text,
    key          text,
    url          text,
    expires_at   timestamptz
);
CREATE INDEX export_requests_user_idx ON genq.export_requests (user_id);

-- genq.policy_keep: how long the named policy keeps data (NULL: forever).
CREATE FUNCTION genq.policy_keep(p_name text) RETURNS interval
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT keep FROM genq.retention_policies WHERE name = p_name $$;

-- genq.blob_expiry: when a blob of `role` registered at `created` for `generation` is due,
-- under the current policies, or NULL when not scheduled. A source blob is due `source`
-- after its generation's final state (NULL while it runs); without a generation, after
-- upload. A generation the user deleted makes its blobs due at once.
CREATE FUNCTION genq.blob_expiry(p_role genq.blob_role, p_created timestamptz, p_generation uuid,
                                 OUT expires_at timestamptz, OUT policy text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g record;
BEGIN
    IF p_generation IS NOT NULL THEN
        SELECT gen.finished_at, gen.deleted_at INTO g FROM genq.generations gen WHERE gen.id = p_generation;
        IF FOUND AND g.deleted_at IS NOT NULL THEN
            expires_at := g.deleted_at;
            policy := 'user_deletion';
            RETURN;
        END IF;
    END IF;
    policy := p_role::text;
    IF p_role = 'source' AND p_generation IS NOT NULL THEN
        expires_at := g.finished_at + genq.policy_keep('source');
    ELSE
        expires_at := p_created + genq.policy_keep(p_role::text);
    END IF;
    IF expires_at IS NULL THEN
        policy := NULL;
    END IF;
END
$$;

-- genq.set_retention_policy: sets how long `name` keeps data (NULL: forever) and re-dates
-- the live blobs that policy scheduled, so a changed policy applies to what is stored now
-- (a shorter one makes blobs due sooner; `output = never` unschedules outputs). Blobs due
-- by a user's deletion or an erasure keep their date. Returns the blobs re-dated.
CREATE FUNCTION genq.set_retention_policy(name text, keep interval) RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_count bigint := 0;
BEGIN
    INSERT INTO genq.retention_policies AS p (name, keep) VALUES (set_retention_policy.name, set_retention_policy.keep)
    ON CONFLICT (name) DO UPDATE SET keep = EXCLUDED.keep, updated_at = now()
     WHERE p.keep IS DISTINCT FROM EXCLUDED.keep;
    IF NOT FOUND OR set_retention_policy.name NOT IN ('source', 'reference', 'output', 'export') THEN
        RETURN 0;
    END IF;
    WITH target AS (
        SELECT b.id, e.expires_at, e.policy
          FROM genq.blobs b
         CROSS JOIN LATERAL genq.blob_expiry(b.role, b.created_at, b.generation_id) e
         WHERE b.deleted_at IS NULL
           AND b.role = set_retention_policy.name::genq.blob_role
           AND (b.policy IS NULL OR b.policy = set_retention_policy.name)
           AND b.expires_at IS DISTINCT FROM e.expires_at
    ), redated AS (
        UPDATE genq.blobs b SET expires_at = t.expires_at, policy = t.policy
          FROM target t WHERE b.id = t.id
        RETURNING 1
    )
    SELECT count(*) INTO v_count FROM redated;
    RETURN v_count;
END
$$;

-- genq.register_blob: the backend tells genq about an upload it must delete on time (call
-- it in the transaction that records the upload, before or while uploading). Idempotent:
-- the same (store, key) registered again for the same user, role and generation returns
-- the same id. A key whose previous blob is due (or being deleted) is taken over: the
-- call waits for an in-flight delete of it to finish (also when the delete lost its
-- database connection: while its job holds a valid lease), and the old row is closed as
-- 'superseded'. A key held by another live, not-due blob is an error (23505).
-- Returns the blob's id.
CREATE FUNCTION genq.register_blob(user_id text, role text, store text, key text,
                                   generation_id uuid DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_role    genq.blob_role;
    v_owner   text;
    v_old     genq.blobs%ROWTYPE;
    v_id      bigint;
    v_expiry  record;
BEGIN
    IF coalesce(length(register_blob.user_id), 0) = 0 THEN
        RAISE EXCEPTION 'genq.register_blob: user_id must be a non-empty string' USING ERRCODE = '22023';
    END IF;
    IF coalesce(length(register_blob.key), 0) = 0 THEN
        RAISE EXCEPTION 'genq.register_blob: key must be a non-empty string' USING ERRCODE = '22023';
    END IF;
    IF register_blob.role IS NULL OR register_blob.role NOT IN ('source', 'reference', 'output', 'export') THEN
        RAISE EXCEPTION 'genq.register_blob: role must be source, reference, output or export (got %)',
            coalesce(register_blob.role, 'NULL') USING ERRCODE = '22023';
    END IF;
    v_role := register_blob.role::genq.blob_role;
    IF register_blob.store IS NULL OR register_blob.store NOT IN ('local', 's3', 'vercel', 'supabase') THEN
        RAISE EXCEPTION 'genq.register_blob: store must be local, s3, vercel or supabase (got %)',
            coalesce(register_blob.store, 'NULL') USING ERRCODE = '22023';
    END IF;
    IF register_blob.generation_id IS NOT NULL THEN
        SELECT g.user_id INTO v_owner FROM genq.generations g WHERE g.id = register_blob.generation_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'genq.register_blob: generation % not found', register_blob.generation_id
                USING ERRCODE = 'P0002';
        END IF;
        IF v_owner <> register_blob.user_id THEN
            RAISE EXCEPTION 'genq.register_blob: generation % belongs to another user', register_blob.generation_id
                USING ERRCODE = '22023';
        END IF;
    END IF;

    -- The delete job holds the old row's lock across its store call, but the lock goes with
    -- the job's connection (a database restart, a network cut) while the store request may
    -- still be on its way, and would then delete the new upload. So first wait, holding
    -- nothing, while the old row's delete job still runs with a valid lease (a dead worker's
    -- lease runs out within worker.lease). Stop waiting if another session waits for this
    -- transaction (it may be that job, blocked on a key taken over earlier in this
    -- transaction: a cycle Postgres would not see), and outside READ COMMITTED (the
    -- snapshot would never show the job end); the row lock below then still applies.
    IF current_setting('transaction_isolation') = 'read committed' THEN
        LOOP
            EXIT WHEN NOT EXISTS (
                SELECT 1 FROM genq.blobs b JOIN genq.jobs j ON j.id = b.delete_job_id
                 WHERE b.store = register_blob.store AND b.key = register_blob.key
                   AND b.deleted_at IS NULL
                   AND j.state = 'running' AND j.lease_until > clock_timestamp());
            EXIT WHEN EXISTS (SELECT 1 FROM pg_stat_activity a
                               WHERE pg_backend_pid() = ANY (pg_blocking_pids(a.pid)));
            PERFORM pg_sleep(0.05);
        END LOOP;
    END IF;
    -- Waits for a delete job holding the old row (it holds the lock across the store call).
    SELECT * INTO v_old FROM genq.blobs b
     WHERE b.store = register_blob.store AND b.key = register_blob.key AND b.deleted_at IS NULL
       FOR UPDATE;
    IF FOUND THEN
        IF v_old.user_id = register_blob.user_id AND v_old.role = v_role
           AND v_old.generation_id IS NOT DISTINCT FROM register_blob.generation_id
           AND (v_old.expires_at IS NULL OR v_old.expires_at > now()) THEN
            RETURN v_old.id;
        END IF;
        IF v_old.expires_at IS NULL OR v_old.expires_at > now() THEN
            RAISE EXCEPTION 'genq.register_blob: % key % is already registered to blob % (another owner, role or generation)',
                register_blob.store, register_blob.key, v_old.id USING ERRCODE = '23505';
        END IF;
        -- The old blob is due but not deleted yet: the object under the key is now the new
        -- upload, so the old row's deletion is done (its content was replaced).
        UPDATE genq.blobs b SET deleted_at = now() WHERE b.id = v_old.id;
        INSERT INTO genq.deletion_log (subject, outcome, policy, user_id, blob_id, generation_id, role, store, key)
        VALUES ('blob', 'superseded', v_old.policy, v_old.user_id, v_old.id, v_old.generation_id,
                v_old.role, v_old.store, v_old.key);
    END IF;

    SELECT * INTO v_expiry FROM genq.blob_expiry(v_role, now(), register_blob.generation_id);
    INSERT INTO genq.blobs (user_id, generation_id, role, store, key, expires_at, policy)
    VALUES (register_blob.user_id, register_blob.generation_id, v_role, register_blob.store,
            register_blob.key, v_expiry.expires_at, v_expiry.policy)
    RETURNING id INTO v_id;
    RETURN v_id;
END
$$;

-- When a generation ends, its source blobs get their deletion date; when the user has
-- deleted it, every blob of it is due at once.
CREATE FUNCTION genq.generations_schedule_blobs() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    WITH target AS (
        SELECT b.id, e.expires_at, e.policy
          FROM genq.blobs b
         CROSS JOIN LATERAL genq.blob_expiry(b.role, b.created_at, b.generation_id) e
         WHERE b.generation_id = NEW.id AND b.deleted_at IS NULL
           AND b.policy IS DISTINCT FROM 'erasure'
           AND (b.role = 'source' OR NEW.deleted_at IS NOT NULL)
           AND b.expires_at IS DISTINCT FROM e.expires_at
    )
    UPDATE genq.blobs b SET expires_at = t.expires_at, policy = t.policy
      FROM target t WHERE b.id = t.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER generations_schedule_blobs
    AFTER UPDATE OF state, finished_at, deleted_at ON genq.generations
    FOR EACH ROW
    WHEN (OLD.finished_at IS DISTINCT FROM NEW.finished_at OR OLD.deleted_at IS DISTINCT FROM NEW.deleted_at)
    EXECUTE FUNCTION genq.generations_schedule_blobs();

-- genq.run_retention_sweep: asks for a retention sweep soon (one pending at a time).
CREATE FUNCTION genq.run_retention_sweep() RETURNS bigint
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT genq.enqueue('retention.sweep', '{}'::jsonb, queue => 'retention',
                        unique_key => 'retention.sweep:requested')
$$;

-- genq.delete_generation: the user deletes one generation from their history now. Its
-- input and output metadata are scrubbed, its blobs (sources, outputs) become due at once
-- and a retention sweep is requested. A generation still running is cancelled first (its
-- hold released); what it produces afterwards is deleted too. Returns the state it had.
CREATE FUNCTION genq.delete_generation(id uuid) RETURNS genq.generation_state
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_state genq.generation_state;
BEGIN
    SELECT g.state INTO v_state FROM genq.generations g WHERE g.id = delete_generation.id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'generation % not found', delete_generation.id USING ERRCODE = 'P0002';
    END IF;
    IF v_state NOT IN ('succeeded', 'failed', 'cancelled') THEN
        PERFORM genq.cancel_generation(delete_generation.id);
    END IF;
    UPDATE genq.generations g SET deleted_at = coalesce(g.deleted_at, now())
     WHERE g.id = delete_generation.id;
    PERFORM genq.scrub_generations(ARRAY[delete_generation.id], 'user_deletion');
    PERFORM genq.run_retention_sweep();
    RETURN v_state;
END
$$;

-- genq.scrub_generations: replaces the input (prompt) and output metadata of the given
-- final generations with empty values and logs each under `policy`. Generations still
-- running are skipped (their input is still needed). Returns how many were scrubbed.
CREATE FUNCTION genq.scrub_generations(p_ids uuid[], p_policy text) RETURNS bigint
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH scrubbed AS (
        UPDATE genq.generations g
           SET input = '{}'::jsonb, output = NULL, scrubbed_at = now()
         WHERE g.id = ANY (p_ids) AND g.scrubbed_at IS NULL
           AND g.state IN ('succeeded', 'failed', 'cancelled')
        RETURNING g.id, g.user_id
    ), logged AS (
        INSERT INTO genq.deletion_log (subject, outcome, policy, user_id, generation_id)
        SELECT 'input', 'scrubbed', p_policy, s.user_id, s.id FROM scrubbed s
        RETURNING 1
    )
    SELECT count(*) FROM logged
$$;

-- genq.scrub_webhook_bodies: drops the raw bodies of the given callbacks, logging each.
CREATE FUNCTION genq.scrub_webhook_bodies(p_ids bigint[], p_policy text) RETURNS bigint
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH scrubbed AS (
        UPDATE genq.webhook_events w
           SET body = NULL, body_scrubbed_at = now()
         WHERE w.id = ANY (p_ids) AND w.body IS NOT NULL
        RETURNING w.id, w.generation_id
    ), logged AS (
        INSERT INTO genq.deletion_log (subject, outcome, policy, generation_id, webhook_event_id, user_id)
        SELECT 'webhook_body', 'scrubbed', p_policy, s.generation_id, s.id,
               (SELECT g.user_id FROM genq.generations g WHERE g.id = s.generation_id)
          FROM scrubbed s
        RETURNING 1
    )
    SELECT count(*) FROM logged
$$;

-- genq.request_erasure: the user's account was deleted; erase their data. Returns the
-- request's id (the pending one if already requested). Due `erasure` (30 days) from now;
-- the privacy.erase job normally finishes within minutes.
CREATE FUNCTION genq.request_erasure(user_id text) RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_id bigint;
BEGIN
    IF coalesce(length(request_erasure.user_id), 0) = 0 THEN
        RAISE EXCEPTION 'genq.request_erasure: user_id must be a non-empty string' USING ERRCODE = '22023';
    END IF;
    INSERT INTO genq.erasure_requests (user_id, due_at)
    VALUES (request_erasure.user_id, now() + coalesce(genq.policy_keep('erasure'), interval '30 days'))
    ON CONFLICT (user_id) WHERE completed_at IS NULL DO NOTHING
    RETURNING id INTO v_id;
    IF v_id IS NULL THEN
        SELECT r.id INTO v_id FROM genq.erasure_requests r
         WHERE r.user_id = request_erasure.user_id AND r.completed_at IS NULL;
        RETURN v_id;
    END IF;
    PERFORM genq.enqueue('privacy.erase', jsonb_build_object('request_id', v_id),
                         queue => 'retention', unique_key => 'privacy.erase:' || v_id);
    RETURN v_id;
END
$$;

-- genq.request_export: writes the user's data (generations, ledger, payments, blob
-- metadata) as a JSON archive into storage; genq.export_requests says where when done.
-- Returns the request's id.
CREATE FUNCTION genq.request_export(user_id text) RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_id bigint;
BEGIN
    IF coalesce(length(request_export.user_id), 0) = 0 THEN
        RAISE EXCEPTION 'genq.request_export: user_id must be a non-empty string' USING ERRCODE = '22023';
    END IF;
    INSERT INTO genq.export_requests (user_id) VALUES (request_export.user_id) RETURNING id INTO v_id;
    PERFORM genq.enqueue('privacy.export', jsonb_build_object('request_id', v_id),
                         queue => 'retention', unique_key => 'privacy.export:' || v_id);
    RETURN v_id;
END
$$;

-- genq.deidentify_user: replaces `user_id` by `subject` (a keyed hash computed by the
-- daemon, which holds the key) in every row genq keeps after an erasure: ledger, account,
-- generations, payments, blobs (and their keys), the deletion log and export requests.
-- Balances move with the account row unchanged, so genq.check_ledger() stays clean.
-- Returns the rows changed per table.
CREATE FUNCTION genq.deidentify_user(p_user text, p_subject text) RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_result jsonb := '{}'::jsonb;
    v_n      bigint;
BEGIN
    IF coalesce(length(p_subject), 0) = 0 OR p_subject = p_user THEN
        RAISE EXCEPTION 'genq.deidentify_user: subject must be a non-empty hash, not the user id' USING ERRCODE = '22023';
    END IF;
    -- Both balance rows are locked (the subject's exists when the same user id was erased
    -- before); the user's balance moves into the subject's, unchanged in sum.
    PERFORM genq.lock_account(a.user_id) FROM genq.accounts a
      WHERE a.user_id IN (p_user, p_subject) ORDER BY a.user_id;
    IF EXISTS (SELECT 1 FROM genq.accounts WHERE user_id = p_subject) THEN
        UPDATE genq.accounts s
           SET available = s.available + u.available, held = s.held + u.held, updated_at = now()
          FROM genq.accounts u
         WHERE s.user_id = p_subject AND u.user_id = p_user;
        DELETE FROM genq.accounts WHERE user_id = p_user;
    ELSE
        UPDATE genq.accounts SET user_id = p_subject, updated_at = now() WHERE user_id = p_user;
    END IF;
    GET DIAGNOSTICS v_n = ROW_COUNT; v_result := v_result || jsonb_build_object('accounts', v_n);
    UPDATE genq.ledger SET user_id = p_subject WHERE user_id = p_user;
    GET DIAGNOSTICS v_n = ROW_COUNT; v_result := v_result || jsonb_build_object('ledger', v_n);
    UPDATE genq.payments SET user_id = p_subject, updated_at = now() WHERE user_id = p_user;
    GET DIAGNOSTICS v_n = ROW_COUNT; v_result := v_result || jsonb_build_object('payments', v_n);
    UPDATE genq.generations SET user_id = p_subject WHERE user_id = p_user;
    GET DIAGNOSTICS v_n = ROW_COUNT; v_result := v_result || jsonb_build_object('generations', v_n);
    UPDATE genq.blobs SET user_id = p_subject, key = replace(key, p_user, p_subject) WHERE user_id = p_user;
    GET DIAGNOSTICS v_n = ROW_COUNT; v_result := v_result || jsonb_build_object('blobs', v_n);
    UPDATE genq.deletion_log
       SET user_id = p_subject, key = replace(key, p_user, p_subject)
     WHERE user_id = p_user;
    GET DIAGNOSTICS v_n = ROW_COUNT; v_result := v_result || jsonb_build_object('deletion_log', v_n);
    UPDATE genq.export_requests
       SET user_id = p_subject, key = replace(key, p_user, p_subject), url = replace(url, p_user, p_subject)
     WHERE user_id = p_user;
    GET DIAGNOSTICS v_n = ROW_COUNT; v_result := v_result || jsonb_build_object('export_requests', v_n);
    RETURN v_result;
END
$$;

-- genq.check_retention: audits the privacy invariants; one row per violation, none when
-- healthy. Like genq.check_ledger, it reads whole tables: run it from monitoring, after an
-- incident, or after fault tests.
CREATE FUNCTION genq.check_retention() RETURNS TABLE (invariant text, detail text)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    -- Nothing deleted before it was due.
    SELECT 'deleted_before_due', format('blob %s deleted at %s, due %s', b.id, b.deleted_at, b.expires_at)
      FROM genq.blobs b
     WHERE b.deleted_at IS NOT NULL AND (b.expires_at IS NULL OR b.deleted_at < b.expires_at)
    UNION ALL
    -- Every deletion proven once: one log row per deleted blob, none for a live one.
    SELECT 'deletion_not_logged', format('blob %s deleted at %s has no deletion_log row', b.id, b.deleted_at)
      FROM genq.blobs b
     WHERE b.deleted_at IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM genq.deletion_log l WHERE l.blob_id = b.id)
    UNION ALL
    SELECT 'deletion_logged_twice', format('blob %s has %s deletion_log rows', l.blob_id, count(*))
      FROM genq.deletion_log l WHERE l.subject = 'blob'
     GROUP BY l.blob_id HAVING count(*) > 1
    UNION ALL
    SELECT 'logged_but_live', format('blob %s is logged as %s but not deleted', b.id, l.outcome)
      FROM genq.deletion_log l JOIN genq.blobs b ON b.id = l.blob_id
     WHERE b.deleted_at IS NULL
    UNION ALL
    -- No deletion forgotten: a source of an ended generation, and every blob of a deleted
    -- generation, has a due date.
    SELECT 'source_not_scheduled', format('source blob %s of ended generation %s has no due date', b.id, g.id)
      FROM genq.blobs b JOIN genq.generations g ON g.id = b.generation_id
     WHERE b.role = 'source' AND b.deleted_at IS NULL AND b.expires_at IS NULL
       AND g.finished_at IS NOT NULL AND genq.policy_keep('source') IS NOT NULL
    UNION ALL
    SELECT 'deleted_generation_blob_kept', format('blob %s of deleted generation %s is not due', b.id, g.id)
      FROM genq.blobs b JOIN genq.generations g ON g.id = b.generation_id
     WHERE g.deleted_at IS NOT NULL AND b.deleted_at IS NULL
       AND (b.expires_at IS NULL OR b.expires_at > g.deleted_at)
    UNION ALL
    -- Every stored output of a succeeded generation is registered (so it will be deleted).
    SELECT 'output_not_registered', format('generation %s output %s is not in genq.blobs', g.id, o->>'key')
      FROM genq.generations g CROSS JOIN LATERAL jsonb_array_elements(
               CASE WHEN jsonb_typeof(g.output) = 'array' THEN g.output ELSE '[]'::jsonb END) o
     WHERE g.state = 'succeeded' AND o ? 'key' AND o ? 'store'
       AND NOT EXISTS (SELECT 1 FROM genq.blobs b
                        WHERE b.generation_id = g.id AND b.store = o->>'store' AND b.key = o->>'key')
    UNION ALL
    -- A scrubbed generation holds no input; a completed erasure left nothing live.
    SELECT 'scrubbed_input_kept', format('generation %s is scrubbed but has an input', g.id)
      FROM genq.generations g
     WHERE g.scrubbed_at IS NOT NULL AND (g.input <> '{}'::jsonb OR g.output IS NOT NULL)
    UNION ALL
    SELECT 'erased_blob_live', format('erasure %s completed but blob %s is live', r.id, b.id)
      FROM genq.erasure_requests r JOIN genq.blobs b ON b.user_id = r.subject
     WHERE r.completed_at IS NOT NULL AND b.deleted_at IS NULL AND b.created_at <= r.completed_at
$$;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA genq FROM PUBLIC;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'genq_backend') THEN
        GRANT EXECUTE ON FUNCTION
            genq.register_blob(text, text, text, text, uuid),
            genq.request_erasure(text),
            genq.request_export(text),
            genq.delete_generation(uuid)
        TO genq_backend;
        GRANT SELECT ON genq.blobs, genq.erasure_requests, genq.export_requests TO genq_backend;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'genq_worker') THEN
        GRANT ALL ON genq.retention_policies, genq.blobs, genq.deletion_log,
                     genq.erasure_requests, genq.export_requests TO genq_worker;
        GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA genq TO genq_worker;
    END IF;
END
$$;
