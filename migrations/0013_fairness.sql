-- Fair claiming and fleet-wide limits (issue 13). Why and how: docs/fairness.md and
-- docs/decisions.md (33, 34, 35).
--
-- 1. Every job may carry a fairness key (`genq.jobs.fairness_key`, e.g. a user id) and a
--    limit group (`genq.jobs.limit_group`, e.g. 'render:fal'). Queues not configured fair
--    ignore both and claim exactly as before.
-- 2. A fair queue (`genq.queues.fair`) claims by weighted fair queueing over its keys
--    (`genq.fair_keys`, least-served first by virtual time); within a key by
--    (priority, run_at, id). Jobs without a key are stored with the key '' in a fair queue
--    and are taken first, in plain order (the product's own housekeeping, e.g. polls).
-- 3. Limits are counted in slots (`genq.fair_slots`): one row per claimed job of a fair
--    queue. A key holds at most `max_active` slots (the key's, else the queue's
--    `key_max_active`), a group at most `genq.limit_groups.max_active`. A slot is freed
--    when its job leaves `running` (any way: success, failure, snooze, cancel, rescue)
--    unless the worker kept it (`genq.keep_slot`); a kept slot is freed by
--    `genq.release_slot` (for generations: when the generation becomes final).

-- ---------------------------------------------------------------------------------------
-- Schema
-- ---------------------------------------------------------------------------------------

ALTER TABLE genq.jobs
    ADD COLUMN fairness_key text CHECK (octet_length(fairness_key) <= 255),
    ADD COLUMN limit_group  text CHECK (octet_length(limit_group) BETWEEN 1 AND 255);

ALTER TABLE genq.queues
    ADD COLUMN fair           boolean NOT NULL DEFAULT false,
    ADD COLUMN key_max_active integer CHECK (key_max_active IS NULL OR key_max_active >= 0),
    -- The queue's virtual clock: the least virtual time a claim served. A key that starts
    -- waiting again begins here, so idle time banks no credit.
    ADD COLUMN fair_clock     double precision NOT NULL DEFAULT 0;

-- Each key's claimable heads in key order. Only fair queues' jobs carry a key there (a
-- non-fair queue's jobs have one only if the caller passed it), so non-fair queues add
-- nothing to this index.
CREATE INDEX jobs_fair_idx ON genq.jobs (queue, fairness_key, priority, run_at, id)
    WHERE state IN ('available', 'retryable') AND fairness_key IS NOT NULL;

-- One row per (queue, key) that was ever seen in a fair queue, or given limits.
--   weight      share relative to other keys (2 = twice the jobs of a weight-1 key)
--   max_active  slots this key may hold at once; NULL = the queue's key_max_active
--   vtime       virtual time: grows by 1/weight per job claimed
--   waiting     the key may have claimable work and has room: the claim walks only
--               these, by vtime. Set by enqueue, by a job becoming claimable again, by a
--               freed slot and by a limit change; cleared by a claim that finds the key
--               empty or at its limit (under a row lock, so a concurrent setter wins).
CREATE TABLE genq.fair_keys (
    queue      text NOT NULL,
    key        text NOT NULL CHECK (octet_length(key) BETWEEN 1 AND 255),
    weight     real NOT NULL DEFAULT 1 CHECK (weight > 0 AND weight <= 1000),
    max_active integer CHECK (max_active IS NULL OR max_active >= 0),
    vtime      double precision NOT NULL DEFAULT 0,
    waiting    boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (queue, key)
);
CREATE INDEX fair_keys_waiting_idx ON genq.fair_keys (queue, vtime, key) WHERE waiting;

-- Limit groups shared by jobs of any key (e.g. 'render:fal': a provider account's renders).
-- max_active NULL = no limit.
CREATE TABLE genq.limit_groups (
    name       text PRIMARY KEY CHECK (octet_length(name) BETWEEN 1 AND 255),
    max_active integer CHECK (max_active IS NULL OR max_active >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Slots in use. job_id is the job holding it while it runs; NULL once kept (kept_at set):
-- then its owner (e.g. a generation, `genq.generations.fair_slot_id`) releases it.
CREATE TABLE genq.fair_slots (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue       text NOT NULL,
    key         text NOT NULL,
    grp         text,
    job_id      bigint,
    acquired_at timestamptz NOT NULL DEFAULT now(),
    kept_at     timestamptz,
    CHECK ((job_id IS NULL) = (kept_at IS NOT NULL))
);
CREATE INDEX fair_slots_key_idx ON genq.fair_slots (queue, key);
CREATE INDEX fair_slots_grp_idx ON genq.fair_slots (grp) WHERE grp IS NOT NULL;
CREATE UNIQUE INDEX fair_slots_job_idx ON genq.fair_slots (job_id) WHERE job_id IS NOT NULL;

-- The generation's render slot while it is in flight (kept by its submit job).
ALTER TABLE genq.generations ADD COLUMN fair_slot_id bigint;

-- The generation queue is fair by default (config `[queues.generation] fair` may change it).
INSERT INTO genq.queues (name, fair) VALUES ('generation', true)
ON CONFLICT (name) DO UPDATE SET fair = true, updated_at = now();
UPDATE genq.jobs SET fairness_key = ''
 WHERE queue = 'generation' AND fairness_key IS NULL AND state IN ('available', 'running', 'retryable');

-- ---------------------------------------------------------------------------------------
-- Keys: marking waiting, limits, weights
-- ---------------------------------------------------------------------------------------

-- genq.mark_fair_key: the key (may) have claimable work again. Takes FOR KEY SHARE on the
-- key's row first: a claim clears `waiting` only on rows it can lock FOR UPDATE (SKIP
-- LOCKED), so it never clears a flag a transaction still in flight relies on. Concurrent
-- markers of one waiting key do not block each other (KEY SHARE locks are shared).
CREATE FUNCTION genq.mark_fair_key(p_queue text, p_key text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_waiting boolean;
BEGIN
    IF p_key IS NULL OR p_key = '' THEN
        RETURN;
    END IF;
    SELECT k.waiting INTO v_waiting FROM genq.fair_keys k
     WHERE k.queue = p_queue AND k.key = p_key FOR KEY SHARE;
    IF NOT FOUND THEN
        INSERT INTO genq.fair_keys (queue, key, vtime, waiting)
        SELECT p_queue, p_key, coalesce(max(q.fair_clock), 0), true
          FROM genq.queues q WHERE q.name = p_queue
        ON CONFLICT (queue, key) DO NOTHING;
        IF FOUND THEN
            RETURN;
        END IF;
        SELECT k.waiting INTO v_waiting FROM genq.fair_keys k
         WHERE k.queue = p_queue AND k.key = p_key FOR KEY SHARE;
    END IF;
    IF NOT v_waiting THEN
        UPDATE genq.fair_keys k
           SET waiting = true,
               vtime = greatest(k.vtime, (SELECT q.fair_clock FROM genq.queues q WHERE q.name = p_queue)),
               updated_at = now()
         WHERE k.queue = p_queue AND k.key = p_key AND NOT k.waiting;
    END IF;
END
$$;

-- genq.set_fair_key: a key's weight and limit (NULL weight = 1, NULL max_active = the
-- queue's key_max_active). The one writer of weight/max_active: callers (e.g.
-- genq.set_user_limits) go through it, never write genq.fair_keys directly, so a raised
-- limit wakes the key's waiting work at once.
CREATE FUNCTION genq.set_fair_key(p_queue text, p_key text, p_weight real, p_max_active integer)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_queue IS NULL OR p_key IS NULL OR p_key = '' THEN
        RAISE EXCEPTION 'genq.set_fair_key: queue and key must be non-empty' USING ERRCODE = '22023';
    END IF;
    IF octet_length(p_key) > 255 THEN
        RAISE EXCEPTION 'genq.set_fair_key: key is over 255 bytes' USING ERRCODE = '22023';
    END IF;
    IF p_weight IS NOT NULL AND NOT (p_weight > 0 AND p_weight <= 1000) THEN
        RAISE EXCEPTION 'genq.set_fair_key: weight must be above 0 and at most 1000 (got %)', p_weight
            USING ERRCODE = '22023';
    END IF;
    IF p_max_active IS NOT NULL AND p_max_active < 0 THEN
        RAISE EXCEPTION 'genq.set_fair_key: max_active must be 0 or more, or NULL (got %)', p_max_active
            USING ERRCODE = '22023';
    END IF;
    INSERT INTO genq.queues (name) VALUES (p_queue) ON CONFLICT (name) DO NOTHING;
    INSERT INTO genq.fair_keys AS k (queue, key, weight, max_active, vtime, waiting)
    SELECT p_queue, p_key, coalesce(p_weight, 1), p_max_active, q.fair_clock, true
      FROM genq.queues q WHERE q.name = p_queue
    ON CONFLICT (queue, key) DO UPDATE
       SET weight = EXCLUDED.weight, max_active = EXCLUDED.max_active,
           waiting = true,
           vtime = CASE WHEN k.waiting THEN k.vtime ELSE greatest(k.vtime, EXCLUDED.vtime) END,
           updated_at = now();
END
$$;

-- genq.set_queue_fairness: turns fair claiming on or off for a queue and sets its default
-- per-key limit (NULL = none). Turning it on gives the queue's pending keyless jobs the key
-- '' and marks every key with pending work (one pass over the queue's pending jobs).
CREATE FUNCTION genq.set_queue_fairness(p_queue text, p_fair boolean, p_key_max_active integer)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_was boolean;
BEGIN
    IF p_fair IS NULL THEN
        RAISE EXCEPTION 'genq.set_queue_fairness: fair must be true or false' USING ERRCODE = '22023';
    END IF;
    IF p_key_max_active IS NOT NULL AND p_key_max_active < 0 THEN
        RAISE EXCEPTION 'genq.set_queue_fairness: key_max_active must be 0 or more, or NULL (got %)',
            p_key_max_active USING ERRCODE = '22023';
    END IF;
    INSERT INTO genq.queues (name) VALUES (p_queue) ON CONFLICT (name) DO NOTHING;
    -- Claims of this queue wait while it changes.
    PERFORM pg_advisory_xact_lock(hashtextextended('genq.claim:' || p_queue, 0));
    SELECT q.fair INTO v_was FROM genq.queues q WHERE q.name = p_queue FOR UPDATE;
    UPDATE genq.queues q
       SET fair = p_fair, key_max_active = p_key_max_active, updated_at = now()
     WHERE q.name = p_queue
       AND (q.fair, q.key_max_active) IS DISTINCT FROM (p_fair, p_key_max_active);
    IF p_fair AND NOT v_was THEN
        UPDATE genq.jobs j SET fairness_key = ''
         WHERE j.queue = p_queue AND j.fairness_key IS NULL
           AND j.state IN ('available', 'running', 'retryable');
        PERFORM genq.mark_fair_key(p_queue, s.key)
           FROM (SELECT DISTINCT j.fairness_key AS key FROM genq.jobs j
                  WHERE j.queue = p_queue AND j.fairness_key <> ''
                    AND j.state IN ('available', 'retryable')) s;
    ELSIF p_fair THEN
        -- A raised default limit: parked keys may have room now.
        UPDATE genq.fair_keys k SET waiting = true, updated_at = now()
         WHERE k.queue = p_queue AND NOT k.waiting AND k.max_active IS NULL;
    END IF;
END
$$;

-- genq.set_limit_group: a group's limit (NULL = none). A raised limit wakes every parked key
-- of the queues that use it at the next claim (they were parked only for their own limit,
-- so nothing to do here: group-blocked keys stay waiting).
CREATE FUNCTION genq.set_limit_group(p_name text, p_max_active integer) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_name IS NULL OR p_name = '' OR octet_length(p_name) > 255 THEN
        RAISE EXCEPTION 'genq.set_limit_group: name must be 1 to 255 bytes' USING ERRCODE = '22023';
    END IF;
    IF p_max_active IS NOT NULL AND p_max_active < 0 THEN
        RAISE EXCEPTION 'genq.set_limit_group: max_active must be 0 or more, or NULL (got %)', p_max_active
            USING ERRCODE = '22023';
    END IF;
    INSERT INTO genq.limit_groups AS g (name, max_active) VALUES (p_name, p_max_active)
    ON CONFLICT (name) DO UPDATE SET max_active = EXCLUDED.max_active, updated_at = now()
     WHERE g.max_active IS DISTINCT FROM EXCLUDED.max_active;
END
$$;

-- ---------------------------------------------------------------------------------------
-- Slots: kept, released, and freed with their job
-- ---------------------------------------------------------------------------------------

-- genq.keep_slot: the running job (id, attempt) keeps its slot past its end; returns the
-- slot id (NULL if the job holds none, or is no longer that attempt's). Call it in the
-- transaction that hands the slot to its new owner.
CREATE FUNCTION genq.keep_slot(p_job bigint, p_attempt integer) RETURNS bigint
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE genq.fair_slots s SET job_id = NULL, kept_at = now()
     WHERE s.job_id = p_job
       AND EXISTS (SELECT 1 FROM genq.jobs j
                    WHERE j.id = p_job AND j.attempt = p_attempt AND j.state = 'running')
    RETURNING s.id
$$;

-- genq.release_slot: frees a kept slot. True if this call freed it, false if it was already
-- free (idempotent: a slot is freed once, counts never go below zero).
CREATE FUNCTION genq.release_slot(p_slot bigint) RETURNS boolean
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH gone AS (DELETE FROM genq.fair_slots s WHERE s.id = p_slot RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM gone)
$$;

-- A job of a fair queue leaving `running` frees the slot it holds (unless kept); a job
-- becoming claimable again marks its key waiting.
CREATE FUNCTION genq.jobs_fair_transition() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF OLD.state = 'running' THEN
        DELETE FROM genq.fair_slots s WHERE s.job_id = OLD.id;
    END IF;
    IF NEW.state IN ('available', 'retryable') AND NEW.fairness_key <> '' THEN
        PERFORM genq.mark_fair_key(NEW.queue, NEW.fairness_key)
           FROM genq.queues q WHERE q.name = NEW.queue AND q.fair;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_fair_transition AFTER UPDATE OF state ON genq.jobs
    FOR EACH ROW
    WHEN (OLD.fairness_key IS NOT NULL AND OLD.state IS DISTINCT FROM NEW.state
          AND (OLD.state = 'running' OR NEW.state IN ('available', 'retryable')))
    EXECUTE FUNCTION genq.jobs_fair_transition();

-- A freed slot may give its key (and its group) room again: the key goes back into the
-- claim's walk, and the queue's daemons are woken at commit (a freed render slot is taken
-- at once, not at the next poll; one notification per transaction and queue).
CREATE FUNCTION genq.fair_slots_freed() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF OLD.key <> '' THEN
        PERFORM genq.mark_fair_key(OLD.queue, OLD.key);
    END IF;
    PERFORM pg_notify('genq_jobs', OLD.queue);
    RETURN NULL;
END
$$;

CREATE TRIGGER fair_slots_freed AFTER DELETE ON genq.fair_slots
    FOR EACH ROW EXECUTE FUNCTION genq.fair_slots_freed();

-- A generation that becomes final frees its render slot, in the same transaction (settle,
-- failure, cancellation, sweep, deletion: every path writes the state).
CREATE FUNCTION genq.generations_free_slot() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM genq.release_slot(NEW.fair_slot_id);
    NEW.fair_slot_id := NULL;
    RETURN NEW;
END
$$;

CREATE TRIGGER generations_free_slot BEFORE UPDATE OF state ON genq.generations
    FOR EACH ROW
    WHEN (NEW.fair_slot_id IS NOT NULL AND NEW.state IN ('succeeded', 'failed', 'cancelled'))
    EXECUTE FUNCTION genq.generations_free_slot();

-- ---------------------------------------------------------------------------------------
-- Enqueue with a fairness key and a limit group (bodies otherwise as in 0012_bounds.sql)
-- ---------------------------------------------------------------------------------------

-- The signature changes, so the function is replaced: grants an operator gave the old one
-- directly (e.g. Supabase's service_role, README) are carried over to the new one.
CREATE TEMP TABLE genq_0013_enqueue_grantees AS
SELECT DISTINCT a.grantee::regrole::text AS role
  FROM pg_catalog.pg_proc p, aclexplode(p.proacl) a
 WHERE p.oid = 'genq.enqueue(text, jsonb, text, timestamptz, integer, integer, text)'::regprocedure
   AND a.privilege_type = 'EXECUTE' AND a.grantee <> 0 AND a.grantee <> p.proowner;
DROP FUNCTION genq.enqueue(text, jsonb, text, timestamptz, integer, integer, text);
CREATE FUNCTION genq.enqueue(
    kind         text,
    payload      jsonb       DEFAULT '{}'::jsonb,
    queue        text        DEFAULT 'default',
    run_at       timestamptz DEFAULT now(),
    priority     integer     DEFAULT 0,
    max_attempts integer     DEFAULT 20,
    unique_key   text        DEFAULT NULL,
    fairness_key text        DEFAULT NULL,
    limit_group  text        DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_id    bigint;
    v_queue text := coalesce(enqueue.queue, 'default');
    v_fair  boolean;
    v_key   text := enqueue.fairness_key;
BEGIN
    IF enqueue.kind IS NULL OR length(enqueue.kind) = 0 THEN
        RAISE EXCEPTION 'genq.enqueue: kind must be a non-empty string' USING ERRCODE = '22023';
    END IF;
    -- The hot path: one test, the helpers (and their messages) only when it fails.
    IF octet_length(enqueue.kind) > 255 OR octet_length(enqueue.unique_key) > 255
       OR octet_length(enqueue.fairness_key) > 255 OR octet_length(enqueue.limit_group) > 255
       OR pg_column_size(enqueue.payload) > 1048576 THEN
        PERFORM genq.check_length('genq.enqueue', 'kind', enqueue.kind, 255);
        PERFORM genq.check_length('genq.enqueue', 'unique_key', enqueue.unique_key, 255);
        PERFORM genq.check_length('genq.enqueue', 'fairness_key', enqueue.fairness_key, 255);
        PERFORM genq.check_length('genq.enqueue', 'limit_group', enqueue.limit_group, 255);
        PERFORM genq.check_json_size('genq.enqueue', 'payload', enqueue.payload);
    END IF;
    IF enqueue.max_attempts IS NULL OR enqueue.max_attempts < 1 THEN
        RAISE EXCEPTION 'genq.enqueue: max_attempts must be at least 1 (got %)', enqueue.max_attempts
            USING ERRCODE = '22023';
    END IF;
    IF enqueue.limit_group = '' THEN
        RAISE EXCEPTION 'genq.enqueue: limit_group must be NULL or a non-empty string' USING ERRCODE = '22023';
    END IF;

    SELECT q.fair INTO v_fair FROM genq.queues q WHERE q.name = v_queue;
    IF NOT FOUND THEN
        INSERT INTO genq.queues (name) VALUES (v_queue) ON CONFLICT (name) DO NOTHING;
        SELECT q.fair INTO v_fair FROM genq.queues q WHERE q.name = v_queue;
    END IF;
    IF v_fair THEN
        v_key := coalesce(v_key, '');
    END IF;

    LOOP
        INSERT INTO genq.jobs (kind, payload, queue, run_at, priority, max_attempts, unique_key,
                               fairness_key, limit_group)
        VALUES (enqueue.kind, coalesce(enqueue.payload, '{}'::jsonb), v_queue,
                coalesce(enqueue.run_at, now()), coalesce(enqueue.priority, 0), enqueue.max_attempts,
                enqueue.unique_key, v_key, enqueue.limit_group)
        ON CONFLICT (unique_key)
            WHERE unique_key IS NOT NULL AND state IN ('available', 'running', 'retryable')
            DO NOTHING
        RETURNING id INTO v_id;

        IF v_id IS NOT NULL THEN
            IF v_fair AND v_key <> '' THEN
                PERFORM genq.mark_fair_key(v_queue, v_key);
            END IF;
            IF coalesce(enqueue.run_at, now()) <= now() THEN
                PERFORM pg_notify('genq_jobs', v_queue);
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

DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT role FROM genq_0013_enqueue_grantees LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION genq.enqueue(text, jsonb, text, timestamptz, integer, integer, text, text, text) TO %s', r.role);
    END LOOP;
END
$$;
DROP TABLE genq_0013_enqueue_grantees;

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
    v_bad_group    boolean;
    v_keys         jsonb[];
BEGIN
    IF jobs IS NULL OR jsonb_typeof(jobs) <> 'array' THEN
        RAISE EXCEPTION 'genq.enqueue_many: expected a JSON array of jobs' USING ERRCODE = '22023';
    END IF;
    -- One pass over the input for every check.
    SELECT bool_or(jsonb_typeof(j) <> 'object' OR coalesce(j->>'kind', '') = ''),
           bool_or(jsonb_typeof(j->'max_attempts') = 'number' AND (j->>'max_attempts')::numeric < 1),
           bool_or(pg_column_size(j->'payload') > 1048576),
           bool_or(octet_length(j->>'unique_key') > 255 OR octet_length(j->>'kind') > 255
                   OR octet_length(j->>'fairness_key') > 255 OR octet_length(j->>'limit_group') > 255),
           bool_or(j->>'limit_group' = '')
      INTO v_bad_kind, v_bad_attempts, v_big_payload, v_long_key, v_bad_group
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
        RAISE EXCEPTION 'genq.enqueue_many: a kind, unique_key, fairness_key or limit_group is over 255 bytes'
            USING ERRCODE = '22023';
    END IF;
    IF v_bad_group THEN
        RAISE EXCEPTION 'genq.enqueue_many: limit_group must be null or a non-empty string' USING ERRCODE = '22023';
    END IF;

    INSERT INTO genq.queues (name)
    SELECT DISTINCT coalesce(j->>'queue', 'default') FROM jsonb_array_elements(jobs) j
    ON CONFLICT (name) DO NOTHING;

    WITH input AS (
        SELECT * FROM jsonb_to_recordset(jobs) AS x(
            kind text, payload jsonb, queue text, run_at timestamptz,
            priority integer, max_attempts integer, unique_key text,
            fairness_key text, limit_group text)
    ), inserted AS (
        INSERT INTO genq.jobs (kind, payload, queue, run_at, priority, max_attempts, unique_key,
                               fairness_key, limit_group)
        SELECT i.kind, coalesce(i.payload, '{}'::jsonb), coalesce(i.queue, 'default'),
               coalesce(i.run_at, now()), coalesce(i.priority, 0), coalesce(i.max_attempts, 20),
               i.unique_key,
               CASE WHEN q.fair THEN coalesce(i.fairness_key, '') ELSE i.fairness_key END,
               i.limit_group
          FROM input i
          JOIN genq.queues q ON q.name = coalesce(i.queue, 'default')
        ON CONFLICT (unique_key)
            WHERE unique_key IS NOT NULL AND state IN ('available', 'running', 'retryable')
            DO NOTHING
        RETURNING queue, run_at, fairness_key
    )
    SELECT count(*), array_agg(DISTINCT queue) FILTER (WHERE run_at <= now()),
           array_agg(DISTINCT jsonb_build_array(queue, fairness_key)) FILTER (WHERE fairness_key <> '')
      INTO v_count, v_queues, v_keys
      FROM inserted;

    -- Each key of a fair queue once.
    IF v_keys IS NOT NULL THEN
        PERFORM genq.mark_fair_key(k->>0, k->>1)
           FROM unnest(v_keys) k
           JOIN genq.queues q ON q.name = k->>0 AND q.fair;
    END IF;

    IF v_queues IS NOT NULL THEN
        FOREACH v_queue IN ARRAY v_queues LOOP
            PERFORM pg_notify('genq_jobs', v_queue);
        END LOOP;
    END IF;
    RETURN v_count;
END
$$;

-- genq.enqueue_generation: as in 0012_bounds.sql; its submit job carries the user as the
-- fairness key and the provider account's render group (render:<provider>).
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
                         unique_key => 'generation.submit:' || v_id::text,
                         fairness_key => enqueue_generation.user_id,
                         limit_group => 'render:' || enqueue_generation.provider);
    RETURN v_id;
END
$$;

-- ---------------------------------------------------------------------------------------
-- The claim
-- ---------------------------------------------------------------------------------------

-- genq.claim_fair: the claim of a fair queue; genq.claim calls it under the queue's claim
-- lock (so the keys' virtual times and the slot counts it reads are those the previous
-- claimer committed). Steps:
--   1. keyless jobs ('') first, in plain order;
--   2. keys by virtual time (least served first): a key at its limit is set aside, else up
--      to its room of heads in (priority, run_at, id) order, the i-th with virtual finish
--      vtime + i/weight (heads of a full group passed over); the walk stops once `p_limit`
--      keys gave heads;
--   3. one statement: group room applied in virtual-finish order, the best `p_limit` taken,
--      leased, given slots, and their keys' vtime advanced by taken/weight;
--   4. keys found empty or full are parked (waiting = false) if, locked and re-read, they
--      still are.
-- Returns genq.claim's rows; key_backlog says whether the job's key had more due work than
-- this claim took (the "heavy" share of the wait-time metric).
CREATE FUNCTION genq.claim_fair(p_queue text, p_worker text, p_limit integer, p_lease_secs float8,
                                p_keymax integer)
RETURNS TABLE (id bigint, queue text, kind text, payload jsonb, attempt integer,
               max_attempts integer, priority integer, run_at timestamptz,
               created_at timestamptz, failures integer, fairness_key text, key_backlog boolean)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    k        record;
    h        record;
    v_ids    bigint[] := '{}';
    v_keys   text[] := '{}';
    v_grps   text[] := '{}';
    v_vf     float8[] := '{}';
    v_check  text[] := '{}';
    v_more   text[] := '{}';
    v_locked text[];
    v_heads  integer := 0;
    v_n      integer := 0;
    v_seen   integer;
    v_room   integer;
    v_active bigint;
    v_minv   float8;
    v_full   text[];
BEGIN
    -- Groups with no room: their heads are passed over, so a full group (one provider
    -- account) does not stop the claim from reaching work of other groups.
    SELECT coalesce(array_agg(g.name), '{}') INTO v_full FROM genq.limit_groups g
     WHERE g.max_active IS NOT NULL
       AND (SELECT count(*) FROM genq.fair_slots s WHERE s.grp = g.name) >= g.max_active;

    FOR h IN
        SELECT j.id, j.limit_group FROM genq.jobs j
         WHERE j.queue = p_queue AND j.fairness_key = ''
           AND j.state IN ('available', 'retryable') AND j.run_at <= now()
         ORDER BY j.priority, j.run_at, j.id
         LIMIT p_limit
    LOOP
        CONTINUE WHEN h.limit_group = ANY(v_full);
        v_n := v_n + 1;
        v_ids := v_ids || h.id;
        v_keys := v_keys || ''::text;
        v_grps := v_grps || h.limit_group;
        v_vf := v_vf || (v_n - 1e15)::float8;
    END LOOP;

    FOR k IN
        SELECT fk.key, fk.weight, fk.vtime, coalesce(fk.max_active, p_keymax) AS cap
          FROM genq.fair_keys fk
         WHERE fk.queue = p_queue AND fk.waiting
         ORDER BY fk.vtime, fk.key
    LOOP
        EXIT WHEN v_heads >= p_limit;
        v_room := p_limit;
        v_active := 0;
        IF k.cap IS NOT NULL THEN
            SELECT count(*) INTO v_active FROM genq.fair_slots s
             WHERE s.queue = p_queue AND s.key = k.key;
            IF v_active >= k.cap THEN
                v_check := v_check || k.key;
                CONTINUE;
            END IF;
            v_room := least(p_limit, k.cap - v_active)::integer;
        END IF;
        v_n := 0;
        v_seen := 0;
        FOR h IN
            SELECT j.id, j.limit_group FROM genq.jobs j
             WHERE j.queue = p_queue AND j.fairness_key = k.key
               AND j.state IN ('available', 'retryable') AND j.run_at <= now()
             ORDER BY j.priority, j.run_at, j.id
             LIMIT v_room + 1
        LOOP
            v_seen := v_seen + 1;
            IF v_n >= v_room THEN
                v_more := v_more || k.key;
                EXIT;
            END IF;
            CONTINUE WHEN h.limit_group = ANY(v_full);
            v_n := v_n + 1;
            v_ids := v_ids || h.id;
            v_keys := v_keys || k.key;
            v_grps := v_grps || h.limit_group;
            v_vf := v_vf || (k.vtime + v_n / k.weight)::float8;
        END LOOP;
        IF v_seen = 0 THEN
            v_check := v_check || k.key;
        ELSIF v_n > 0 THEN
            v_heads := v_heads + 1;
            v_minv := coalesce(v_minv, k.vtime);
            IF k.cap IS NOT NULL AND v_active + v_n >= k.cap THEN
                v_check := v_check || k.key;
            END IF;
        END IF;
    END LOOP;

    IF cardinality(v_ids) > 0 THEN
        RETURN QUERY
        WITH c AS (
            SELECT * FROM unnest(v_ids, v_keys, v_grps, v_vf) AS c(id, key, grp, vf)
        ), room AS (
            SELECT g.name,
                   g.max_active - (SELECT count(*) FROM genq.fair_slots s WHERE s.grp = g.name) AS room
              FROM genq.limit_groups g
             WHERE g.max_active IS NOT NULL AND g.name IN (SELECT c.grp FROM c)
        ), ranked AS (
            SELECT c.*, row_number() OVER (PARTITION BY c.grp ORDER BY c.vf, c.id) AS gi FROM c
        ), chosen AS (
            SELECT r.id FROM ranked r LEFT JOIN room ON room.name = r.grp
             WHERE room.name IS NULL OR r.gi <= room.room
             ORDER BY r.vf, r.id
             LIMIT p_limit
        ), locked AS (
            SELECT j.id FROM genq.jobs j
             WHERE j.id IN (SELECT chosen.id FROM chosen)
               AND j.state IN ('available', 'retryable')
               FOR UPDATE SKIP LOCKED
        ), upd AS (
            UPDATE genq.jobs j
               SET state = 'running',
                   attempt = j.attempt + 1,
                   attempted_at = now(),
                   lease_until = now() + make_interval(secs => p_lease_secs),
                   worker_id = p_worker
              FROM locked
             WHERE j.id = locked.id
            RETURNING j.id, j.queue, j.kind, j.payload, j.attempt, j.max_attempts, j.priority,
                      j.run_at, j.created_at, j.failures, j.fairness_key, j.limit_group
        ), slots AS (
            INSERT INTO genq.fair_slots (queue, key, grp, job_id)
            SELECT p_queue, u.fairness_key, u.limit_group, u.id FROM upd u
             WHERE u.fairness_key <> '' OR u.limit_group IS NOT NULL
            -- A slot its job kept through a bypassed trigger (see free_orphans) is reused.
            ON CONFLICT (job_id) WHERE job_id IS NOT NULL DO NOTHING
        ), taken AS (
            SELECT u.fairness_key AS key, count(*) AS n FROM upd u
             WHERE u.fairness_key <> '' GROUP BY 1
        ), fetched AS (
            SELECT c.key, count(*) AS n FROM c WHERE c.key <> '' GROUP BY 1
        ), adv AS (
            UPDATE genq.fair_keys fk SET vtime = fk.vtime + t.n / fk.weight, updated_at = now()
              FROM taken t
             WHERE fk.queue = p_queue AND fk.key = t.key
        )
        SELECT u.id, u.queue, u.kind, u.payload, u.attempt, u.max_attempts, u.priority,
               u.run_at, u.created_at, u.failures, u.fairness_key,
               CASE WHEN u.fairness_key = '' THEN NULL
                    ELSE u.fairness_key = ANY(v_more) OR f.n > t.n END
          FROM upd u
          LEFT JOIN taken t ON t.key = u.fairness_key
          LEFT JOIN fetched f ON f.key = u.fairness_key;
    END IF;

    IF v_minv IS NOT NULL THEN
        UPDATE genq.queues q SET fair_clock = v_minv WHERE q.name = p_queue AND q.fair_clock < v_minv;
    END IF;

    IF cardinality(v_check) > 0 THEN
        -- A key a marker has share-locked is skipped: it stays waiting (see mark_fair_key).
        SELECT array_agg(l.key) INTO v_locked FROM (
            SELECT fk.key FROM genq.fair_keys fk
             WHERE fk.queue = p_queue AND fk.key = ANY(v_check) AND fk.waiting
               FOR UPDATE SKIP LOCKED) l;
        IF v_locked IS NOT NULL THEN
            -- A new statement: sees what markers committed before the lock was taken.
            UPDATE genq.fair_keys fk SET waiting = false, updated_at = now()
             WHERE fk.queue = p_queue AND fk.key = ANY(v_locked)
               AND (NOT EXISTS (SELECT 1 FROM genq.jobs j
                                 WHERE j.queue = p_queue AND j.fairness_key = fk.key
                                   AND j.state IN ('available', 'retryable'))
                    OR (SELECT count(*) FROM genq.fair_slots s
                         WHERE s.queue = p_queue AND s.key = fk.key)
                       >= coalesce(fk.max_active, p_keymax));
        END IF;
    END IF;
END
$$;

-- genq.claim: as in 0008_recovery.sql for queues that are not fair (the same statement,
-- two more columns, NULL); a fair queue is claimed by genq.claim_fair under the claim lock.
DROP FUNCTION genq.claim(text, text, integer, float8);
CREATE FUNCTION genq.claim(p_queue text, p_worker text, p_limit integer, p_lease_secs float8)
RETURNS TABLE (id bigint, queue text, kind text, payload jsonb, attempt integer,
               max_attempts integer, priority integer, run_at timestamptz,
               created_at timestamptz, failures integer, fairness_key text, key_backlog boolean)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_paused  boolean;
    v_max     integer;
    v_fair    boolean;
    v_keymax  integer;
    v_running bigint;
    v_limit   integer := p_limit;
BEGIN
    SELECT q.paused, q.max_running, q.fair INTO v_paused, v_max, v_fair
      FROM genq.queues q WHERE q.name = p_queue;
    IF v_paused THEN
        RETURN;
    END IF;
    IF v_max IS NOT NULL OR v_fair THEN
        PERFORM pg_advisory_xact_lock(hashtextextended('genq.claim:' || p_queue, 0));
        SELECT q.paused, q.max_running, q.fair, q.key_max_active INTO v_paused, v_max, v_fair, v_keymax
          FROM genq.queues q WHERE q.name = p_queue;
        IF v_paused THEN
            RETURN;
        END IF;
        IF v_max IS NOT NULL THEN
            SELECT count(*) INTO v_running FROM genq.jobs j
             WHERE j.queue = p_queue AND j.state = 'running';
            v_limit := least(v_limit, greatest(v_max - v_running, 0)::integer);
        END IF;
    END IF;
    IF v_limit <= 0 THEN
        RETURN;
    END IF;

    IF v_fair THEN
        RETURN QUERY SELECT * FROM genq.claim_fair(p_queue, p_worker, v_limit, p_lease_secs, v_keymax);
        RETURN;
    END IF;

    RETURN QUERY
    WITH picked AS (
        SELECT j.id
          FROM genq.jobs j
         WHERE j.queue = p_queue
           AND j.state IN ('available', 'retryable')
           AND j.run_at <= now()
         ORDER BY j.priority, j.run_at, j.id
         LIMIT v_limit
           FOR UPDATE SKIP LOCKED
    )
    UPDATE genq.jobs j
       SET state = 'running',
           attempt = j.attempt + 1,
           attempted_at = now(),
           lease_until = now() + make_interval(secs => p_lease_secs),
           worker_id = p_worker
      FROM picked
     WHERE j.id = picked.id
    RETURNING j.id, j.queue, j.kind, j.payload, j.attempt, j.max_attempts, j.priority,
              j.run_at, j.created_at, j.failures, NULL::text, NULL::boolean;
END
$$;

-- ---------------------------------------------------------------------------------------
-- Visibility and safety nets
-- ---------------------------------------------------------------------------------------

-- genq.job_wait_reason: why a job waiting to be claimed is not running yet (NULL when it is
-- not waiting). For operators (`genq job show`, the admin API): names the limit that is full.
CREATE FUNCTION genq.job_wait_reason(p_job bigint) RETURNS text
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    j       genq.jobs%ROWTYPE;
    q       genq.queues%ROWTYPE;
    v_cap   integer;
    v_n     bigint;
    v_max   integer;
    v_keys  bigint;
BEGIN
    SELECT * INTO j FROM genq.jobs WHERE id = p_job;
    IF NOT FOUND OR j.state NOT IN ('available', 'retryable') THEN
        RETURN NULL;
    END IF;
    SELECT * INTO q FROM genq.queues WHERE name = j.queue;
    IF q.paused THEN
        RETURN format('queue %s is paused', j.queue);
    END IF;
    IF j.run_at > now() THEN
        RETURN format('scheduled: due at %s', j.run_at);
    END IF;
    IF q.max_running IS NOT NULL THEN
        SELECT count(*) INTO v_n FROM genq.jobs r WHERE r.queue = j.queue AND r.state = 'running';
        IF v_n >= q.max_running THEN
            RETURN format('queue %s is at its running cap (%s of %s running)', j.queue, v_n, q.max_running);
        END IF;
    END IF;
    IF NOT q.fair THEN
        RETURN 'waiting for a free worker';
    END IF;
    IF j.fairness_key <> '' THEN
        SELECT coalesce(k.max_active, q.key_max_active) INTO v_cap
          FROM genq.fair_keys k WHERE k.queue = j.queue AND k.key = j.fairness_key;
        IF v_cap IS NOT NULL THEN
            SELECT count(*) INTO v_n FROM genq.fair_slots s WHERE s.queue = j.queue AND s.key = j.fairness_key;
            IF v_n >= v_cap THEN
                RETURN format('key limit: key %s has %s of %s slots in use', j.fairness_key, v_n, v_cap);
            END IF;
        END IF;
    END IF;
    IF j.limit_group IS NOT NULL THEN
        SELECT g.max_active INTO v_max FROM genq.limit_groups g WHERE g.name = j.limit_group;
        IF v_max IS NOT NULL THEN
            SELECT count(*) INTO v_n FROM genq.fair_slots s WHERE s.grp = j.limit_group;
            IF v_n >= v_max THEN
                RETURN format('group limit: group %s has %s of %s slots in use', j.limit_group, v_n, v_max);
            END IF;
        END IF;
    END IF;
    IF j.fairness_key = '' THEN
        RETURN 'waiting for a free worker (keyless jobs are taken first)';
    END IF;
    SELECT count(*) INTO v_keys FROM genq.fair_keys k WHERE k.queue = j.queue AND k.waiting;
    RETURN format('waiting for its turn: %s keys have work waiting', v_keys);
END
$$;

-- Pending submits of generations enqueued before this migration get their user and render
-- group, so the backlog at upgrade is shared out fairly too. (Generations already in
-- flight hold no render slot: they do not count against max_rendering until they end.)
UPDATE genq.jobs j
   SET fairness_key = g.user_id, limit_group = 'render:' || g.provider
  FROM genq.generations g
 WHERE j.queue = 'generation' AND j.kind = 'generation.submit'
   AND j.state IN ('available', 'retryable')
   AND j.payload->>'generation_id' = g.id::text;
SELECT genq.mark_fair_key('generation', s.key)
  FROM (SELECT DISTINCT j.fairness_key AS key FROM genq.jobs j
         WHERE j.queue = 'generation' AND j.fairness_key <> ''
           AND j.state IN ('available', 'retryable')) s;

-- Kept render slots are found from their generation.
CREATE INDEX generations_fair_slot_idx ON genq.generations (fair_slot_id) WHERE fair_slot_id IS NOT NULL;
