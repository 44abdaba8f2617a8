-- Webhooks: a durable inbox of verified provider callbacks. A row is written once per
-- (provider, dedupe_key) in the transaction that enqueues its reconciliation job, so a
-- duplicate delivery changes nothing. A callback whose generation is unknown is kept with
-- orphan = true for inspection and enqueues nothing.

CREATE TABLE genq.webhook_events (
    id            bigserial   PRIMARY KEY,
    provider      text        NOT NULL,
    -- fal: request id + status; Replicate: webhook-id; BytePlus: generation + task status.
    dedupe_key    text        NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    generation_id uuid,
    -- The provider's request id named by the callback (fal's X-Fal-Webhook-Request-Id).
    request_id    text,
    orphan        boolean     NOT NULL DEFAULT false,
    -- The raw body as received (verified bytes).
    body          bytea       NOT NULL,
    -- The reconciliation job enqueued for it (NULL for orphans).
    job_id        bigint,
    -- Set by the reconciliation job once it has acted on the generation.
    processed_at  timestamptz,
    CONSTRAINT webhook_events_dedupe UNIQUE (provider, dedupe_key)
);

CREATE INDEX webhook_events_generation_idx ON genq.webhook_events (generation_id)
    WHERE generation_id IS NOT NULL;
CREATE INDEX webhook_events_orphan_idx ON genq.webhook_events (received_at) WHERE orphan;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'genq_worker') THEN
        GRANT ALL ON genq.webhook_events TO genq_worker;
        GRANT USAGE, SELECT ON SEQUENCE genq.webhook_events_id_seq TO genq_worker;
    END IF;
END
$$;
