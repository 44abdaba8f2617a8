-- Recovery from faults (issue 10): the retry backoff counts failures, not claims.
--
-- `attempt` counts every claim (it is the fencing token and only grows; snoozes and
-- hand-backs raise max_attempts instead of lowering it). The backoff exponent is
-- `failures`: attempts that ended in a recorded error (a returned error, a timeout, a
-- panic, a lost lease). Snoozes, hand-backs and infrastructure interruptions (the database
-- went away while the job ran) leave it unchanged. An operator retry resets it.
ALTER TABLE genq.jobs ADD COLUMN failures integer NOT NULL DEFAULT 0 CHECK (failures >= 0);

-- Jobs still pending keep the failures they already had: one error entry per failure.
UPDATE genq.jobs SET failures = jsonb_array_length(errors)
 WHERE state IN ('available', 'running', 'retryable') AND errors <> '[]'::jsonb;

-- genq.claim also returns `failures` (the executor computes the next backoff from it).
-- The body is unchanged otherwise (see 0002_operations.sql).
DROP FUNCTION genq.claim(text, text, integer, float8);
CREATE FUNCTION genq.claim(p_queue text, p_worker text, p_limit integer, p_lease_secs float8)
RETURNS TABLE (id bigint, queue text, kind text, payload jsonb, attempt integer,
               max_attempts integer, priority integer, run_at timestamptz,
               created_at timestamptz, failures integer)
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
              j.run_at, j.created_at, j.failures;
END
$$;

REVOKE EXECUTE ON FUNCTION genq.claim(text, text, integer, float8) FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'genq_worker') THEN
        GRANT EXECUTE ON FUNCTION genq.claim(text, text, integer, float8) TO genq_worker;
    END IF;
END
$$;
