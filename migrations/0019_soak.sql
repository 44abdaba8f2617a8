-- Bounded bloat under a steady load (issue 17, decision 53; measured by
-- `genq bench --scenario soak`, docs/benchmarks.md).

-- Pruning deletes one final state at a time, oldest first, from where its previous batch
-- ended: with the state in the key each batch is one index range of its own state, so a
-- completed-jobs batch never walks the discarded jobs kept longer (7 days against 24 hours
-- by default), and no batch walks the entries of rows an earlier batch deleted. The
-- queue history (genq.record_queue_history) reads finished jobs of the last minute through
-- the same index, one range per state.
DROP INDEX genq.jobs_finished_idx;
CREATE INDEX jobs_finished_idx ON genq.jobs (state, finished_at)
    WHERE state IN ('completed', 'cancelled', 'discarded');
