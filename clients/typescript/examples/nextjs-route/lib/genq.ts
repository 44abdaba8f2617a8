// Every server function of @genq/client, as a backend would call them: on a node-postgres
// Pool, inside a PoolClient transaction, on postgres.js, and through a hand-written
// Queryable. Type-checked by `tsc --noEmit` (test/run.sh); never run.
import pg from "pg";
import postgres from "postgres";
import {
  cancelGeneration,
  creditBalance,
  defineJobs,
  deleteGeneration,
  enqueue,
  enqueueGeneration,
  enqueueMany,
  fromPg,
  fromPostgresJs,
  getGeneration,
  getUserLimits,
  GoneError,
  grantCredits,
  InsufficientCreditsError,
  InvalidArgumentError,
  listGenerations,
  NotFoundError,
  QuotaExceededError,
  recordInvoice,
  recreateGeneration,
  registerBlob,
  requestErasure,
  requestExport,
  setUserLimits,
  type CreditBalance,
  type Generation,
  type GenerationState,
  type Queryable,
  type UserLimits,
} from "@genq/client";

const pool = new pg.Pool();
const sql = postgres();

/** The application's job kinds and their payloads. */
export const jobs = defineJobs<{
  "email.send": { to: string; subject: string };
  "render.thumbnail": { renderId: string };
}>();

export async function everything(userId: string): Promise<void> {
  // A job in the backend's own transaction (node-postgres PoolClient).
  const client = await pool.connect();
  try {
    await client.query("BEGIN");
    await client.query("INSERT INTO renders (user_id) VALUES ($1)", [userId]);
    const jobId: string = await jobs.enqueue(client, "render.thumbnail", { renderId: "r1" }, { uniqueKey: "render:r1" });
    await enqueue(client, "noop", { any: "payload" }, { queue: "default", runAt: new Date(), priority: 1, maxAttempts: 5, fairnessKey: userId, limitGroup: "pdf-renderer" });
    await client.query("COMMIT");
    console.log(jobId);
  } catch (err) {
    await client.query("ROLLBACK");
    throw err;
  } finally {
    client.release();
  }

  // @ts-expect-error: the payload of "email.send" needs `subject`.
  await jobs.enqueue(pool, "email.send", { to: "a@example.com" });
  // @ts-expect-error: "email.sned" is not a declared kind.
  await jobs.enqueue(pool, "email.sned", { to: "a@example.com", subject: "x" });
  // @ts-expect-error: `to` is a string.
  await jobs.enqueueMany(pool, [{ kind: "email.send", payload: { to: 1, subject: "x" } }]);
  const inserted: number = await enqueueMany(pool, [{ kind: "noop" }, { kind: "noop", payload: [1], uniqueKey: "k" }]);

  // Credits and generations on postgres.js, in a transaction.
  const generationId = await sql.begin(async (tx) => {
    await grantCredits(tx, userId, 100, "payment-1");
    return enqueueGeneration(tx, { userId, provider: "fal", model: "fal-ai/flux/dev", input: { prompt: "a fox" }, cost: 10, idempotencyKey: "req-1" });
  });
  const balance: CreditBalance = await creditBalance(sql, userId);
  const g: Generation | null = await getGeneration(sql, generationId);
  const page: Generation[] = await listGenerations(pool, userId, { limit: 20 });
  const next: Generation[] = await listGenerations(pool, userId, { limit: 20, before: page[page.length - 1]?.id ?? generationId });
  let again = generationId;
  try {
    again = await recreateGeneration(pool, generationId, "req-2");
  } catch (err) {
    if (!(err instanceof GoneError)) throw err; // the input was scrubbed or deleted: ask again
  }
  const cancelled: GenerationState = await cancelGeneration(pool, again);
  const deleted: GenerationState = await deleteGeneration(fromPostgresJs(sql), generationId);
  await recordInvoice(fromPg(pool), { txnId: "txn-1", orderNumber: "order-1", userId, credits: 100 });
  const limits: UserLimits = await setUserLimits(pool, userId, { maxInFlight: 2, maxQueued: 10, perMinute: 30, weight: 1.5 });
  const current: UserLimits = await getUserLimits(pool, userId);
  const blob: string = await registerBlob(pool, { userId, role: "reference", store: "s3", key: `uploads/${userId}/ref.png` });
  const erasure: string = await requestErasure(pool, userId);
  const exportId: string = await requestExport(pool, userId);
  console.log(inserted, balance.available, g?.progress?.percent, next.length, cancelled, deleted, limits.weight.value, current, blob, erasure, exportId);

  // Any other handle: one method.
  const custom: Queryable = { query: async (text, params) => (await pool.query(text, [...params])).rows };
  await enqueue(custom, "noop");

  try {
    await enqueueGeneration(pool, { userId, provider: "byteplus", model: "m", input: {}, cost: 10n, idempotencyKey: "req-3" });
  } catch (err) {
    if (err instanceof InsufficientCreditsError) console.log(err.needed - err.available);
    else if (err instanceof QuotaExceededError) console.log(err.limit, err.max, err.current);
    else if (err instanceof NotFoundError || err instanceof InvalidArgumentError) console.log(err.code, err.message);
    else throw err;
  }
  // @ts-expect-error: not a provider genq drives.
  await enqueueGeneration(pool, { userId, provider: "openai", model: "m", input: {}, cost: 1, idempotencyKey: "k" });
}
