// Enqueue genq jobs from a TypeScript backend (node-postgres), inside the backend's own
// transaction: the job exists if and only if the transaction commits.
//
// This is the raw SQL, for reference (and for other languages). A TypeScript backend would
// rather use the typed client in clients/typescript (`@genq/client`: typed payloads, every
// SQL function, errors as classes).
//
//   cd examples/typescript && npm install && npm start
//
// DATABASE_URL defaults to postgres://postgres@127.0.0.1:5432/postgres; the schema must be
// migrated (`genq migrate`). The jobs are of the built-in kind `noop`, so a running
// `genq run` completes them; your own kinds need a handler registered in your daemon.
import pg from "pg";

export interface EnqueueOptions {
  queue?: string; // default "default"
  runAt?: Date; // default now
  priority?: number; // lower runs first; default 0
  maxAttempts?: number; // default 20
  uniqueKey?: string; // while a job with this key is not final, its id is returned instead
}

/**
 * Enqueues one job on `client`, in whatever transaction `client` is in. Returns the job id
 * as a string (bigint), or the id of the unfinished job that already holds `uniqueKey`.
 */
export async function enqueue(
  client: pg.ClientBase,
  kind: string,
  payload: unknown,
  opts: EnqueueOptions = {},
): Promise<string> {
  const { rows } = await client.query<{ id: string }>(
    `SELECT genq.enqueue(
              kind         => $1,
              payload      => $2::jsonb,
              queue        => $3,
              run_at       => coalesce($4::timestamptz, now()),
              priority     => $5,
              max_attempts => $6,
              unique_key   => $7) AS id`,
    [
      kind,
      JSON.stringify(payload ?? {}), // stringify: node-postgres would turn a JS array into a SQL array
      opts.queue ?? "default",
      opts.runAt ?? null,
      opts.priority ?? 0,
      opts.maxAttempts ?? 20,
      opts.uniqueKey ?? null,
    ],
  );
  return rows[0].id;
}

/** Enqueues many jobs in one statement; returns how many were inserted (held unique keys are skipped). */
export async function enqueueMany(
  client: pg.ClientBase,
  jobs: Array<{ kind: string; payload?: unknown } & EnqueueOptions>,
): Promise<number> {
  const body = jobs.map((j) => ({
    kind: j.kind,
    payload: j.payload ?? {},
    queue: j.queue,
    run_at: j.runAt?.toISOString(),
    priority: j.priority,
    max_attempts: j.maxAttempts,
    unique_key: j.uniqueKey,
  }));
  const { rows } = await client.query<{ n: string }>("SELECT genq.enqueue_many($1::jsonb) AS n", [
    JSON.stringify(body),
  ]);
  return Number(rows[0].n);
}

/** Roles and stores `genq.register_blob` accepts. */
export type BlobRole = "source" | "reference" | "output" | "export";
export type BlobStore = "local" | "s3" | "vercel" | "supabase";

/**
 * Tells genq about an upload it must delete on time (docs/privacy.md). Call it in the
 * transaction that records the upload, before or while uploading. Returns the blob id.
 */
export async function registerBlob(
  client: pg.ClientBase,
  userId: string,
  role: BlobRole,
  store: BlobStore,
  key: string,
  generationId?: string,
): Promise<string> {
  const { rows } = await client.query<{ id: string }>(
    "SELECT genq.register_blob($1, $2, $3, $4, $5) AS id",
    [userId, role, store, key, generationId ?? null],
  );
  return rows[0].id;
}

/** The backend's own write and the job commit together, or not at all. */
async function createRender(pool: pg.Pool, userId: string, prompt: string): Promise<string> {
  const client = await pool.connect();
  try {
    await client.query("BEGIN");
    // Stand-in for the backend's own tables (a temporary table, so the example leaves nothing behind).
    await client.query("CREATE TEMP TABLE IF NOT EXISTS renders (id bigserial, user_id text, prompt text)");
    const { rows } = await client.query<{ id: string }>(
      "INSERT INTO renders (user_id, prompt) VALUES ($1, $2) RETURNING id",
      [userId, prompt],
    );
    const renderId = rows[0].id;
    const jobId = await enqueue(client, "noop", { renderId, userId }, {
      uniqueKey: `render:${userId}:${renderId}`,
    });
    // The style reference the user uploaded: genq deletes it 7 days from now.
    await registerBlob(client, userId, "reference", "local", `references/${userId}/render-${renderId}.png`);
    await client.query("COMMIT");
    return jobId;
  } catch (err) {
    await client.query("ROLLBACK");
    throw err;
  } finally {
    client.release();
  }
}

async function main(): Promise<void> {
  const pool = new pg.Pool({
    connectionString: process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres",
  });
  try {
    const id = await createRender(pool, "user-1", "a fox in the snow");
    console.log(`enqueued job ${id} together with its render row`);

    // A rolled-back transaction leaves no job behind.
    const client = await pool.connect();
    try {
      await client.query("BEGIN");
      const ghost = await enqueue(client, "noop", { note: "never committed" });
      await client.query("ROLLBACK");
      const { rowCount } = await client.query("SELECT 1 FROM genq.jobs WHERE id = $1", [ghost]);
      console.log(`job ${ghost} after ROLLBACK: ${rowCount === 0 ? "does not exist" : "exists"}`);

      // A held unique key returns the holder's id (outside a transaction: autocommit).
      const a = await enqueue(client, "noop", {}, { uniqueKey: "example:daily", runAt: new Date(Date.now() + 60_000) });
      const b = await enqueue(client, "noop", {}, { uniqueKey: "example:daily" });
      console.log(`unique key example:daily: ${a} and ${b} (${a === b ? "same job" : "different jobs"})`);

      const n = await enqueueMany(client, [
        { kind: "noop", payload: { i: 1 } },
        { kind: "noop", payload: { i: 2 }, priority: -1 },
        { kind: "noop", uniqueKey: "example:daily" }, // held: skipped
      ]);
      console.log(`enqueue_many inserted ${n} of 3`);
    } finally {
      client.release();
    }
  } finally {
    await pool.end();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
