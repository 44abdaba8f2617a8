// The browser helpers in Node (the `eventsource` package as EventSource) against the real
// daemon's SSE endpoints, with tokens from mintEventsToken: a generation followed from
// enqueue to succeeded, the user stream, and refused tokens.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, it, type TestContext } from "node:test";
import { EventSource } from "eventsource";
import { enqueueGeneration, grantCredits, mintEventsToken } from "@genq/client";
import { subscribeGeneration, subscribeUser, type GenqEvent, type Unsubscribe } from "@genq/client/browser";
import type { Driver } from "./drivers.js";
import { waitUntil, type TestEnv } from "./harness.js";

/** Skips `t` when the daemon has no event streams (before branch i14-sse). */
const noStreams = (t: TestContext, env: TestEnv): boolean => {
  if (env.eventsOn) return false;
  t.skip("the daemon serves no event streams (GET /v1/users/me/events answered 404; branch i14-sse)");
  return true;
};

export function eventsSuite(getEnv: () => TestEnv, getDriver: () => Driver): void {
  const user = (what: string) => `ts-events-${what}-${randomUUID().slice(0, 8)}`;
  const enqueueOne = async (u: string, key: string) => {
    await grantCredits(getDriver().db, u, 10, `pay-${u}-${key}`);
    return enqueueGeneration(getDriver().db, {
      userId: u, provider: "replicate", model: "owner/model", input: { prompt: "a boat" }, cost: 10, idempotencyKey: key,
    });
  };

  /** Subscribes with `token` until two attempts were refused; no event may arrive. */
  const expectRefused = async (token: string, id: string) => {
    const events: GenqEvent[] = [];
    let errors = 0;
    const stop = subscribeGeneration(getEnv().publicBase, token, id, (e) => events.push(e), {
      EventSource, onError: () => { errors += 1; }, retryMs: 50, maxRetryMs: 100,
    });
    try {
      await waitUntil("two refused connection attempts", 20000, async () => errors >= 2);
    } finally {
      stop();
    }
    assert.deepEqual(events, []);
  };

  describe("subscribeGeneration", () => {
    it("follows a generation from queued to succeeded, then stops by itself", async (t) => {
      if (noStreams(t, getEnv())) return;
      const env = getEnv();
      const u = user("one");
      // The generation queue is paused until the stream has shown the queued state, so the
      // test sees the whole way whatever the machine's speed.
      env.genq("queue", "pause", "generation", "--reason", "client test");
      let resumed = false;
      const resume = () => {
        if (!resumed) env.genq("queue", "resume", "generation");
        resumed = true;
      };
      const events: GenqEvent[] = [];
      const errors: Error[] = [];
      let stop: Unsubscribe | undefined;
      try {
        const id = await enqueueOne(u, "k1");
        const token = mintEventsToken(u, 300, { secret: env.eventsSecret, generations: [id] });
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`no final event; saw ${events.map((e) => e.generation.state).join(",")}; errors ${errors.join("; ")}`)), 60000);
          stop = subscribeGeneration(env.publicBase, token, id, (e) => {
            events.push(e);
            if (e.generation.state === "queued") resume();
            if (e.generation.state === "succeeded" || e.generation.state === "failed") {
              clearTimeout(timer);
              resolve();
            }
          }, { EventSource, onError: (e) => errors.push(e), retryMs: 200 });
        });
      } finally {
        stop?.();
        resume();
      }
      const states = events.map((e) => e.generation.state);
      assert.equal(states[0], "queued");
      assert.equal(states[states.length - 1], "succeeded", states.join(","));
      const last = events[events.length - 1]!.generation;
      assert.ok(last.output.length >= 1);
      assert.ok(last.finishedAt instanceof Date);
      assert.deepEqual(last.credits, { held: 0, captured: 10, released: 0 });
      const versions = events.map((e) => BigInt(e.generation.version));
      for (let i = 1; i < versions.length; i++) assert.ok(versions[i]! > versions[i - 1]!, `versions increase: ${versions.join(",")}`);
      assert.equal(events[events.length - 1]!.eventId, last.version, "the SSE id of a generation stream is its version");
    });

    it("a token signed with another secret gets no event; onError reports and it keeps retrying", async (t) => {
      if (noStreams(t, getEnv())) return;
      const u = user("forged");
      const id = await enqueueOne(u, "k1");
      await expectRefused(mintEventsToken(u, 300, { secret: "not-the-daemons-secret" }), id);
    });

    it("another user's token gets no event for the generation", async (t) => {
      if (noStreams(t, getEnv())) return;
      const id = await enqueueOne(user("owner"), "k1");
      await expectRefused(mintEventsToken(user("other"), 300, { secret: getEnv().eventsSecret }), id);
    });

    it("a token whose gen claim lists other generations gets no event", async (t) => {
      if (noStreams(t, getEnv())) return;
      const u = user("scoped");
      const id = await enqueueOne(u, "k1");
      const other = await enqueueOne(u, "k2");
      await expectRefused(mintEventsToken(u, 300, { secret: getEnv().eventsSecret, generations: [other] }), id);
    });
  });

  describe("subscribeUser", () => {
    it("delivers the user's generation up to its final state", async (t) => {
      if (noStreams(t, getEnv())) return;
      const env = getEnv();
      const u = user("all");
      const token = mintEventsToken(u, 300, { secret: env.eventsSecret });
      const id = await enqueueOne(u, "k1");
      const states: string[] = [];
      const stop = subscribeUser(env.publicBase, token, (e) => {
        assert.equal(e.generation.userId, u);
        if (e.generation.id === id) states.push(e.generation.state);
      }, { EventSource, retryMs: 200 });
      try {
        await waitUntil("the user stream's final event", 60000, async () => states.includes("succeeded"));
      } finally {
        stop();
      }
      assert.equal(states[states.length - 1], "succeeded");
    });
  });
}
