-- genq queue engine: jobs, queues, periodic slots, and the SQL enqueue API.
-- Everything lives in schema genq; the migration history table does too (see src/db.rs).

CREATE TYPE genq.job_state AS ENUM (
    'available',  -- waiting for run_at, then claimable
    'running',    -- claimed by a worker that holds a lease
    'retryable',  -- failed an attempt; claimable again at run_at
    'completed',  -- final: handler succeeded
    'discarded',  -- final: out of attempts, permanent error, unknown kind or bad payload
    'cancelled'   -- final: cancelled by an operator or the application
);

-- One row per queue. Appears on first enqueue (or from config); the claim consults `paused`,
-- so pausing holds across every daemon even if a control notification is missed.
CREATE TABLE genq.queues (
    name         text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_.:-]{1,128}$'),
    paused       boolean NOT NULL DEFAULT false,
    paused_at    timestamptz,
    pause_reason text,
    max_running  integer CHECK (max_running IS NULL OR max_running >= 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE genq.jobs (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue        text NOT NULL DEFAULT 'default',
    kind         text NOT NULL CHECK (length(kind) BETWEEN 1 AND 255),
    payload      jsonb NOT NULL DEFAULT '{}'::jsonb,
    state        genq.job_state NOT NULL DEFAULT 'available',
    priority     integer NOT NULL DEFAULT 0,
    attempt      integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL DEFAULT 20 CHECK (max_attempts >= 1),
    run_at       timestamptz NOT NULL DEFAULT now(),
    lease_until  timestamptz,
    worker_id    text,
    unique_key   text,
    errors       jsonb NOT NULL DEFAULT '[]'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    attempted_at timestamptz,
    finished_at  timestamptz
);

-- The hot table churns: vacuum it by row count, not by a fraction of its size, so dead
-- tuples from claims and completions never pile up in front of the claim index.
ALTER TABLE genq.jobs SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 5000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 20000,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 20000
);

-- Exactly the claimable rows, in claim order. No INCLUDE columns: dead weight under FOR UPDATE.
CREATE INDEX jobs_claimable_idx ON genq.jobs (queue, priority, run_at, id)
    WHERE state IN ('available', 'retryable');
-- Running rows: lease rescue scans by lease_until, fleet-wide concurrency caps count per queue.
CREATE INDEX jobs_running_idx ON genq.jobs (queue, lease_until)
    WHERE state = 'running';
-- A unique key is held only while its job is not final; afterwards it is free again.
CREATE UNIQUE INDEX jobs_unique_key_idx ON genq.jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('available', 'running', 'retryable');
-- Pruning walks finished rows by age.
CREATE INDEX jobs_finished_idx ON genq.jobs (finished_at)
    WHERE state IN ('completed', 'cancelled', 'discarded');

-- The last time slot each periodic job was enqueued for. Every daemon races to advance it;
-- the one whose UPDATE wins enqueues, so N daemons produce exactly one job per slot.
CREATE TABLE genq.periodic_slots (
    name       text PRIMARY KEY,
    last_slot  timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- genq.enqueue: insert one job inside the caller's transaction.
-- A unique_key held by a job that is not final returns that job's id instead.
CREATE FUNCTION genq.enqueue(
    kind         text,
    payload      jsonb       DEFAULT '{}'::jsonb,
    queue        text        DEFAULT 'default',
    run_at       timestamptz DEFAULT now(),
    priority     integer     DEFAULT 0,
    max_attempts integer     DEFAULT 20,
    unique_key   text        DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_id bigint;
BEGIN
    IF enqueue.kind IS NULL OR length(enqueue.kind) = 0 THEN
        RAISE EXCEPTION 'genq.enqueue: kind must be a non-empty string' USING ERRCODE = '22023';
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

-- genq.enqueue_many: bulk insert from a JSON array of objects with the same fields as
-- genq.enqueue ({"kind": ..., "payload": ..., "queue": ..., "run_at": ..., "priority": ...,
-- "max_attempts": ..., "unique_key": ...}). Jobs whose unique_key is held are skipped.
-- Returns the number of jobs inserted. One notification per queue, never per row.
CREATE FUNCTION genq.enqueue_many(jobs jsonb) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count        bigint;
    v_queues       text[];
    v_queue        text;
    v_bad_kind     boolean;
    v_bad_attempts boolean;
BEGIN
    IF jobs IS NULL OR jsonb_typeof(jobs) <> 'array' THEN
        RAISE EXCEPTION 'genq.enqueue_many: expected a JSON array of jobs' USING ERRCODE = '22023';
    END IF;
    -- One pass over the input for both checks.
    SELECT bool_or(jsonb_typeof(j) <> 'object' OR coalesce(j->>'kind', '') = ''),
           bool_or(jsonb_typeof(j->'max_attempts') = 'number' AND (j->>'max_attempts')::numeric < 1)
      INTO v_bad_kind, v_bad_attempts
      FROM jsonb_array_elements(jobs) j;
    IF v_bad_kind THEN
        RAISE EXCEPTION 'genq.enqueue_many: every job needs a non-empty "kind"' USING ERRCODE = '22023';
    END IF;
    IF v_bad_attempts THEN
        RAISE EXCEPTION 'genq.enqueue_many: max_attempts must be at least 1' USING ERRCODE = '22023';
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
