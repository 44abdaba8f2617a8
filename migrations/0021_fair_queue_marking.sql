-- Turning a queue fair marks its waiting keys in one statement.
--
-- genq.set_queue_fairness (0017) marked each distinct key of the queue's waiting jobs with
-- its own genq.mark_fair_key call, while holding the queue's claim lock, so every claim of
-- that queue waited for it. Now the keys go to genq.mark_fair_keys (0020) as one array, as
-- genq.enqueue_many's do: same result (each key waiting, a new key at the queue's clock, a
-- known one at least there), one statement. Measured, 100,000 waiting jobs over 20,000 keys
-- turned fair: 1.2 s before, 0.5 s after (most of it reading the jobs). Otherwise as in 0017.

CREATE OR REPLACE FUNCTION genq.set_queue_fairness(p_queue text, p_fair boolean, p_key_max_active integer)
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
        PERFORM genq.mark_fair_keys(array_agg(p_queue), array_agg(s.key))
           FROM (SELECT DISTINCT j.fairness_key AS key FROM genq.jobs j
                  WHERE j.queue = p_queue AND j.fairness_key <> ''
                    AND j.state IN ('available', 'retryable')) s;
    ELSIF p_fair THEN
        -- A raised default limit: parked keys may have room now.
        UPDATE genq.fair_keys k SET waiting = true, updated_at = now()
         WHERE k.queue = p_queue AND NOT k.waiting AND k.max_active IS NULL;
    END IF;
    IF p_fair AND p_key_max_active IS NOT NULL THEN
        PERFORM genq.fair_take_slots(p_queue, NULL);
    END IF;
END
$$;
