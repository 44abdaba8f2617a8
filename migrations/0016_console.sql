-- The operator console (docs/console.md): sessions, the audit of every action, a registry
-- of live daemons and a bounded per-minute history of each queue for the overview charts.
-- Why: docs/decisions.md (44, 45, 46).

-- Console sessions. The cookie carries a random id; only its SHA-256 is stored, so a read
-- of this table (a backup, a replica) does not hand out live sessions.
CREATE TABLE genq.console_sessions (
    id_hash    bytea PRIMARY KEY,
    role       text NOT NULL CHECK (role IN ('admin', 'readonly')),
    csrf       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX console_sessions_expires_idx ON genq.console_sessions (expires_at);

-- Every console action (login and logout included): who, what, on what, how many rows.
CREATE TABLE genq.console_audit (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT now(),
    actor          text NOT NULL,
    action         text NOT NULL,
    target         text,
    affected_count bigint NOT NULL DEFAULT 0,
    detail         jsonb NOT NULL DEFAULT '{}'::jsonb
);

-- Live daemons: each upserts its row at every statistics sample and deletes it on a clean
-- shutdown; rows not refreshed for an hour are pruned by the sampler.
CREATE TABLE genq.daemons (
    worker_id    text PRIMARY KEY,
    version      text NOT NULL,
    queues       text[] NOT NULL,
    running      integer NOT NULL,
    draining     boolean NOT NULL DEFAULT false,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

-- One row per queue per minute for 24 hours: depth at the last sample of the minute and
-- the jobs that finished in it. Written by the daemon that wins the statistics sample.
CREATE TABLE genq.queue_history (
    minute    timestamptz NOT NULL,
    queue     text NOT NULL,
    available bigint NOT NULL,
    running   bigint NOT NULL,
    retryable bigint NOT NULL,
    completed bigint NOT NULL,
    discarded bigint NOT NULL,
    PRIMARY KEY (minute, queue)
);

-- genq.record_queue_history: folds the current sample (genq.queue_stats) and this minute's
-- finished jobs (through jobs_finished_idx, bounded by one minute of throughput) into the
-- history, and drops what is older than 24 hours. Returns the rows written.
CREATE FUNCTION genq.record_queue_history() RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_minute timestamptz := date_trunc('minute', now());
    v_rows   bigint;
BEGIN
    INSERT INTO genq.queue_history AS h (minute, queue, available, running, retryable, completed, discarded)
    SELECT v_minute, s.queue, s.available, s.running, s.retryable,
           coalesce(f.completed, 0), coalesce(f.discarded, 0)
      FROM genq.queue_stats s
      LEFT JOIN (
        SELECT j.queue,
               count(*) FILTER (WHERE j.state = 'completed') AS completed,
               count(*) FILTER (WHERE j.state = 'discarded') AS discarded
          FROM genq.jobs j
         WHERE j.state IN ('completed', 'cancelled', 'discarded')
           AND j.finished_at >= v_minute
         GROUP BY j.queue
      ) f ON f.queue = s.queue
    ON CONFLICT (minute, queue) DO UPDATE
       SET available = EXCLUDED.available, running = EXCLUDED.running,
           retryable = EXCLUDED.retryable, completed = EXCLUDED.completed,
           discarded = EXCLUDED.discarded;
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    DELETE FROM genq.queue_history WHERE minute < now() - interval '24 hours';
    DELETE FROM genq.daemons WHERE heartbeat_at < now() - interval '1 hour';
    RETURN v_rows;
END
$$;


-- The console's generation list pages newest first, optionally within one state.
CREATE INDEX generations_created_idx ON genq.generations (created_at DESC, id DESC);

SELECT genq.secure_objects(current_setting('genq.role_prefix', true));
