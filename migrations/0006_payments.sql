-- Payments (Plisio): the backend records each invoice's owner and credits with
-- genq.record_invoice before sending the user to pay; Plisio's verified callbacks move the
-- payment's status, and `completed` grants the credits exactly once (ledger idempotency
-- key 'plisio:<txn_id>'). `mismatch` (paid a different amount) goes to `review`.

CREATE TABLE genq.payments (
    txn_id          text        PRIMARY KEY,
    order_number    text        NOT NULL UNIQUE,
    user_id         text        NOT NULL CHECK (length(user_id) > 0),
    credits         bigint      NOT NULL CHECK (credits > 0),
    -- new, pending, completed, review (Plisio's mismatch), expired, cancelled, error
    status          text        NOT NULL DEFAULT 'new',
    amount          text,
    currency        text,
    source_amount   text,
    source_currency text,
    -- [{status, at}] in the order callbacks were applied
    history         jsonb       NOT NULL DEFAULT '[]',
    granted_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX payments_open_idx ON genq.payments (created_at) WHERE status IN ('new', 'pending');

-- Records which user an invoice pays for, and how many credits it buys. Idempotent: the
-- same call again is a no-op; the same txn_id with other values is an error (22023).
CREATE FUNCTION genq.record_invoice(txn_id text, order_number text, user_id text, credits bigint)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v genq.payments%ROWTYPE;
BEGIN
    IF coalesce(length(record_invoice.txn_id), 0) = 0
       OR coalesce(length(record_invoice.order_number), 0) = 0
       OR coalesce(length(record_invoice.user_id), 0) = 0 THEN
        RAISE EXCEPTION 'genq.record_invoice: txn_id, order_number and user_id must be non-empty'
            USING ERRCODE = '22023';
    END IF;
    IF record_invoice.credits IS NULL OR record_invoice.credits <= 0 THEN
        RAISE EXCEPTION 'genq.record_invoice: credits must be positive (got %)',
            coalesce(record_invoice.credits::text, 'NULL') USING ERRCODE = '22023';
    END IF;
    INSERT INTO genq.payments (txn_id, order_number, user_id, credits)
    VALUES (record_invoice.txn_id, record_invoice.order_number, record_invoice.user_id,
            record_invoice.credits)
    ON CONFLICT (txn_id) DO NOTHING;
    IF FOUND THEN
        RETURN;
    END IF;
    SELECT * INTO v FROM genq.payments p WHERE p.txn_id = record_invoice.txn_id;
    IF v.order_number <> record_invoice.order_number OR v.user_id <> record_invoice.user_id
       OR v.credits <> record_invoice.credits THEN
        RAISE EXCEPTION 'genq.record_invoice: txn_id % is already recorded with other values',
            record_invoice.txn_id USING ERRCODE = '22023';
    END IF;
END
$$;

REVOKE EXECUTE ON FUNCTION genq.record_invoice(text, text, text, bigint) FROM PUBLIC;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'genq_backend') THEN
        GRANT EXECUTE ON FUNCTION genq.record_invoice(text, text, text, bigint) TO genq_backend;
        GRANT SELECT ON genq.payments TO genq_backend;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'genq_worker') THEN
        GRANT ALL ON genq.payments TO genq_worker;
        GRANT EXECUTE ON FUNCTION genq.record_invoice(text, text, text, bigint) TO genq_worker;
    END IF;
END
$$;
