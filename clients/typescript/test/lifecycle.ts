// A generation's life through the client: enqueued, run by the real daemon against the fake
// provider, read back (getGeneration, listGenerations), recreated; per-user limits and the
// quota error. Each test needs SQL from another branch and says so when the schema lacks it.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, it } from "node:test";
import {
  cancelGeneration,
  creditBalance,
  enqueueGeneration,
  getGeneration,
  deleteGeneration,
  getUserLimits,
  GoneError,
  grantCredits,
  InvalidArgumentError,
  InsufficientCreditsError,
  listGenerations,
  NotFoundError,
  QuotaExceededError,
  recreateGeneration,
  setUserLimits,
  type Db,
} from "@genq/client";
import type { Driver } from "./drivers.js";
import { waitUntil, type TestEnv } from "./harness.js";
import { lacks, rejection } from "./helpers.js";

/** Waits until the daemon has taken generation `id` to a final state; returns that state. */
export async function settled(env: TestEnv, id: string): Promise<string> {
  let state = "";
  await waitUntil(`generation ${id} to reach a final state`, 60000, async () => {
    const { rows } = await env.admin.query("SELECT state::text AS state FROM genq.generations WHERE id = $1", [id]);
    state = String(rows[0]?.state);
    return ["succeeded", "failed", "cancelled"].includes(state);
  });
  return state;
}

export function lifecycleSuite(getDriver: () => Driver, getEnv: () => TestEnv): void {
  const db = (): Db => getDriver().db;
  const user = (what: string) => `ts-${getDriver().name.replace(/\W/g, "")}-${what}-${randomUUID().slice(0, 8)}`;

  describe("generation lifecycle", () => {
    it("enqueueGeneration to succeeded, read back with getGeneration", async (t) => {
      if (await lacks(t, getEnv(), "get_generation", "i14-data")) return;
      const u = user("life");
      await grantCredits(db(), u, 30, `pay-${u}`);
      const id = await enqueueGeneration(db(), {
        userId: u, provider: "fal", model: "fal-ai/fast-sdxl", input: { prompt: "a fox in the snow" }, cost: 10, idempotencyKey: "req-1",
      });
      assert.equal(await settled(getEnv(), id), "succeeded");
      const g = await getGeneration(db(), id);
      assert.ok(g);
      assert.equal(g.id, id);
      assert.equal(g.userId, u);
      assert.equal(g.provider, "fal");
      assert.equal(g.state, "succeeded");
      assert.equal(g.cost, 10);
      assert.deepEqual(g.input, { prompt: "a fox in the snow" });
      assert.ok(g.createdAt instanceof Date && g.finishedAt instanceof Date);
      assert.ok(g.finishedAt.getTime() >= g.createdAt.getTime());
      assert.ok(g.output.length >= 1, "an output was stored");
      assert.match(g.output[0]?.key ?? "", new RegExp(`^outputs/${u}/${id}/0`));
      assert.equal(g.error, null);
      assert.deepEqual(g.credits, { held: 0, captured: 10, released: 0 });
      assert.match(g.version, /^\d+$/);
      assert.deepEqual(await creditBalance(db(), u), { available: 20, held: 0 });
    });

    it("a generation cancelled while queued reads as cancelled, with its error code and credits released", async (t) => {
      if (await lacks(t, getEnv(), "get_generation", "i14-data")) return;
      const u = user("cancelread");
      await grantCredits(db(), u, 4, `pay-${u}`);
      const id = await getDriver().tx(async (tx) => {
        const id = await enqueueGeneration(tx, { userId: u, provider: "byteplus", model: "m", input: { prompt: "p" }, cost: 4, idempotencyKey: "k" });
        await cancelGeneration(tx, id);
        return id;
      });
      const g = await getGeneration(db(), id);
      assert.equal(g?.state, "cancelled");
      assert.equal(g?.error?.code, "cancelled");
      assert.ok(g?.finishedAt instanceof Date);
      assert.equal(g?.cancelRequested, true);
      assert.deepEqual(g?.credits, { held: 0, captured: 0, released: 4 });
    });

    it("listGenerations: newest first, pages without duplicates or gaps", async (t) => {
      if (await lacks(t, getEnv(), "list_generations", "i14-data")) return;
      const u = user("list");
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) {
        ids.push(await enqueueGeneration(db(), { userId: u, provider: "replicate", model: "o/m", input: { i }, cost: 0, idempotencyKey: `k${i}` }));
      }
      const seen: string[] = [];
      let before: string | undefined;
      for (let page = 0; page < 4; page++) {
        const rows = await listGenerations(db(), u, before === undefined ? { limit: 2 } : { limit: 2, before });
        if (rows.length === 0) break;
        assert.ok(rows.length <= 2);
        for (const g of rows) assert.equal(g.userId, u);
        seen.push(...rows.map((g) => g.id));
        before = rows[rows.length - 1]?.id;
      }
      assert.deepEqual(seen, [...ids].reverse());
    });

    it("listGenerations refuses a page size outside 1..100 and a cursor of another user", async (t) => {
      if (await lacks(t, getEnv(), "list_generations", "i14-data")) return;
      const u = user("listbad");
      const other = await enqueueGeneration(db(), { userId: user("listother"), provider: "fal", model: "m", input: {}, cost: 0, idempotencyKey: "k" });
      for (const limit of [0, 101]) {
        const err = await rejection(() => listGenerations(db(), u, { limit }));
        assert.ok(err instanceof InvalidArgumentError, `limit ${limit}: ${String(err)}`);
      }
      const err = await rejection(() => listGenerations(db(), u, { before: other }));
      assert.ok(err instanceof NotFoundError, String(err));
    });

    it("recreateGeneration of a deleted generation: GoneError (GQ410), nothing held", async (t) => {
      if (await lacks(t, getEnv(), "recreate_generation", "i14-data")) return;
      const u = user("gone");
      await grantCredits(db(), u, 5, `pay-${u}`);
      const id = await enqueueGeneration(db(), { userId: u, provider: "fal", model: "m", input: { prompt: "p" }, cost: 0, idempotencyKey: "k1" });
      await deleteGeneration(db(), id);
      const err = await rejection(() => recreateGeneration(db(), id, "k2"));
      assert.ok(err instanceof GoneError, String(err));
      assert.equal(err.code, "GQ410");
      assert.deepEqual(await creditBalance(db(), u), { available: 5, held: 0 });
      const unknown = await rejection(() => recreateGeneration(db(), randomUUID(), "k3"));
      assert.ok(unknown instanceof NotFoundError, String(unknown));
    });

    it("recreateGeneration: a new generation with the same input, held again, idempotent per key", async (t) => {
      if (await lacks(t, getEnv(), "recreate_generation", "i14-data")) return;
      const u = user("again");
      await grantCredits(db(), u, 2, `pay-${u}`);
      const first = await enqueueGeneration(db(), { userId: u, provider: "fal", model: "m", input: { prompt: "p" }, cost: 1, idempotencyKey: "k1" });
      const second = await recreateGeneration(db(), first, "k2");
      assert.notEqual(second, first);
      assert.equal(await recreateGeneration(db(), first, "k2"), second);
      const g = await getGeneration(db(), second);
      assert.deepEqual(g?.input, { prompt: "p" });
      assert.equal(g?.cost, 1);
      const err = await rejection(() => recreateGeneration(db(), first, "k3"));
      assert.ok(err instanceof InsufficientCreditsError, String(err));
      assert.equal(err.needed, 1);
      assert.equal(err.available, 0);
    });
  });

  describe("user limits", () => {
    it("setUserLimits and getUserLimits round trip", async (t) => {
      if (await lacks(t, getEnv(), "set_user_limits", "i13-product")) return;
      const u = user("limits");
      const before = await getUserLimits(db(), u);
      assert.equal(before.maxQueued.isDefault, true);
      const after = await setUserLimits(db(), u, { maxQueued: 7, perMinute: 30, weight: 2.5 });
      assert.deepEqual(after.maxQueued, { value: 7, isDefault: false });
      assert.deepEqual(after.perMinute, { value: 30, isDefault: false });
      assert.deepEqual(after.weight, { value: 2.5, isDefault: false });
      assert.equal(after.maxInFlight.isDefault, true);
      assert.deepEqual(await getUserLimits(db(), u), after);
      const reset = await setUserLimits(db(), u, {});
      assert.deepEqual(reset, before);
    });

    it("setUserLimits refuses limits out of range", async (t) => {
      if (await lacks(t, getEnv(), "set_user_limits", "i13-product")) return;
      for (const limits of [{ maxQueued: 0 }, { weight: 5000 }]) {
        const err = await rejection(() => setUserLimits(db(), user("badlimits"), limits));
        assert.ok(err instanceof InvalidArgumentError, `${JSON.stringify(limits)}: ${String(err)}`);
      }
    });

    it("GQ429 becomes QuotaExceededError with limit, max and current; nothing written", async (t) => {
      if (await lacks(t, getEnv(), "set_user_limits", "i13-product")) return;
      const u = user("quota");
      await grantCredits(db(), u, 10, `pay-${u}`);
      await setUserLimits(db(), u, { maxQueued: 1 });
      const err = await rejection(() =>
        getDriver().tx(async (tx) => {
          await enqueueGeneration(tx, { userId: u, provider: "fal", model: "m", input: {}, cost: 1, idempotencyKey: "k1" });
          await enqueueGeneration(tx, { userId: u, provider: "fal", model: "m", input: {}, cost: 1, idempotencyKey: "k2" });
        }),
      );
      assert.ok(err instanceof QuotaExceededError, String(err));
      assert.equal(err.code, "GQ429");
      assert.equal(err.limit, "max_queued");
      assert.equal(err.max, 1);
      assert.equal(err.current, 1);
      assert.deepEqual(await creditBalance(db(), u), { available: 10, held: 0 });
    });
  });
}
