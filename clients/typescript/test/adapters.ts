// The handles beyond the suite's pool and transaction: a single node-postgres Client, and
// the Drizzle and Kysely adapters the README documents, exactly as written there, against
// the real schema: a job enqueued in each builder's own transaction commits with it
// and vanishes with its rollback, and genq's errors still arrive as classes.

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { sql, type SQL } from "drizzle-orm";
import { drizzle } from "drizzle-orm/node-postgres";
import { CompiledQuery, Kysely, PostgresDialect } from "kysely";
import pg from "pg";
import { enqueue, fromPg, InvalidArgumentError, type Queryable } from "@genq/client";
import { backendRole, type TestEnv } from "./harness.js";
import { rejection } from "./helpers.js";

/** README: Kysely. */
const kyselyDb = (trx: { executeQuery(q: CompiledQuery): Promise<{ rows: unknown[] }> }): Queryable => ({
  query: async (text, params) => (await trx.executeQuery(CompiledQuery.raw(text, [...params]))).rows as Record<string, unknown>[],
});

/** README: Drizzle. */
const drizzleDb = (tx: { execute(q: SQL): Promise<unknown> }): Queryable => ({
  async query(text, params) {
    const parts = text.split(/\$(\d+)/); // "… $1 … $2 …" -> text, "1", text, "2", text
    const chunks = parts.map((p, i) => (i % 2 ? sql`${params[Number(p) - 1]}` : sql.raw(p)));
    const res = await tx.execute(sql.join(chunks));
    return Array.isArray(res) ? res : (res as { rows: Record<string, unknown>[] }).rows;
  },
});

class Rollback extends Error {}

export function adaptersSuite(getEnv: () => TestEnv): void {
  const jobExists = async (id: string) =>
    (await getEnv().admin.query("SELECT 1 FROM genq.jobs WHERE id = $1", [id])).rowCount === 1;
  const later = () => new Date(Date.now() + 3600_000);

  describe("node-postgres Client", () => {
    it("a single Client (not a pool) in its own transaction, and fromPg on it", async () => {
      const client = new pg.Client({ connectionString: getEnv().url, options: `-c role=${backendRole}` });
      await client.connect();
      try {
        await client.query("BEGIN");
        const a = await enqueue(client, "ts.client", {}, { queue: "ts-client", runAt: later() });
        const b = await enqueue(fromPg(client), "ts.client", {}, { queue: "ts-client", runAt: later() });
        await client.query("ROLLBACK");
        assert.equal(await jobExists(a), false);
        assert.equal(await jobExists(b), false);
        const kept = await enqueue(client, "ts.client", {}, { queue: "ts-client", runAt: later() });
        assert.ok(await jobExists(kept));
      } finally {
        await client.end();
      }
    });
  });

  describe("Kysely adapter", () => {
    it("commits and rolls back with the Kysely transaction; errors still map", async () => {
      const pool = new pg.Pool({ connectionString: getEnv().url, max: 2, options: `-c role=${backendRole}` });
      const db = new Kysely<Record<string, never>>({ dialect: new PostgresDialect({ pool }) });
      try {
        const kept = await db.transaction().execute((trx) => enqueue(kyselyDb(trx), "ts.kysely", { a: 1 }, { queue: "ts-client", runAt: later() }));
        assert.ok(await jobExists(kept));
        let dropped = "";
        await assert.rejects(
          db.transaction().execute(async (trx) => {
            dropped = await enqueue(kyselyDb(trx), "ts.kysely", {}, { queue: "ts-client", runAt: later() });
            throw new Rollback();
          }),
          Rollback,
        );
        assert.equal(await jobExists(dropped), false);
        const err = await rejection(() => db.transaction().execute((trx) => enqueue(kyselyDb(trx), "")));
        assert.ok(err instanceof InvalidArgumentError, String(err));
      } finally {
        await db.destroy();
      }
    });
  });

  describe("Drizzle adapter", () => {
    it("commits and rolls back with the Drizzle transaction; payloads arrive as JSON", async () => {
      const pool = new pg.Pool({ connectionString: getEnv().url, max: 2, options: `-c role=${backendRole}` });
      const db = drizzle(pool);
      try {
        const kept = await db.transaction((tx) => enqueue(drizzleDb(tx), "ts.drizzle", { list: [1, 2] }, { queue: "ts-client", runAt: later() }));
        const { rows } = await getEnv().admin.query("SELECT payload FROM genq.jobs WHERE id = $1", [kept]);
        assert.deepEqual(rows, [{ payload: { list: [1, 2] } }]);
        let dropped = "";
        await assert.rejects(
          db.transaction(async (tx) => {
            dropped = await enqueue(drizzleDb(tx), "ts.drizzle", {}, { queue: "ts-client", runAt: later() });
            throw new Rollback();
          }),
          Rollback,
        );
        assert.equal(await jobExists(dropped), false);
      } finally {
        await pool.end();
      }
    });
  });
}
