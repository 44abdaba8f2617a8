-- A generation the provider finished (and billed us for) whose output cannot be downloaded
-- (expired before we copied it, refused by the outbound address policy, over the size
-- limit, unreachable after every attempt) ends `failed` with its hold CAPTURED, and its error
-- starts with 'output_unfetchable:'. Releasing would hand out a paid render for free to
-- anyone who can make an output unfetchable. check_ledger learns the one exception to
-- "failed means released", and a new invariant: no other failed or cancelled generation
-- has a capture.

CREATE OR REPLACE FUNCTION genq.check_ledger() RETURNS TABLE (invariant text, detail text)
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
           AND NOT (g.state = 'failed' AND coalesce(g.error, '') LIKE 'output_unfetchable:%'
                    AND EXISTS (SELECT 1 FROM genq.ledger l WHERE l.generation_id = g.id AND l.kind = 'capture'))
        UNION ALL
        SELECT 'captured_without_output', format('generation %s is %s and its hold was captured', g.id, g.state)
          FROM genq.generations g
          JOIN genq.ledger l ON l.generation_id = g.id AND l.kind = 'capture'
         WHERE g.state = 'cancelled'
            OR (g.state = 'failed' AND coalesce(g.error, '') NOT LIKE 'output_unfetchable:%')
        UNION ALL
        SELECT 'settled_before_final', format('generation %s is %s but already has a %s', g.id, g.state, l.kind)
          FROM genq.generations g
          JOIN genq.ledger l ON l.generation_id = g.id AND l.kind IN ('capture', 'release')
         WHERE g.state NOT IN ('succeeded', 'failed', 'cancelled')
    )
    SELECT v.invariant, v.detail FROM violations v ORDER BY v.invariant, v.detail
$$;
