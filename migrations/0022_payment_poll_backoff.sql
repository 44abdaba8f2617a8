-- Payment poll bookkeeping: every open payment gets polled, none forever.
--
-- payments.poll took the 200 open payments (new/pending) unchanged longest, ORDER BY
-- updated_at. A poll that changes nothing (Plisio says still pending, does not know the
-- operation, or cannot be reached) leaves updated_at alone, so with more than 200 invoices
-- that are never paid (normal: users open invoices and leave) the same 200 oldest were
-- polled on every run forever, and a newer invoice whose callback was lost was never
-- polled: its payer was never credited. And invoices Plisio does not know were polled
-- forever.
--
-- Now each poll is recorded on its payment, whatever its result: polls + 1,
-- last_polled_at, and next_poll_at = now + [payments] poll_interval × 2^(polls − 1), capped
-- at [payments] poll_max_backoff (1 h). The poll takes the payments due first (within
-- half an interval) by coalesce(next_poll_at, updated_at): a never-polled payment from its
-- last change (so it comes before ones already asked), a polled one from its next poll
-- time, which every poll moves into the future; so every open payment is reached. plisio_seen_at is when a
-- poll first found the operation at Plisio. A payment Plisio never knew (no poll found it,
-- no callback came) created longer than [payments] give_up_unknown_after (7 days) ago gets
-- poll_given_up_at and is not polled again; its status stays what it was (decision 56).
-- The poll writes only these columns, never status or updated_at, so it cannot overwrite
-- a callback's change. The backend keeps its SELECT on the table (new columns included).

ALTER TABLE genq.payments
    ADD COLUMN polls            integer     NOT NULL DEFAULT 0,
    ADD COLUMN last_polled_at   timestamptz,
    -- NULL: due once unchanged for [payments] poll_after
    ADD COLUMN next_poll_at     timestamptz,
    ADD COLUMN plisio_seen_at   timestamptz,
    ADD COLUMN poll_given_up_at timestamptz;

-- The poll's due query walks this in order and stops at its batch.
CREATE INDEX payments_poll_due_idx ON genq.payments ((coalesce(next_poll_at, updated_at)))
    WHERE status IN ('new', 'pending') AND poll_given_up_at IS NULL;
