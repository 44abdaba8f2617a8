-- Credits and generations: an append-only ledger of holds, captures and releases, the
-- per-user balance it implies, the generation rows the pipeline drives, and the SQL API the
-- product's backend calls. Why it is shaped this way: docs/credits.md and docs/decisions.md.
--
-- Money rules, enforced here and audited by genq.check_ledger():
--   * every operation that moves a user's credits first locks that user's genq.accounts row
--     (FOR UPDATE), so concurrent calls for one user serialise and can never overdraw;
--   * genq.accounts is the materialised balance; genq.ledger is the history it must equal:
--       available = grants + adjusts - holds + releases
--       held      = holds - captures - releases
--   * a generation has exactly one hold (its cost, taken by genq.enqueue_generation) and at
--     most one capture or one release of that hold, never both (unique index below).
-- Amounts are whole credits (bigint), never fractions.

CREATE TYPE genq.ledger_kind AS ENUM (
    'grant',    -- credits bought or given; keyed by an idempotency key (e.g. the payment id)
    'hold',     -- a generation's cost set aside at enqueue: available -> held
    'capture',  -- the hold is spent (the generation succeeded): held -> gone
    'release',  -- the hold is returned (failed or cancelled): held -> available
    'adjust'    -- an operator's correction, either sign; keyed like a grant
);

-- The materialised balance of one user. Every money operation locks this row first.
-- user_id is the product's identity, opaque text (e.g. a Supabase auth uuid).
CREATE TABLE genq.accounts (
    user_id    text PRIMARY KEY CHECK (length(user_id) > 0),
    available  bigint NOT NULL DEFAULT 0 CONSTRAINT accounts_available_nonnegative CHECK (available >= 0),
    held       bigint NOT NULL DEFAULT 0 CONSTRAINT accounts_held_nonnegative CHECK (held >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The ledger: one row per movement, never updated or deleted (trigger below). Amounts are
-- non-negative and the kind says which way they move; only 'adjust' may be negative (a
-- correction that takes credits away). Holds, captures and releases name their generation;
-- grants and adjusts carry an idempotency key. generation_id has no foreign key on purpose:
-- the ledger outlives generation rows that retention deletes.
CREATE TABLE genq.ledger (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         text NOT NULL,
    kind            genq.ledger_kind NOT NULL,
    amount          bigint NOT NULL,
    generation_id   uuid,
    idempotency_key text,
    note            text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ledger_amount_sign CHECK (kind = 'adjust' OR amount >= 0),
    CONSTRAINT ledger_generation_entries
        CHECK ((kind IN ('hold', 'capture', 'release')) = (generation_id IS NOT NULL)),
    CONSTRAINT ledger_keyed_entries
        CHECK (kind NOT IN ('grant', 'adjust') OR coalesce(length(idempotency_key), 0) > 0)
);

-- A generation has at most one hold, one capture and one release: a retried job or a
-- duplicate webhook can never debit (or refund) twice.
CREATE UNIQUE INDEX ledger_generation_entry_idx ON genq.ledger (generation_id, kind)
    WHERE kind IN ('hold', 'capture', 'release');
-- A grant or adjustment is applied once per key (grant and adjust share the key space).
CREATE UNIQUE INDEX ledger_idempotency_key_idx ON genq.ledger (idempotency_key)
    WHERE kind IN ('grant', 'adjust');
-- A user's history (export, de-identification).
CREATE INDEX ledger_user_idx ON genq.ledger (user_id, id);

-- Append-only. The one exception: an UPDATE that changes nothing but user_id, which is how
-- the privacy work de-identifies a deleted account's payment records (kept 5-7 years)
-- without touching amounts. Mistakes are corrected with an 'adjust' entry, never by editing.
-- TRUNCATE is refused too. (A superuser can still disable the trigger; check_ledger audits.)
CREATE FUNCTION genq.ledger_append_only() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND (to_jsonb(NEW) - 'user_id') = (to_jsonb(OLD) - 'user_id') THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'genq.ledger is append-only: % is not allowed', TG_OP
        USING ERRCODE = '55000',
              HINT = 'Correct a balance with an adjust entry. Only user_id may be updated (de-identification).';
END
$$;

CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE ON genq.ledger
    FOR EACH ROW EXECUTE FUNCTION genq.ledger_append_only();
CREATE TRIGGER ledger_no_truncate BEFORE TRUNCATE ON genq.ledger
    FOR EACH STATEMENT EXECUTE FUNCTION genq.ledger_append_only();

CREATE TYPE genq.generation_state AS ENUM (
    'queued',      -- held and waiting for its generation.submit job; not sent anywhere yet
    'submitting',  -- a submit attempt is (or may be) in flight at the provider
    'submitted',   -- the provider accepted it (provider_request_id is set)
    'succeeded',   -- final: output stored, hold captured
    'failed',      -- final: hold released
    'cancelled'    -- final: hold released
);

-- One row per generation request. The pipeline (src/jobs/) drives state; the SQL API below
-- creates rows and cancels them.
CREATE TABLE genq.generations (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id             text NOT NULL CHECK (length(user_id) > 0),
    provider            text NOT NULL CONSTRAINT generations_provider_known
                            CHECK (provider IN ('fal', 'byteplus', 'replicate')),
    model               text NOT NULL CHECK (length(model) > 0),
    input               jsonb NOT NULL,
    cost                bigint NOT NULL CHECK (cost >= 0),
    idempotency_key     text NOT NULL CHECK (length(idempotency_key) > 0),
    state               genq.generation_state NOT NULL DEFAULT 'queued',
    provider_request_id text,
    provider_meta       jsonb NOT NULL DEFAULT '{}'::jsonb,
    submit_attempts     integer NOT NULL DEFAULT 0,
    submitting_since    timestamptz,
    submitted_at        timestamptz,
    output              jsonb,
    error               text,
    cancel_requested_at timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    finished_at         timestamptz,
    CONSTRAINT generations_user_idempotency_key UNIQUE (user_id, idempotency_key)
);

-- In-flight generations by age, for a sweeper that reconciles stale ones.
CREATE INDEX generations_in_flight_idx ON genq.generations (state, submitted_at)
    WHERE state IN ('submitting', 'submitted');
-- Webhooks find their generation by the provider's request id.
CREATE INDEX generations_provider_request_idx ON genq.generations (provider, provider_request_id)
    WHERE provider_request_id IS NOT NULL;

-- updated_at follows every change; finished_at is filled in when a row reaches a final
-- state without one (the pipeline may set it itself).
CREATE FUNCTION genq.generations_touch() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    NEW.updated_at := now();
    IF NEW.state IN ('succeeded', 'failed', 'cancelled') AND NEW.finished_at IS NULL THEN
        NEW.finished_at := now();
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER generations_touch BEFORE UPDATE ON genq.generations
    FOR EACH ROW EXECUTE FUNCTION genq.generations_touch();

-- genq.lock_account: the one place a user's balance row is created (if new) and locked
-- for the rest of the transaction; returns the available credits. Every money operation
-- takes this lock first, so concurrent calls for one user run one after the other.
CREATE FUNCTION genq.lock_account(p_user text) RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_available bigint;
BEGIN
    INSERT INTO genq.accounts (user_id) VALUES (p_user) ON CONFLICT (user_id) DO NOTHING;
    SELECT a.available INTO v_available FROM genq.accounts a WHERE a.user_id = p_user FOR UPDATE;
    RETURN v_available;
END
$$;

-- genq.grant_credits: adds credits to a user's available balance, once per idempotency key
-- (use the payment's id). A repeated call with the same key, user and amount grants nothing
-- and returns the current balance; the same key with another user or amount is an error.
-- Returns the available balance after the call.
CREATE FUNCTION genq.grant_credits(user_id text, amount bigint, idempotency_key text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_available bigint;
    v_entry     genq.ledger%ROWTYPE;
BEGIN
    IF grant_credits.user_id IS NULL OR length(grant_credits.user_id) = 0 THEN
        RAISE EXCEPTION 'genq.grant_credits: user_id must be a non-empty string' USING ERRCODE = '22023';
    END IF;
    IF grant_credits.amount IS NULL OR grant_credits.amount <= 0 THEN
        RAISE EXCEPTION 'genq.grant_credits: amount must be a positive number of credits (got %)',
            coalesce(grant_credits.amount::text, 'NULL') USING ERRCODE = '22023';
    END IF;
    IF grant_credits.idempotency_key IS NULL OR length(grant_credits.idempotency_key) = 0 THEN
        RAISE EXCEPTION 'genq.grant_credits: idempotency_key must be a non-empty string (e.g. the payment id)'
            USING ERRCODE = '22023';
    END IF;

    v_available := genq.lock_account(grant_credits.user_id);

    INSERT INTO genq.ledger (user_id, kind, amount, idempotency_key)
    VALUES (grant_credits.user_id, 'grant', grant_credits.amount, grant_credits.idempotency_key)
    ON CONFLICT (idempotency_key) WHERE kind IN ('grant', 'adjust') DO NOTHING;
    IF FOUND THEN
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

-- genq.credit_balance: a user's balance; zeros for a user genq has never seen.
CREATE FUNCTION genq.credit_balance(user_id text)
RETURNS TABLE (available bigint, held bigint)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(a.available, 0)::bigint, coalesce(a.held, 0)::bigint
      FROM (SELECT 1) AS one
      LEFT JOIN genq.accounts a ON a.user_id = $1
$$;

-- genq.enqueue_generation: in the caller's transaction, holds `cost` credits and creates the
-- generation with its generation.submit job. Idempotent per (user_id, idempotency_key): a
-- repeated call returns the first call's generation id (whatever its state, and whatever
-- the other arguments now say) and holds nothing more. Without enough available credits it
-- raises SQLSTATE GQ402 and writes nothing.
CREATE FUNCTION genq.enqueue_generation(
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
    IF enqueue_generation.user_id IS NULL OR length(enqueue_generation.user_id) = 0 THEN
        RAISE EXCEPTION 'genq.enqueue_generation: user_id must be a non-empty string' USING ERRCODE = '22023';
    END IF;
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

-- genq.settle_hold: the one place a hold is settled, by a capture (held -> spent) or a
-- release (held -> available), behind capture_hold and release_hold below. Returns true if
-- this call settled, false if the same settlement was already recorded (idempotent). Raises
-- 55000 if the hold was settled the other way or there is none, P0002 for an unknown
-- generation. Does not change the generation's state.
CREATE FUNCTION genq.settle_hold(p_generation uuid, p_kind genq.ledger_kind, p_note text)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_user   text;
    v_amount bigint;
    v_other  genq.ledger_kind := CASE p_kind WHEN 'capture' THEN 'release' ELSE 'capture' END;
BEGIN
    IF p_kind NOT IN ('capture', 'release') THEN
        RAISE EXCEPTION 'genq.settle_hold: % is not a settlement', p_kind USING ERRCODE = '22023';
    END IF;
    -- Lock order everywhere: generation row, then account row.
    SELECT g.user_id INTO v_user FROM genq.generations g WHERE g.id = p_generation FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'generation % not found', p_generation USING ERRCODE = 'P0002';
    END IF;
    PERFORM genq.lock_account(v_user);

    SELECT l.amount INTO v_amount FROM genq.ledger l
     WHERE l.generation_id = p_generation AND l.kind = 'hold';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'genq.%_hold: generation % has no hold to %', p_kind, p_generation, p_kind
            USING ERRCODE = '55000';
    END IF;
    IF EXISTS (SELECT 1 FROM genq.ledger l WHERE l.generation_id = p_generation AND l.kind = v_other) THEN
        RAISE EXCEPTION 'genq.%_hold: the hold of generation % was already %d; it cannot be %d',
            p_kind, p_generation, v_other, p_kind USING ERRCODE = '55000';
    END IF;

    INSERT INTO genq.ledger (user_id, kind, amount, generation_id, note)
    VALUES (v_user, p_kind, v_amount, p_generation, p_note)
    ON CONFLICT (generation_id, kind) WHERE kind IN ('hold', 'capture', 'release') DO NOTHING;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE genq.accounts a
       SET held = a.held - v_amount,
           available = a.available + CASE p_kind WHEN 'release' THEN v_amount ELSE 0 END,
           updated_at = now()
     WHERE a.user_id = v_user;
    RETURN true;
END
$$;

-- genq.capture_hold: spends a generation's hold. Call it in the transaction that marks the
-- generation succeeded. See genq.settle_hold for results and errors.
CREATE FUNCTION genq.capture_hold(generation_id uuid) RETURNS boolean
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT genq.settle_hold(generation_id, 'capture', NULL) $$;

-- genq.release_hold: returns a generation's hold to the user, with the reason in the ledger
-- note. Call it in the transaction that marks the generation failed or cancelled. See
-- genq.settle_hold for results and errors.
CREATE FUNCTION genq.release_hold(generation_id uuid, reason text) RETURNS boolean
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT genq.settle_hold(generation_id, 'release', reason) $$;

-- genq.cancel_generation: cancels a generation as far as the database can; returns the
-- resulting state.
--   queued, submit job pending  -> the submit job is cancelled, the generation is cancelled
--                                  and its hold released, all now: returns 'cancelled'.
--   queued, submit job running  -> cancel_requested_at is set; the submit job sees it and
--                                  cancels instead of submitting: returns 'queued'.
--   submitting or submitted     -> cancel_requested_at is set and a generation.cancel job is
--                                  enqueued (the daemon cancels at the provider, then marks
--                                  the generation cancelled and releases): returns the state.
--   final                       -> nothing changes: returns the state.
-- Unknown id: SQLSTATE P0002.
CREATE FUNCTION genq.cancel_generation(id uuid) RETURNS genq.generation_state
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_state genq.generation_state;
    v_key   text := 'generation.submit:' || cancel_generation.id::text;
BEGIN
    SELECT g.state INTO v_state FROM genq.generations g WHERE g.id = cancel_generation.id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'generation % not found', cancel_generation.id USING ERRCODE = 'P0002';
    END IF;

    IF v_state = 'queued' THEN
        -- Cancel the pending submit job first: once it is cancelled no daemon can claim it,
        -- and a claim that won the race shows up as running in the check that follows.
        UPDATE genq.jobs j SET state = 'cancelled', finished_at = now(), lease_until = NULL
         WHERE j.unique_key = v_key AND j.state IN ('available', 'retryable');
        IF EXISTS (SELECT 1 FROM genq.jobs j WHERE j.unique_key = v_key AND j.state = 'running') THEN
            UPDATE genq.generations g SET cancel_requested_at = coalesce(g.cancel_requested_at, now())
             WHERE g.id = cancel_generation.id;
            RETURN v_state;
        END IF;
        UPDATE genq.generations g
           SET state = 'cancelled', finished_at = now(),
               cancel_requested_at = coalesce(g.cancel_requested_at, now())
         WHERE g.id = cancel_generation.id;
        PERFORM genq.release_hold(cancel_generation.id, 'cancelled before submission');
        RETURN 'cancelled';
    END IF;

    IF v_state IN ('submitting', 'submitted') THEN
        UPDATE genq.generations g SET cancel_requested_at = coalesce(g.cancel_requested_at, now())
         WHERE g.id = cancel_generation.id;
        PERFORM genq.enqueue('generation.cancel', jsonb_build_object('generation_id', cancel_generation.id),
                             queue => 'generation',
                             unique_key => 'generation.cancel:' || cancel_generation.id::text);
    END IF;
    RETURN v_state;
END
$$;

-- genq.check_ledger: audits the money invariants; one row per violation, none when healthy.
-- Reads every ledger and account row: run it from monitoring or after an incident, not on a
-- hot path. Some checks guard what constraints already make impossible (a dropped index or a
-- disabled trigger would show up here).
CREATE FUNCTION genq.check_ledger() RETURNS TABLE (invariant text, detail text)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH implied AS (
        SELECT l.user_id,
               sum(CASE WHEN l.kind IN ('grant', 'adjust', 'release') THEN l.amount
                        WHEN l.kind = 'hold' THEN -l.amount ELSE 0 END) AS available,
               sum(CASE WHEN l.kind = 'hold' THEN l.amount
                        WHEN l.kind IN ('capture', 'release') THEN -l.amount ELSE 0 END) AS held
          FROM genq.ledger l
         GROUP BY l.user_id
    ), violations (invariant, detail) AS (
        SELECT 'duplicate_' || l.kind::text,
               format('generation %s has %s %s entries', l.generation_id, count(*), l.kind)
          FROM genq.ledger l
         WHERE l.kind IN ('hold', 'capture', 'release')
         GROUP BY l.generation_id, l.kind
        HAVING count(*) > 1
        UNION ALL
        SELECT DISTINCT 'capture_and_release',
               format('generation %s has both a capture and a release', c.generation_id)
          FROM genq.ledger c
          JOIN genq.ledger r ON r.generation_id = c.generation_id AND r.kind = 'release'
         WHERE c.kind = 'capture'
        UNION ALL
        SELECT 'generation_without_hold', format('generation %s (cost %s) has no hold', g.id, g.cost)
          FROM genq.generations g
         WHERE NOT EXISTS (SELECT 1 FROM genq.ledger l WHERE l.generation_id = g.id AND l.kind = 'hold')
        UNION ALL
        SELECT 'settlement_without_hold', format('generation %s has a %s but no hold', s.generation_id, s.kind)
          FROM genq.ledger s
         WHERE s.kind IN ('capture', 'release')
           AND NOT EXISTS (SELECT 1 FROM genq.ledger h WHERE h.generation_id = s.generation_id AND h.kind = 'hold')
        UNION ALL
        SELECT 'hold_amount_mismatch', format('generation %s costs %s but its hold is %s', g.id, g.cost, h.amount)
          FROM genq.generations g
          JOIN genq.ledger h ON h.generation_id = g.id AND h.kind = 'hold'
         WHERE h.amount <> g.cost
        UNION ALL
        SELECT 'settlement_amount_mismatch',
               format('generation %s has a %s of %s for a hold of %s', s.generation_id, s.kind, s.amount, h.amount)
          FROM genq.ledger s
          JOIN genq.ledger h ON h.generation_id = s.generation_id AND h.kind = 'hold'
         WHERE s.kind IN ('capture', 'release') AND s.amount <> h.amount
        UNION ALL
        SELECT 'negative_balance', format('account %s: available %s, held %s', a.user_id, a.available, a.held)
          FROM genq.accounts a
         WHERE a.available < 0 OR a.held < 0
        UNION ALL
        SELECT 'balance_mismatch',
               format('account %s: available %s, held %s; the ledger implies available %s, held %s',
                      coalesce(a.user_id, i.user_id), coalesce(a.available, 0), coalesce(a.held, 0),
                      coalesce(i.available, 0), coalesce(i.held, 0))
          FROM genq.accounts a
          FULL JOIN implied i ON i.user_id = a.user_id
         WHERE coalesce(a.available, 0) <> coalesce(i.available, 0)
            OR coalesce(a.held, 0) <> coalesce(i.held, 0)
        UNION ALL
        SELECT 'succeeded_without_capture', format('generation %s succeeded but its hold was not captured', g.id)
          FROM genq.generations g
         WHERE g.state = 'succeeded'
           AND NOT EXISTS (SELECT 1 FROM genq.ledger l WHERE l.generation_id = g.id AND l.kind = 'capture')
        UNION ALL
        SELECT 'final_without_release', format('generation %s is %s but its hold was not released', g.id, g.state)
          FROM genq.generations g
         WHERE g.state IN ('failed', 'cancelled')
           AND NOT EXISTS (SELECT 1 FROM genq.ledger l WHERE l.generation_id = g.id AND l.kind = 'release')
        UNION ALL
        SELECT 'settled_before_final', format('generation %s is %s but already has a %s', g.id, g.state, l.kind)
          FROM genq.generations g
          JOIN genq.ledger l ON l.generation_id = g.id AND l.kind IN ('capture', 'release')
         WHERE g.state NOT IN ('succeeded', 'failed', 'cancelled')
    )
    SELECT v.invariant, v.detail FROM violations v ORDER BY v.invariant, v.detail
$$;

-- genq.enqueue and genq.enqueue_many run with their owner's rights from now on, like the
-- functions above, so the backend's role needs EXECUTE on them and no table rights.
ALTER FUNCTION genq.enqueue(text, jsonb, text, timestamptz, integer, integer, text) SECURITY DEFINER;
ALTER FUNCTION genq.enqueue_many(jsonb) SECURITY DEFINER;

-- Privileges: nothing in schema genq is usable by PUBLIC. Postgres grants EXECUTE on new
-- functions to PUBLIC by default; that is revoked for the existing functions (including
-- 0001/0002's enqueue, enqueue_many, claim, sample_stats) and for future ones.
REVOKE ALL ON SCHEMA genq FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA genq FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA genq FROM PUBLIC;
ALTER DEFAULT PRIVILEGES IN SCHEMA genq REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

-- Two group roles, if the migrating role may create roles (they are cluster-wide, so they
-- may already exist, and parallel migrations of several databases may race to create them):
--   genq_backend: the product's backend. Enqueue jobs and generations, grant credits, read a
--                 balance, cancel a generation. No table rights at all.
--   genq_worker:  the daemons. Everything in schema genq, except TRUNCATE of the ledger.
-- Grant them to your login roles: GRANT genq_backend TO my_api; GRANT genq_worker TO genq.
DO $roles$
DECLARE
    v_role text;
BEGIN
    FOREACH v_role IN ARRAY ARRAY['genq_backend', 'genq_worker'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = v_role) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', v_role);
            EXCEPTION
                WHEN duplicate_object OR unique_violation THEN
                    NULL; -- another database's migration created it a moment ago
                WHEN insufficient_privilege THEN
                    RAISE NOTICE 'genq: role % was not created (the migrating role may not create roles); create it and grant its privileges as described in docs/credits.md', v_role;
            END;
        END IF;
    END LOOP;

    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'genq_backend') THEN
        GRANT USAGE ON SCHEMA genq TO genq_backend;
        GRANT EXECUTE ON FUNCTION
            genq.enqueue(text, jsonb, text, timestamptz, integer, integer, text),
            genq.enqueue_many(jsonb),
            genq.enqueue_generation(text, text, text, jsonb, bigint, text),
            genq.grant_credits(text, bigint, text),
            genq.credit_balance(text),
            genq.cancel_generation(uuid)
        TO genq_backend;
    END IF;

    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'genq_worker') THEN
        GRANT USAGE ON SCHEMA genq TO genq_worker;
        GRANT ALL ON ALL TABLES IN SCHEMA genq TO genq_worker;
        GRANT ALL ON ALL SEQUENCES IN SCHEMA genq TO genq_worker;
        GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA genq TO genq_worker;
        REVOKE TRUNCATE ON genq.ledger FROM genq_worker;
        -- Objects that later migrations create (as the same migrating role) follow.
        ALTER DEFAULT PRIVILEGES IN SCHEMA genq GRANT ALL ON TABLES TO genq_worker;
        ALTER DEFAULT PRIVILEGES IN SCHEMA genq GRANT ALL ON SEQUENCES TO genq_worker;
        ALTER DEFAULT PRIVILEGES IN SCHEMA genq GRANT EXECUTE ON FUNCTIONS TO genq_worker;
    END IF;
END
$roles$;
