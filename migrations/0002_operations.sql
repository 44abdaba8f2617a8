-- Operations: claims that honour pause and fleet-wide concurrency caps, and the sampled
-- statistics behind the fleet-wide metrics.

-- genq.claim: the one claim statement. A paused queue yields nothing; a queue with
-- max_running serialises its claimers on an advisory lock for the length of the claim
-- (each statement below sees what the previous claimer committed), so the cap holds across
-- every daemon. Queues without a cap take the lock-free path.
CREATE FUNCTION genq.claim(p_queue text, p_worker text, p_limit integer, p_lease_secs float8)
RETURNS TABLE (id bigint, queue text, kind text, payload jsonb, attempt integer,
               max_attempts integer, priority integer, run_at timestamptz,
               created_at timestamptz)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_paused  boolean;
    v_max     integer;
    v_running bigint;
    v_limit   integer := p_limit;
BEGIN
    SELECT q.paused, q.max_running INTO v_paused, v_max FROM genq.queues q WHERE q.name = p_queue;
    IF v_paused THEN
        RETURN;
    END IF;
    IF v_max IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(hashtextextended('genq.claim:' || p_queue, 0));
        SELECT q.paused, q.max_running INTO v_paused, v_max FROM genq.queues q WHERE q.name = p_queue;
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
              j.run_at, j.created_at;
END
$$;

-- Sampled statistics. One daemon per interval wins the right to sample (the UPDATE of the
-- single stats_meta row) and writes the results here; every daemon exports them.
CREATE TABLE genq.stats_meta (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    sampled_at  timestamptz NOT NULL DEFAULT '-infinity',
    last_job_id bigint NOT NULL DEFAULT 0
);
INSERT INTO genq.stats_meta DEFAULT VALUES;

CREATE TABLE genq.queue_stats (
    queue               text PRIMARY KEY,
    available           bigint NOT NULL,
    scheduled           bigint NOT NULL,
    running             bigint NOT NULL,
    retryable           bigint NOT NULL,
    oldest_available_at timestamptz,
    sampled_at          timestamptz NOT NULL
);

-- Cumulative jobs enqueued per queue and kind, counted by id ranges (cheap: a primary key
-- range scan over the rows added since the last sample). A job inserted by a transaction
-- that commits after a later-numbered one was sampled is not counted.
CREATE TABLE genq.enqueued_totals (
    queue text NOT NULL,
    kind  text NOT NULL,
    total bigint NOT NULL,
    PRIMARY KEY (queue, kind)
);

-- Live counts of the non-final jobs per queue, read through the partial indexes. One
-- definition for the sampler below and for `genq queue list`.
CREATE VIEW genq.queue_counts AS
SELECT j.queue,
       count(*) FILTER (WHERE j.state = 'available' AND j.run_at <= now()) AS available,
       count(*) FILTER (WHERE j.state = 'available' AND j.run_at > now()) AS scheduled,
       count(*) FILTER (WHERE j.state = 'running') AS running,
       count(*) FILTER (WHERE j.state = 'retryable') AS retryable,
       min(j.run_at) FILTER (WHERE j.state IN ('available', 'retryable') AND j.run_at <= now())
           AS oldest_available_at
  FROM genq.jobs j
 WHERE j.state IN ('available', 'running', 'retryable')
 GROUP BY j.queue;

CREATE FUNCTION genq.sample_stats(p_min_interval_secs float8) RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_last bigint;
    v_max  bigint;
BEGIN
    UPDATE genq.stats_meta SET sampled_at = now()
     WHERE sampled_at <= now() - make_interval(secs => p_min_interval_secs)
    RETURNING last_job_id INTO v_last;
    IF NOT FOUND THEN
        RETURN false;
    END IF;

    SELECT max(id) INTO v_max FROM genq.jobs;
    IF v_max IS NOT NULL AND v_max > v_last THEN
        INSERT INTO genq.enqueued_totals AS t (queue, kind, total)
        SELECT j.queue, j.kind, count(*) FROM genq.jobs j
         WHERE j.id > v_last AND j.id <= v_max
         GROUP BY 1, 2
        ON CONFLICT (queue, kind) DO UPDATE SET total = t.total + EXCLUDED.total;
        UPDATE genq.stats_meta SET last_job_id = v_max;
    END IF;

    DELETE FROM genq.queue_stats;
    INSERT INTO genq.queue_stats
    SELECT q.name,
           coalesce(s.available, 0), coalesce(s.scheduled, 0), coalesce(s.running, 0),
           coalesce(s.retryable, 0), s.oldest_available_at, now()
      FROM genq.queues q
      LEFT JOIN genq.queue_counts s ON s.queue = q.name;
    RETURN true;
END
$$;
