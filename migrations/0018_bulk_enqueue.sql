-- Bulk enqueue from typed arrays (issue 17, decision 52).
--
-- genq.enqueue_many(kind text[], payload jsonb[], ...) takes one array per column, one
-- element per job, so a client binds nine arrays instead of serialising one JSON document
-- that the server parses and takes apart again. It holds the rules of bulk enqueue
-- (validation, unique keys, fairness keys, NOTIFY); genq.enqueue_many(jsonb) turns its
-- document into the same arrays and calls it, so both paths share one implementation.
--
-- The rules, unchanged from 0013_fairness.sql: a job whose unique key is held by a
-- non-final job, or by an earlier job of the same batch, is skipped and not counted; a
-- queue gets one wake-up per statement (pg_notify, delivered at commit) when a job due now
-- was inserted into it; each key of a fair queue that got a job is marked once; errors
-- raise 22023 (54000 for a payload over 1 MiB) with the messages of 0013.
--
-- What is new: when no job of the batch has a unique key (nothing can conflict), the jobs
-- are inserted without ON CONFLICT and without RETURNING, and the queues to wake and the
-- keys to mark come from the input; a fair queue's flag is read once per batch rather
-- than joined per row, so rows are inserted (and get their ids) in input order.
--
-- The new signature gets the backend's EXECUTE from genq.secure_objects (it grants every
-- function named enqueue_many), which genq migrate runs after the migrations.

CREATE FUNCTION genq.enqueue_many(
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

    -- Each key of a fair queue once.
    IF v_keys IS NOT NULL THEN
        PERFORM genq.mark_fair_key(k->>0, k->>1) FROM unnest(v_keys) k;
    END IF;
    IF v_wake IS NOT NULL THEN
        FOREACH v_queue IN ARRAY v_wake LOOP
            PERFORM pg_notify('genq_jobs', v_queue);
        END LOOP;
    END IF;
    RETURN v_count;
END
$$;

-- genq.enqueue_many(jsonb): the document's jobs as arrays, in one jsonb_to_recordset pass,
-- handed to the function above. A document jsonb_to_recordset cannot read (an element that
-- is not an object, a value of the wrong type) is checked as 0013 checked it, so it fails
-- with the same error as before; only if those checks pass is the original error raised.
CREATE OR REPLACE FUNCTION genq.enqueue_many(jobs jsonb) RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_kind         text[];
    v_payload      jsonb[];
    v_queue        text[];
    v_run_at       timestamptz[];
    v_priority     integer[];
    v_max_attempts integer[];
    v_unique_key   text[];
    v_fairness_key text[];
    v_limit_group  text[];
BEGIN
    IF jobs IS NULL OR jsonb_typeof(jobs) <> 'array' THEN
        RAISE EXCEPTION 'genq.enqueue_many: expected a JSON array of jobs' USING ERRCODE = '22023';
    END IF;
    BEGIN
        SELECT coalesce(array_agg(x.kind), '{}'), array_agg(x.payload), array_agg(x.queue),
               array_agg(x.run_at), array_agg(x.priority), array_agg(x.max_attempts),
               array_agg(x.unique_key), array_agg(x.fairness_key), array_agg(x.limit_group)
          INTO v_kind, v_payload, v_queue, v_run_at, v_priority, v_max_attempts, v_unique_key,
               v_fairness_key, v_limit_group
          FROM jsonb_to_recordset(jobs) AS x(
              kind text, payload jsonb, queue text, run_at timestamptz, priority integer,
              max_attempts integer, unique_key text, fairness_key text, limit_group text);
    EXCEPTION WHEN data_exception THEN
        IF EXISTS (SELECT FROM jsonb_array_elements(jobs) j
                    WHERE jsonb_typeof(j) <> 'object' OR coalesce(j->>'kind', '') = '') THEN
            RAISE EXCEPTION 'genq.enqueue_many: every job needs a non-empty "kind"' USING ERRCODE = '22023';
        END IF;
        IF EXISTS (SELECT FROM jsonb_array_elements(jobs) j
                    WHERE jsonb_typeof(j->'max_attempts') = 'number'
                      AND (j->>'max_attempts')::numeric < 1) THEN
            RAISE EXCEPTION 'genq.enqueue_many: max_attempts must be at least 1' USING ERRCODE = '22023';
        END IF;
        RAISE;
    END;
    RETURN genq.enqueue_many(v_kind, v_payload, v_queue, v_run_at, v_priority, v_max_attempts,
                             v_unique_key, v_fairness_key, v_limit_group);
END
$$;
