// The server API on one driver, against the real schema and daemon: transactions, unique
// keys, typed jobs, credits, generations, privacy calls, and each error class from the real
// SQLSTATE. Run once per driver (main.test.ts).

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, it } from "node:test";
import {
  cancelGeneration,
  creditBalance,
  defineJobs,
  deleteGeneration,
  enqueue,
  enqueueGeneration,
  enqueueMany,
  GenqError,
  getGeneration,
  grantCredits,
  InsufficientCreditsError,
  InvalidArgumentError,
  NotFoundError,
  recordInvoice,
  registerBlob,
  requestErasure,
  requestExport,
  toQueryable,
} from "@genq/client";
import type { Driver } from "./drivers.js";
import { backendRole, type TestEnv } from "./harness.js";
import { lacks, lacksColumn, rejection } from "./helpers.js";

/** Thrown inside a transaction to roll it back. */
class Rollback extends Error {}

export function driverSuite(getDriver: () => Driver, getEnv: () => TestEnv): void {
  const d = () => getDriver();
  const admin = () => getEnv().admin;
  const user = (what: string) => `ts-${d().name.replace(/\W/g, "")}-${what}-${randomUUID().slice(0, 8)}`;
  const jobRow = async (id: string) =>
    (await admin().query("SELECT kind, payload, queue, unique_key, run_at FROM genq.jobs WHERE id = $1", [id])).rows[0];

  describe("jobs", () => {
    it("the suite acts as the backend role (a backend's grants suffice)", async () => {
      const rows = await toQueryable(d().db).query("SELECT current_user::text AS u", []);
      assert.deepEqual([...rows], [{ u: backendRole }]);
    });

    it("enqueue inside a transaction that commits: the job exists with its payload and options", async () => {
      const runAt = new Date(Date.now() + 3600_000);
      const id = await d().tx((db) => enqueue(db, "ts.test", { n: 1, list: [1, 2] }, { queue: "ts-client", runAt, priority: -3 }));
      assert.match(id, /^\d+$/);
      const row = await jobRow(id);
      assert.deepEqual(row?.payload, { n: 1, list: [1, 2] });
      assert.equal(row?.queue, "ts-client");
      assert.equal((row?.run_at as Date).getTime(), runAt.getTime());
    });

    it("enqueue inside a transaction that rolls back: no job", async () => {
      let id = "";
      await assert.rejects(
        d().tx(async (db) => {
          id = await enqueue(db, "ts.test", { n: 2 }, { queue: "ts-client" });
          throw new Rollback();
        }),
        Rollback,
      );
      assert.match(id, /^\d+$/);
      assert.equal(await jobRow(id), undefined);
    });

    it("a held unique key returns the holder's id; enqueueMany skips it", async () => {
      const key = `ts:${randomUUID()}`;
      const runAt = new Date(Date.now() + 3600_000);
      const a = await enqueue(d().db, "ts.test", {}, { queue: "ts-client", uniqueKey: key, runAt });
      const b = await enqueue(d().db, "ts.test", {}, { queue: "ts-client", uniqueKey: key });
      assert.equal(a, b);
      const n = await enqueueMany(d().db, [
        { kind: "ts.test", payload: { i: 1 }, queue: "ts-client", runAt },
        { kind: "ts.test", queue: "ts-client", uniqueKey: key },
        { kind: "ts.test", payload: [1, 2], queue: "ts-client", runAt, maxAttempts: 3, priority: 2 },
      ]);
      assert.equal(n, 2);
    });

    it("fairnessKey and limitGroup reach the job (enqueue and enqueueMany)", async (t) => {
      if (await lacksColumn(t, getEnv(), "jobs", "fairness_key", "i13-engine")) return;
      const runAt = new Date(Date.now() + 3600_000);
      const id = await enqueue(d().db, "ts.fair", {}, { queue: "ts-client", runAt, fairnessKey: "user-7", limitGroup: "pdf" });
      const n = await enqueueMany(d().db, [{ kind: "ts.fair", queue: "ts-client", runAt, fairnessKey: "user-8", limitGroup: "pdf", uniqueKey: `fair:${id}` }]);
      assert.equal(n, 1);
      const { rows } = await admin().query(
        "SELECT fairness_key, limit_group FROM genq.jobs WHERE id = $1 OR unique_key = $2 ORDER BY id",
        [id, `fair:${id}`],
      );
      assert.deepEqual(rows, [{ fairness_key: "user-7", limit_group: "pdf" }, { fairness_key: "user-8", limit_group: "pdf" }]);
    });

    it("defineJobs: typed enqueue writes the declared kind and payload", async () => {
      const jobs = defineJobs<{ "email.send": { to: string; subject: string }; "ts.other": { n: number } }>();
      const id = await jobs.enqueue(d().db, "email.send", { to: "a@example.com", subject: "hi" }, { queue: "ts-client", runAt: new Date(Date.now() + 3600_000) });
      const row = await jobRow(id);
      assert.equal(row?.kind, "email.send");
      assert.deepEqual(row?.payload, { to: "a@example.com", subject: "hi" });
      const n = await jobs.enqueueMany(d().db, [
        { kind: "ts.other", payload: { n: 1 }, queue: "ts-client", runAt: new Date(Date.now() + 3600_000) },
        { kind: "email.send", payload: { to: "b@example.com", subject: "x" }, queue: "ts-client", runAt: new Date(Date.now() + 3600_000) },
      ]);
      assert.equal(n, 2);
    });
  });

  describe("credits and generations", () => {
    it("grants are idempotent per key; the balance follows holds", async () => {
      const u = user("grant");
      assert.equal(await grantCredits(d().db, u, 50, `pay-${u}`), 50);
      assert.equal(await grantCredits(d().db, u, 50, `pay-${u}`), 50);
      assert.deepEqual(await creditBalance(d().db, u), { available: 50, held: 0 });
      assert.deepEqual(await creditBalance(d().db, user("nobody")), { available: 0, held: 0 });
      const id = await enqueueGeneration(d().db, {
        userId: u, provider: "fal", model: "fal-ai/fast-sdxl", input: { prompt: "a fox" }, cost: 20, idempotencyKey: `req-${u}`,
      });
      assert.match(id, /^[0-9a-f-]{36}$/);
      assert.deepEqual(await creditBalance(d().db, u), { available: 30, held: 20 });
    });

    it("enqueueGeneration and cancelGeneration in one transaction: cancelled, hold released", async () => {
      const u = user("cancel");
      await grantCredits(d().db, u, 10, `pay-${u}`);
      const state = await d().tx(async (db) => {
        const id = await enqueueGeneration(db, {
          userId: u, provider: "replicate", model: "owner/model", input: { prompt: "x" }, cost: 10, idempotencyKey: "k1",
        });
        const again = await enqueueGeneration(db, {
          userId: u, provider: "replicate", model: "owner/model", input: { prompt: "x" }, cost: 10, idempotencyKey: "k1",
        });
        assert.equal(again, id);
        return cancelGeneration(db, id);
      });
      assert.equal(state, "cancelled");
      assert.deepEqual(await creditBalance(d().db, u), { available: 10, held: 0 });
    });

    it("a rolled-back enqueueGeneration holds nothing", async () => {
      const u = user("rollback");
      await grantCredits(d().db, u, 10, `pay-${u}`);
      await assert.rejects(
        d().tx(async (db) => {
          await enqueueGeneration(db, { userId: u, provider: "fal", model: "m", input: {}, cost: 10, idempotencyKey: "k" });
          throw new Rollback();
        }),
        Rollback,
      );
      assert.deepEqual(await creditBalance(d().db, u), { available: 10, held: 0 });
    });

    it("recordInvoice is idempotent per txn id", async () => {
      const u = user("invoice");
      const invoice = { txnId: `txn-${u}`, orderNumber: `order-${u}`, userId: u, credits: 100 };
      await recordInvoice(d().db, invoice);
      await recordInvoice(d().db, invoice);
      const { rows } = await admin().query("SELECT user_id, credits FROM genq.payments WHERE txn_id = $1", [invoice.txnId]);
      assert.deepEqual(rows, [{ user_id: u, credits: "100" }]);
    });
  });

  describe("privacy", () => {
    it("registerBlob, requestErasure and requestExport return their ids", async () => {
      const u = user("privacy");
      const blob = await registerBlob(d().db, { userId: u, role: "reference", store: "local", key: `uploads/${u}/ref.png` });
      assert.equal(await registerBlob(d().db, { userId: u, role: "reference", store: "local", key: `uploads/${u}/ref.png` }), blob);
      const erasure = await requestErasure(d().db, u);
      assert.equal(await requestErasure(d().db, u), erasure);
      const exported = await requestExport(d().db, u);
      assert.match(exported, /^\d+$/);
      const { rows } = await admin().query("SELECT user_id FROM genq.export_requests WHERE id = $1", [exported]);
      assert.deepEqual(rows, [{ user_id: u }]);
    });

    it("deleteGeneration returns the state it found and scrubs the input", async () => {
      const u = user("delete");
      await grantCredits(d().db, u, 5, `pay-${u}`);
      const { id, state } = await d().tx(async (db) => {
        const id = await enqueueGeneration(db, { userId: u, provider: "fal", model: "m", input: { prompt: "secret" }, cost: 5, idempotencyKey: "k" });
        return { id, state: await deleteGeneration(db, id) };
      });
      assert.equal(state, "queued");
      const { rows } = await admin().query("SELECT state, deleted_at IS NOT NULL AS deleted FROM genq.generations WHERE id = $1", [id]);
      assert.deepEqual(rows, [{ state: "cancelled", deleted: true }]);
    });
  });

  describe("errors from the real SQLSTATEs", () => {
    it("GQ402 becomes InsufficientCreditsError with needed and available; nothing written", async () => {
      const u = user("poor");
      await grantCredits(d().db, u, 3, `pay-${u}`);
      const err = await rejection(() =>
        d().tx((db) => enqueueGeneration(db, { userId: u, provider: "fal", model: "m", input: {}, cost: 10, idempotencyKey: "k" })),
      );
      assert.ok(err instanceof InsufficientCreditsError, String(err));
      assert.ok(err instanceof GenqError);
      assert.equal(err.code, "GQ402");
      assert.equal(err.needed, 10);
      assert.equal(err.available, 3);
      assert.ok(err.cause instanceof d().nativeError, "the driver's error is kept as cause");
      const { rows } = await admin().query("SELECT count(*)::int AS n FROM genq.generations WHERE user_id = $1", [u]);
      assert.deepEqual(rows, [{ n: 0 }]);
    });

    it("P0002 becomes NotFoundError", async () => {
      const err = await rejection(() => cancelGeneration(d().db, randomUUID()));
      assert.ok(err instanceof NotFoundError, String(err));
      assert.equal(err.code, "P0002");
      assert.match(err.message, /not found/);
    });

    it("22023 (empty kind), 22003 (amount over the bound), 54000 (payload over 1 MiB) and 22P02 (not a uuid) become InvalidArgumentError", async () => {
      const cases: Array<[string, () => Promise<unknown>]> = [
        ["22023", () => enqueue(d().db, "", {})],
        ["22003", () => grantCredits(d().db, user("big"), 2_000_000_000, "k")],
        ["54000", () => enqueue(d().db, "ts.test", { blob: "x".repeat(1_100_000) }, { queue: "ts-client" })],
        ["22P02", () => cancelGeneration(d().db, "not-a-uuid")],
        ["22023", () => registerBlob(d().db, { userId: "u", role: "reference", store: "local", key: "../escape" })],
      ];
      for (const [code, call] of cases) {
        const err = await rejection(call);
        assert.ok(err instanceof InvalidArgumentError, `${code}: ${String(err)}`);
        assert.equal(err.code, code);
      }
    });

    it("other errors pass through untouched (a key registered to another user: 23505)", async () => {
      const a = user("a");
      const b = user("b");
      const key = `uploads/${a}/${b}/shared.png`;
      await registerBlob(d().db, { userId: a, role: "reference", store: "local", key });
      const err = await rejection(() => registerBlob(d().db, { userId: b, role: "reference", store: "local", key }));
      assert.ok(!(err instanceof GenqError), String(err));
      assert.ok(err instanceof d().nativeError, `the driver's own error: ${String(err)}`);
      assert.equal((err as { code?: string }).code, "23505");
    });
  });

  describe("reads", () => {
    it("getGeneration of an unknown id is null", async (t) => {
      if (await lacks(t, getEnv(), "get_generation", "i14-data")) return;
      assert.equal(await getGeneration(d().db, randomUUID()), null);
    });
  });
}
