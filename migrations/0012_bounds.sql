-- Bounds on what the SQL API accepts, so bad input gets a clear error at the call and never
-- poisons later calls (an oversized grant overflowing every later balance update) or
-- fails forever later (a blob key no store can delete). Why: docs/credits.md (limits).
--
-- One helper per kind of check, raising the SQLSTATE documented in docs/credits.md:
--   22023 a text argument too long or malformed, 22003 an amount out of range or a balance
--   that would pass its limit, 54000 a JSON argument over its size limit.
-- Limits: credits per call 1..1,000,000,000 (cost 0..); balance (available + held)
-- 1,000,000,000,000; user ids and keys 255 bytes; JSON inputs and payloads 1 MiB as jsonb; blob keys
-- 950 bytes (like src/storage validate_key).

-- A user id: 1-255 bytes, usable as one segment of a store key.
CREATE FUNCTION genq.check_user_id(p_fn text, p_user text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF coalesce(octet_length(p_user), 0) NOT BETWEEN 1 AND 255
       OR p_user ~ '[/\\[:cntrl:]]' OR p_user IN ('.', '..') THEN
        RAISE EXCEPTION '%: user_id must be 1 to 255 bytes without "/", "\", control characters, and not "." or ".."', p_fn
            USING ERRCODE = '22023';
    END IF;
END
$$;

-- A text argument of at most p_max bytes (NULL passes: callers check required ones).
CREATE FUNCTION genq.check_length(p_fn text, p_name text, p_value text, p_max integer) RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF octet_length(p_value) > p_max THEN
        RAISE EXCEPTION '%: % is % bytes; at most % are accepted', p_fn, p_name, octet_length(p_value), p_max
            USING ERRCODE = '22023';
    END IF;
END
$$;

-- A number of credits one call may move: at most 1,000,000,000.
CREATE FUNCTION genq.check_credits(p_fn text, p_name text, p_value bigint) RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_value > 1000000000 THEN
        RAISE EXCEPTION '%: % is % credits; at most 1000000000 per call', p_fn, p_name, p_value
            USING ERRCODE = '22003';
    END IF;
END
$$;

-- A JSON argument of at most 1 MiB, measured as Postgres stores it (pg_column_size, the
-- jsonb's binary size: no text to build, so it costs nothing on the enqueue path).
CREATE FUNCTION genq.check_json_size(p_fn text, p_name text, p_value jsonb) RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF pg_column_size(p_value) > 1048576 THEN
        RAISE EXCEPTION '%: % is % bytes as jsonb; at most 1 MiB (1048576 bytes) is accepted', p_fn, p_name,
            pg_column_size(p_value) USING ERRCODE = '54000';
    END IF;
END
$$;

-- What is wrong with a blob key, or NULL. The rules of src/storage validate_key (a Vercel
-- Blob URL is judged by its path), and the key must lie in its owner's space: a path
-- segment equal to the user id (`outputs/<user>/...`, `uploads/<user>/...`), or under
-- `exports/` for an export archive (its key names no user).
CREATE FUNCTION genq.blob_key_problem(p_role text, p_store text, p_user text, p_key text) RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_path text := p_key;
BEGIN
    IF octet_length(p_key) > 950 THEN
        RETURN 'longer than 950 bytes';
    END IF;
    IF p_store = 'vercel' AND p_key ~ '^https?://[^/]+/' THEN
        v_path := regexp_replace(p_key, '^https?://[^/]+/', '');
    END IF;
    IF v_path LIKE '/%' THEN
        RETURN 'an absolute path';
    END IF;
    IF v_path ~ '[\\[:cntrl:]]' THEN
        RETURN 'a backslash or control character';
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(string_to_array(v_path, '/')) s WHERE s IN ('', '.', '..')) THEN
        RETURN 'an empty, "." or ".." path segment';
    END IF;
    IF p_role = 'export' THEN
        IF v_path NOT LIKE 'exports/%' THEN
            RETURN 'an export archive outside exports/';
        END IF;
    ELSIF strpos('/' || v_path || '/', '/' || p_user || '/') = 0 THEN
        RETURN 'outside the user''s space (no path segment is the user id)';
    END IF;
    RETURN NULL;
END
$$;

-- The SQL API with the bounds above (bodies otherwise as in 0001, 0003, 0006 and 0007).

CREATE OR REPLACE FUNCTION genq.enqueue(
    kind         text,
    payload      jsonb       DEFAULT '{}'::jsonb,
    queue        text        DEFAULT 'default',
    run_at       timestamptz DEFAULT now(),
    priority     integer     DEFAULT 0,
    max_attempts integer     DEFAULT 20,
    unique_key   text        DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_id bigint;
BEGIN
    IF enqueue.kind IS NULL OR length(enqueue.kind) = 0 THEN
        RAISE EXCEPTION 'genq.enqueue: kind must be a non-empty string' USING ERRCODE = '22023';
    END IF;
    -- The hot path: one test, the helpers (and their messages) only when it fails.
    IF octet_length(enqueue.kind) > 255 OR octet_length(enqueue.unique_key) > 255
       OR pg_column_size(enqueue.payload) > 1048576 THEN
        PERFORM genq.check_length('genq.enqueue', 'kind', enqueue.kind, 255);
        PERFORM genq.check_length('genq.enqueue', 'unique_key', enqueue.unique_key, 255);
        PERFORM genq.check_json_size('genq.enqueue', 'payload', enqueue.payload);
    END IF;
    IF enqueue.max_attempts IS NULL OR enqueue.max_attempts < 1 THEN
        RAISE EXCEPTION 'genq.enqueue: max_attempts must be at least 1 (got %)', enqueue.max_attempts
            USING ERRCODE = '22023';
    END IF;

    INSERT INTO genq.queues (name) VALUES (coalesce(enqueue.queue, 'default'))
        ON CONFLICT (name) DO NOTHING;

    LOOP
        INSERT INTO genq.jobs (kind, payload, queue, run_at, priority, max_attempts, unique_key)
        VALUES (enqueue.kind, coalesce(enqueue.payload, '{}'::jsonb), coalesce(enqueue.queue, 'default'),
                coalesce(enqueue.run_at, now()), coalesce(enqueue.priority, 0), enqueue.max_attempts,
                enqueue.unique_key)
        ON CONFLICT (unique_key)
            WHERE unique_key IS NOT NULL AND state IN ('available', 'running', 'retryable')
            DO NOTHING
        RETURNING id INTO v_id;

        IF v_id IS NOT NULL THEN
            IF coalesce(enqueue.run_at, now()) <= now() THEN
                PERFORM pg_notify('genq_jobs', coalesce(enqueue.queue, 'default'));
            END IF;
            RETURN v_id;
        END IF;

        -- The key is held: return the holder. If it became final in between, insert again.
        SELECT id INTO v_id FROM genq.jobs j
         WHERE j.unique_key = enqueue.unique_key
           AND j.state IN ('available', 'running', 'retryable');
        IF v_id IS NOT NULL THEN
            RETURN v_id;
        END IF;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION genq.enqueue_many(jobs jsonb) RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count        bigint;
    v_queues       text[];
    v_queue        text;
    v_bad_kind     boolean;
    v_bad_attempts boolean;
    v_big_payload  boolean;
    v_long_key     boolean;
BEGIN
    IF jobs IS NULL OR jsonb_typeof(jobs) <> 'array' THEN
        RAISE EXCEPTION 'genq.enqueue_many: expected a JSON array of jobs' USING ERRCODE = '22023';
    END IF;
    -- One pass over the input for both checks.
    SELECT bool_or(jsonb_typeof(j) <> 'object' OR coalesce(j->>'kind', '') = ''),
           bool_or(jsonb_typeof(j->'max_attempts') = 'number' AND (j->>'max_attempts')::numeric < 1),
           bool_or(pg_column_size(j->'payload') > 1048576),
           bool_or(octet_length(j->>'unique_key') > 255 OR octet_length(j->>'kind') > 255)
      INTO v_bad_kind, v_bad_attempts, v_big_payload, v_long_key
      FROM jsonb_array_elements(jobs) j;
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
        RAISE EXCEPTION 'genq.enqueue_many: a kind or unique_key is over 255 bytes' USING ERRCODE = '22023';
    END IF;

    INSERT INTO genq.queues (name)
    SELECT DISTINCT coalesce(j->>'queue', 'default') FROM jsonb_array_elements(jobs) j
    ON CONFLICT (name) DO NOTHING;

    WITH input AS (
        SELECT * FROM jsonb_to_recordset(jobs) AS x(
            kind text, payload jsonb, queue text, run_at timestamptz,
            priority integer, max_attempts integer, unique_key text)
    ), inserted AS (
        INSERT INTO genq.jobs (kind, payload, queue, run_at, priority, max_attempts, unique_key)
        SELECT i.kind, coalesce(i.payload, '{}'::jsonb), coalesce(i.queue, 'default'),
               coalesce(i.run_at, now()), coalesce(i.priority, 0), coalesce(i.max_attempts, 20),
               i.unique_key
          FROM input i
        ON CONFLICT (unique_key)
            WHERE unique_key IS NOT NULL AND state IN ('available', 'running', 'retryable')
            DO NOTHING
        RETURNING queue, run_at
    )
    SELECT count(*), array_agg(DISTINCT queue) FILTER (WHERE run_at <= now())
      INTO v_count, v_queues
      FROM inserted;

    IF v_queues IS NOT NULL THEN
        FOREACH v_queue IN ARRAY v_queues LOOP
            PERFORM pg_notify('genq_jobs', v_queue);
        END LOOP;
    END IF;
    RETURN v_count;
END
$$;

CREATE OR REPLACE FUNCTION genq.grant_credits(user_id text, amount bigint, idempotency_key text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_available bigint;
    v_held      bigint;
    v_entry     genq.ledger%ROWTYPE;
BEGIN
    PERFORM genq.check_user_id('genq.grant_credits', grant_credits.user_id);
    IF grant_credits.amount IS NULL OR grant_credits.amount <= 0 THEN
        RAISE EXCEPTION 'genq.grant_credits: amount must be a positive number of credits (got %)',
            coalesce(grant_credits.amount::text, 'NULL') USING ERRCODE = '22023';
    END IF;
    PERFORM genq.check_credits('genq.grant_credits', 'amount', grant_credits.amount);
    PERFORM genq.check_length('genq.grant_credits', 'idempotency_key', grant_credits.idempotency_key, 255);
    IF grant_credits.idempotency_key IS NULL OR length(grant_credits.idempotency_key) = 0 THEN
        RAISE EXCEPTION 'genq.grant_credits: idempotency_key must be a non-empty string (e.g. the payment id)'
            USING ERRCODE = '22023';
    END IF;

    v_available := genq.lock_account(grant_credits.user_id);
    SELECT a.held INTO v_held FROM genq.accounts a WHERE a.user_id = grant_credits.user_id;

    INSERT INTO genq.ledger (user_id, kind, amount, idempotency_key)
    VALUES (grant_credits.user_id, 'grant', grant_credits.amount, grant_credits.idempotency_key)
    ON CONFLICT (idempotency_key) WHERE kind IN ('grant', 'adjust') DO NOTHING;
    IF FOUND THEN
        IF v_available + v_held + grant_credits.amount > 1000000000000 THEN
            RAISE EXCEPTION 'genq.grant_credits: the balance of % would pass 1000000000000 credits (available %, held %, grant %)',
                grant_credits.user_id, v_available, v_held, grant_credits.amount USING ERRCODE = '22003';
        END IF;
        UPDATE genq.accounts a
           SET available = a.available + grant_credits.amount, updated_at = now()
         WHERE a.user_id = grant_credits.user_id
        RETURNING a.available INTO v_available;
        RETURN v_available;
    END IF;

    -- The key was used before: the same grant again is a no-op, anything else is a mistake.
    SELECT * INTO v_entry FROM genq.ledger l
     WHERE l.idempotency_key = grant_credits.idempotency_key AND l.kind IN ('grant', 'adjust');
    IF v_entry.kind <> 'grant' OR v_entry.user_id <> grant_credits.user_id
       OR v_entry.amount <> grant_credits.amount THEN
        RAISE EXCEPTION 'genq.grant_credits: idempotency key "%" was already used for another entry (a different user, amount or kind)',
            grant_credits.idempotency_key
            USING ERRCODE = '22023',
                  HINT = 'A new grant needs a new key; repeating a grant must repeat its user and amount.';
    END IF;
    RETURN v_available;
END
$$;

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
                         unique_key => 'generation.submit:' || v_id::text);
    RETURN v_id;
END
$$;

CREATE OR REPLACE FUNCTION genq.record_invoice(txn_id text, order_number text, user_id text, credits bigint)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v genq.payments%ROWTYPE;
BEGIN
    IF coalesce(length(record_invoice.txn_id), 0) = 0
       OR coalesce(length(record_invoice.order_number), 0) = 0
       OR coalesce(length(record_invoice.user_id), 0) = 0 THEN
        RAISE EXCEPTION 'genq.record_invoice: txn_id, order_number and user_id must be non-empty'
            USING ERRCODE = '22023';
    END IF;
    IF record_invoice.credits IS NULL OR record_invoice.credits <= 0 THEN
        RAISE EXCEPTION 'genq.record_invoice: credits must be positive (got %)',
            coalesce(record_invoice.credits::text, 'NULL') USING ERRCODE = '22023';
    END IF;
    PERFORM genq.check_user_id('genq.record_invoice', record_invoice.user_id);
    PERFORM genq.check_length('genq.record_invoice', 'txn_id', record_invoice.txn_id, 255);
    PERFORM genq.check_length('genq.record_invoice', 'order_number', record_invoice.order_number, 255);
    PERFORM genq.check_credits('genq.record_invoice', 'credits', record_invoice.credits);
    INSERT INTO genq.payments (txn_id, order_number, user_id, credits)
    VALUES (record_invoice.txn_id, record_invoice.order_number, record_invoice.user_id,
            record_invoice.credits)
    ON CONFLICT (txn_id) DO NOTHING;
    IF FOUND THEN
        RETURN;
    END IF;
    SELECT * INTO v FROM genq.payments p WHERE p.txn_id = record_invoice.txn_id;
    IF v.order_number <> record_invoice.order_number OR v.user_id <> record_invoice.user_id
       OR v.credits <> record_invoice.credits THEN
        RAISE EXCEPTION 'genq.record_invoice: txn_id % is already recorded with other values',
            record_invoice.txn_id USING ERRCODE = '22023';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION genq.register_blob(user_id text, role text, store text, key text,
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
    v_problem text;
BEGIN
    PERFORM genq.check_user_id('genq.register_blob', register_blob.user_id);
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
    v_problem := genq.blob_key_problem(register_blob.role, register_blob.store, register_blob.user_id, register_blob.key);
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION 'genq.register_blob: key % refused: %', quote_literal(left(register_blob.key, 200)), v_problem
            USING ERRCODE = '22023',
                  HINT = 'Keys are relative paths with a segment equal to the user id (e.g. uploads/<user_id>/<file>); export archives live under exports/.';
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

CREATE OR REPLACE FUNCTION genq.request_erasure(user_id text) RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_id bigint;
BEGIN
    PERFORM genq.check_user_id('genq.request_erasure', request_erasure.user_id);
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

CREATE OR REPLACE FUNCTION genq.request_export(user_id text) RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_id bigint;
BEGIN
    PERFORM genq.check_user_id('genq.request_export', request_export.user_id);
    INSERT INTO genq.export_requests (user_id) VALUES (request_export.user_id) RETURNING id INTO v_id;
    PERFORM genq.enqueue('privacy.export', jsonb_build_object('request_id', v_id),
                         queue => 'retention', unique_key => 'privacy.export:' || v_id);
    RETURN v_id;
END
$$;

-- Rights for everything above, and ownership by this database's owner role.
SELECT genq.secure_objects(current_setting('genq.role_prefix', true));

-- Rights for the functions above (genq migrate runs this after every migration too).
SELECT genq.secure_objects(current_setting('genq.role_prefix', true));
