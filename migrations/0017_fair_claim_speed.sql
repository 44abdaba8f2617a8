-- The fair claim at deep backlogs and many keys (issue 13, last part). Why: docs/fairness.md
-- ("How a fair claim picks", "Cost") and docs/decisions.md (50). Semantics of 0013 are kept:
-- keyless jobs first, keys by virtual time, priority within a key, weights, key and group
-- limits, parking. What changes is the work per claim:
--
-- 1. Set-based: each round of the walk is one statement (the next waiting keys by virtual
--    time, their rooms, their heads through a LATERAL join), built with array_agg instead
--    of one query per key and O(n) array appends.
-- 2. Bounded reads: when at least as many keys wait as the walk visits, a key fetches only
--    the heads it can win in this claim (virtual finish at most the latest first turn of
--    the keys visited), not up to the claim size: 100,000 keys x 10 jobs read ~2 rows a key
--    taken, not 11.
-- 3. A quantum: claims of 200 jobs or more, over at least as many waiting keys as the walk
--    visits, serve a key a turn of up to Q = least(10, claim size / 100) jobs (Q x weight in
--    share), so one key row update serves Q jobs. Smaller claims (the generation queue's)
--    keep Q = 1, the exact interleaving of 0013.
-- 4. Slots only where a limit applies: a claimed job takes a slot when it names a group or
--    its key has a limit (its own, or the queue's default). A limit set later counts the
--    key's running jobs at once: genq.set_fair_key and genq.set_queue_fairness give every
--    running job of the key (queue) that holds no slot one (genq.fair_take_slots), under the
--    queue's claim lock, so no claim in flight is missed.
-- 5. A key whose every due head was offered is checked for parking in the same claim,
--    instead of costing the next claim a visit.

-- genq.fair_take_slots: gives each running job of `p_queue` (of key `p_key`; NULL = every
-- key) that holds no slot one, as the claim would have had the limit applied then. Callers
-- hold the queue's claim lock. The job rows are share-locked first: a job that ended
-- meanwhile is not running on re-check and gets none; one that ends later frees it.
CREATE FUNCTION genq.fair_take_slots(p_queue text, p_key text) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_n bigint;
BEGIN
    INSERT INTO genq.fair_slots (queue, key, grp, job_id)
    SELECT r.queue, r.fairness_key, r.limit_group, r.id
      FROM (SELECT j.id, j.queue, j.fairness_key, j.limit_group FROM genq.jobs j
             WHERE j.queue = p_queue AND j.state = 'running' AND j.fairness_key <> ''
               AND (p_key IS NULL OR j.fairness_key = p_key)
               AND NOT EXISTS (SELECT 1 FROM genq.fair_slots s WHERE s.job_id = j.id)
               FOR SHARE OF j) r
    ON CONFLICT (job_id) WHERE job_id IS NOT NULL DO NOTHING;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
END
$$;

-- genq.set_fair_key: as in 0013, under the queue's claim lock; a limit (max_active not
-- NULL) first counts the key's running jobs that took no slot (claimed while the key had
-- no limit).
CREATE OR REPLACE FUNCTION genq.set_fair_key(p_queue text, p_key text, p_weight real, p_max_active integer)
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
    -- Taken before the key's row, always (as the claim does: this lock, then key rows), so
    -- a transaction setting several keys cannot hold a row a claim waits for.
    PERFORM pg_advisory_xact_lock(hashtextextended('genq.claim:' || p_queue, 0));
    IF p_max_active IS NOT NULL THEN
        PERFORM genq.fair_take_slots(p_queue, p_key);
    END IF;
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

-- genq.set_queue_fairness: as in 0013; a default per-key limit first counts the running
-- jobs of the queue's keys that took no slot.
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
        PERFORM genq.mark_fair_key(p_queue, s.key)
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

-- genq.claim_fair: the claim of a fair queue; genq.claim calls it under the queue's claim
-- lock (so the keys' virtual times and the slot counts it reads are those the previous
-- claimer committed). Steps:
--   1. keyless jobs ('') first, in plain order;
--   2. keys by virtual time (least served first), in rounds of `v_walk` keys, one statement
--      each: a key at its limit is set aside, else it offers up to `fetch` heads in
--      (priority, run_at, id) order, the i-th with virtual finish vtime + ceil(i/Q)*Q/weight
--      (heads of a full group passed over). `fetch` is the key's room, bounded (when the
--      round visited a full `v_walk` keys) by what it can win: heads finishing no later
--      than the latest first turn of the round's keys. Rounds stop once `p_limit` heads are
--      offered or the waiting keys are all visited;
--   3. one statement: group room applied in virtual-finish order, the best `p_limit` taken
--      (a quantum's heads together), leased, given slots where a limit applies, and their
--      keys' vtime advanced by taken/weight;
--   4. keys found empty, exhausted or full are parked (waiting = false) if, locked and
--      re-read, they still are.
-- Returns genq.claim's rows; key_backlog says whether the job's key had more due work than
-- this claim took (the "heavy" share of the wait-time metric).
CREATE OR REPLACE FUNCTION genq.claim_fair(p_queue text, p_worker text, p_limit integer, p_lease_secs float8,
                                           p_keymax integer)
RETURNS TABLE (id bigint, queue text, kind text, payload jsonb, attempt integer,
               max_attempts integer, priority integer, run_at timestamptz,
               created_at timestamptz, failures integer, fairness_key text, key_backlog boolean)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    -- The quantum: jobs a weight-1 key takes per turn (1 below claims of 200).
    v_q      integer := greatest(1, least(10, p_limit / 100));
    v_walk   integer;
    v_full   text[];
    v_ids    bigint[];
    v_keys   text[];
    v_grps   text[];
    v_vf     float8[];
    v_tb     bigint[];
    v_slot   boolean[];
    v_check  text[] := '{}';
    v_more   text[] := '{}';
    v_locked text[];
    v_minv   float8;
    v_round  integer := 0;
    v_cur_v  float8 := '-Infinity';
    v_cur_k  text := '';
    -- One round's output.
    r_ids    bigint[];
    r_keys   text[];
    r_grps   text[];
    r_vf     float8[];
    r_tb     bigint[];
    r_slot   boolean[];
    r_check  text[];
    r_more   text[];
    r_minv   float8;
    r_walked integer;
    r_last_v float8;
    r_last_k text;
BEGIN
    -- Groups with no room: their heads are passed over, so a full group (one provider
    -- account) does not stop the claim from reaching work of other groups.
    SELECT coalesce(array_agg(g.name), '{}') INTO v_full FROM genq.limit_groups g
     WHERE g.max_active IS NOT NULL
       AND (SELECT count(*) FROM genq.fair_slots s WHERE s.grp = g.name) >= g.max_active;

    SELECT coalesce(array_agg(h.id ORDER BY h.n), '{}'),
           coalesce(array_agg(''::text ORDER BY h.n), '{}'),
           coalesce(array_agg(h.limit_group ORDER BY h.n), '{}'),
           coalesce(array_agg((h.n - 1e15)::float8 ORDER BY h.n), '{}'),
           coalesce(array_agg(0::bigint ORDER BY h.n), '{}'),
           coalesce(array_agg(h.limit_group IS NOT NULL ORDER BY h.n), '{}')
      INTO v_ids, v_keys, v_grps, v_vf, v_tb, v_slot
      FROM (SELECT x.id, x.limit_group,
                   row_number() OVER (ORDER BY x.priority, x.run_at, x.id) AS n
              FROM (SELECT j.id, j.limit_group, j.priority, j.run_at FROM genq.jobs j
                     WHERE j.queue = p_queue AND j.fairness_key = ''
                       AND j.state IN ('available', 'retryable') AND j.run_at <= now()
                     ORDER BY j.priority, j.run_at, j.id
                     LIMIT p_limit) x
             WHERE x.limit_group IS NULL OR NOT x.limit_group = ANY(v_full)) h;

    v_walk := CASE WHEN v_q > 1 THEN ceil(p_limit::numeric / v_q)::integer ELSE p_limit END;
    WHILE cardinality(v_ids) < p_limit LOOP
        WITH w AS (
            SELECT fk.key, fk.weight::float8 AS weight, fk.vtime,
                   coalesce(fk.max_active, p_keymax) AS cap
              FROM genq.fair_keys fk
             WHERE fk.queue = p_queue AND fk.waiting AND (fk.vtime, fk.key) > (v_cur_v, v_cur_k)
             ORDER BY fk.vtime, fk.key
             LIMIT v_walk
        ), a AS (
            SELECT w.*, row_number() OVER (ORDER BY w.vtime, w.key) AS ord,
                   count(*) OVER () AS walked,
                   CASE WHEN w.cap IS NULL THEN 0
                        ELSE (SELECT count(*) FROM genq.fair_slots s
                               WHERE s.queue = p_queue AND s.key = w.key) END AS active
              FROM w
        ), r AS (
            SELECT a.*,
                   CASE WHEN a.cap IS NULL THEN p_limit
                        ELSE least(p_limit, greatest(a.cap - a.active, 0))::integer END AS room
              FROM a
        ), b AS (
            SELECT r.*,
                   CASE WHEN r.walked < v_walk THEN r.room
                        ELSE least(r.room, greatest(v_q, (floor(
                               ((max(r.vtime + v_q / r.weight) FILTER (WHERE r.room > 0) OVER ())
                                - r.vtime) * r.weight / v_q + 1e-9) * v_q)::integer))
                   END AS fetch
              FROM r
        ), h AS (
            SELECT b.key, b.ord, b.weight, b.vtime, b.cap, b.active, b.room, b.fetch,
                   x.id, x.limit_group,
                   row_number() OVER (PARTITION BY b.ord ORDER BY x.priority, x.run_at, x.id) AS i
              FROM b LEFT JOIN LATERAL (
                SELECT j.id, j.limit_group, j.priority, j.run_at
                  FROM genq.jobs j
                 WHERE b.room > 0 AND j.queue = p_queue AND j.fairness_key = b.key
                   AND j.state IN ('available', 'retryable') AND j.run_at <= now()
                 ORDER BY j.priority, j.run_at, j.id
                 LIMIT b.fetch + 1) x ON true
        ), o AS (
            -- The heads each key offers: its first `fetch`, less those of full groups.
            SELECT h.*, row_number() OVER (PARTITION BY h.ord ORDER BY h.i) AS n
              FROM h
             WHERE h.id IS NOT NULL AND h.i <= h.fetch
               AND (h.limit_group IS NULL OR NOT h.limit_group = ANY(v_full))
        ), s AS (
            SELECT b.key, b.ord, b.vtime, b.cap, b.active, b.room, b.fetch,
                   coalesce(seen.n, 0) AS seen, coalesce(off.n, 0) AS offered
              FROM b
              LEFT JOIN (SELECT h.ord, count(h.id) AS n FROM h GROUP BY h.ord) seen ON seen.ord = b.ord
              LEFT JOIN (SELECT o.ord, count(*) AS n FROM o GROUP BY o.ord) off ON off.ord = b.ord
        )
        SELECT (SELECT coalesce(array_agg(o.id ORDER BY o.ord, o.n), '{}') FROM o),
               (SELECT coalesce(array_agg(o.key ORDER BY o.ord, o.n), '{}') FROM o),
               (SELECT coalesce(array_agg(o.limit_group ORDER BY o.ord, o.n), '{}') FROM o),
               (SELECT coalesce(array_agg((o.vtime + ceil(o.n::float8 / v_q) * v_q / o.weight)::float8
                                          ORDER BY o.ord, o.n), '{}') FROM o),
               (SELECT coalesce(array_agg(CASE WHEN v_q > 1 THEN (v_round * v_walk + o.ord) * 1000000 + o.n
                                               ELSE 0 END ORDER BY o.ord, o.n), '{}') FROM o),
               (SELECT coalesce(array_agg(o.limit_group IS NOT NULL OR o.cap IS NOT NULL
                                          ORDER BY o.ord, o.n), '{}') FROM o),
               (SELECT coalesce(array_agg(s.key), '{}') FROM s
                 WHERE s.room = 0 OR s.seen = 0
                    OR (s.cap IS NOT NULL AND s.active + s.offered >= s.cap)
                    OR (s.seen <= s.fetch AND s.offered = s.seen)),
               (SELECT coalesce(array_agg(s.key), '{}') FROM s
                 WHERE s.seen > s.fetch AND s.offered = s.fetch),
               (SELECT min(s.vtime) FROM s WHERE s.offered > 0),
               (SELECT count(*) FROM b),
               (SELECT b.vtime FROM b ORDER BY b.ord DESC LIMIT 1),
               (SELECT b.key FROM b ORDER BY b.ord DESC LIMIT 1)
          INTO r_ids, r_keys, r_grps, r_vf, r_tb, r_slot, r_check, r_more, r_minv,
               r_walked, r_last_v, r_last_k;

        v_ids := v_ids || r_ids;
        v_keys := v_keys || r_keys;
        v_grps := v_grps || r_grps;
        v_vf := v_vf || r_vf;
        v_tb := v_tb || r_tb;
        v_slot := v_slot || r_slot;
        v_check := v_check || r_check;
        v_more := v_more || r_more;
        v_minv := coalesce(v_minv, r_minv);
        EXIT WHEN r_walked < v_walk;
        v_cur_v := r_last_v;
        v_cur_k := r_last_k;
        v_round := v_round + 1;
    END LOOP;

    IF cardinality(v_ids) > 0 THEN
        RETURN QUERY
        WITH c AS (
            SELECT * FROM unnest(v_ids, v_keys, v_grps, v_vf, v_tb, v_slot)
                   AS c(id, key, grp, vf, tb, slot)
        ), room AS (
            SELECT g.name,
                   g.max_active - (SELECT count(*) FROM genq.fair_slots s WHERE s.grp = g.name) AS room
              FROM genq.limit_groups g
             WHERE g.max_active IS NOT NULL AND g.name IN (SELECT c.grp FROM c)
        ), ranked AS (
            SELECT c.*, row_number() OVER (PARTITION BY c.grp ORDER BY c.vf, c.tb, c.id) AS gi FROM c
        ), chosen AS (
            SELECT r.id, r.slot FROM ranked r LEFT JOIN room ON room.name = r.grp
             WHERE room.name IS NULL OR r.gi <= room.room
             ORDER BY r.vf, r.tb, r.id
             LIMIT p_limit
        ), locked AS (
            -- state as text: compared as the enum, the filter matches jobs_claimable_idx's
            -- predicate, and statistics taken while the queue was empty would have the
            -- planner drive the join from that index and rescan `chosen` for every waiting
            -- job; as text each chosen job is one primary key probe (decision 54).
            SELECT j.id, chosen.slot FROM genq.jobs j JOIN chosen ON chosen.id = j.id
             WHERE j.state::text IN ('available', 'retryable')
               FOR UPDATE OF j SKIP LOCKED
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
                      j.run_at, j.created_at, j.failures, j.fairness_key, j.limit_group, locked.slot
        ), slots AS (
            INSERT INTO genq.fair_slots (queue, key, grp, job_id)
            SELECT p_queue, u.fairness_key, u.limit_group, u.id FROM upd u
             WHERE u.slot
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

-- Rights for the new function (granted to the worker like every genq function).
SELECT genq.secure_objects(current_setting('genq.role_prefix', true));
