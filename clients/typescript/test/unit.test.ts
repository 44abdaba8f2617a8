// The parts that need no database: token signatures, error mapping of driver-shaped errors,
// the generation parser, handle detection, and the subscription loop's reconnect and stop
// rules over a scripted EventSource.

import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { describe, it } from "node:test";
import {
  GoneError,
  InsufficientCreditsError,
  InvalidArgumentError,
  mapError,
  mintEventsToken,
  NotFoundError,
  parseGeneration,
  QuotaExceededError,
  toQueryable,
} from "@genq/client";
import { subscribeGeneration, subscribeUser, type EventSourceLike, type MessageEventLike } from "@genq/client/browser";

describe("mintEventsToken", () => {
  it("signs an HS256 JWT with sub, iat, exp and the optional gen and aud claims", () => {
    const now = new Date("2026-01-01T00:00:00Z");
    const token = mintEventsToken("user-1", 600, { secret: "s3cret", generations: ["g1"], audience: "genq-events", now });
    const [head, body, sig] = token.split(".");
    assert.deepEqual(JSON.parse(Buffer.from(head!, "base64url").toString()), { alg: "HS256", typ: "JWT" });
    assert.deepEqual(JSON.parse(Buffer.from(body!, "base64url").toString()), {
      sub: "user-1", iat: 1767225600, exp: 1767226200, gen: ["g1"], aud: "genq-events",
    });
    assert.equal(sig, createHmac("sha256", "s3cret").update(`${head}.${body}`).digest("base64url"));
  });

  it("trims a text secret as the daemon does", () => {
    const now = new Date("2026-01-01T00:00:00Z");
    assert.equal(mintEventsToken("u", 60, { secret: "s3cret\n", now }), mintEventsToken("u", 60, { secret: "s3cret", now }));
    assert.equal(mintEventsToken("u", 60, { secret: new TextEncoder().encode("s3cret"), now }), mintEventsToken("u", 60, { secret: "s3cret", now }));
  });

  it("refuses an empty user, a non-positive ttl and an empty secret", () => {
    assert.throws(() => mintEventsToken("", 60, { secret: "s" }), TypeError);
    assert.throws(() => mintEventsToken("u", 0, { secret: "s" }), RangeError);
    assert.throws(() => mintEventsToken("u", Number.NaN, { secret: "s" }), RangeError);
    assert.throws(() => mintEventsToken("u", 60, { secret: "" }), TypeError);
    assert.throws(() => mintEventsToken("u", 60, { secret: " \n" }), TypeError);
  });
});

describe("mapError", () => {
  it("maps genq's SQLSTATEs and keeps the driver's error as cause", () => {
    const raw = { code: "GQ402", message: "insufficient credits", detail: '{"needed": 30, "available": 5}', hint: "add credits" };
    const e = mapError(raw);
    assert.ok(e instanceof InsufficientCreditsError);
    assert.equal(e.needed, 30);
    assert.equal(e.available, 5);
    assert.equal(e.hint, "add credits");
    assert.equal(e.cause, raw);
    const q = mapError({ code: "GQ429", message: "quota", detail: '{"limit": "per_minute", "max": 5, "current": 6}' });
    assert.ok(q instanceof QuotaExceededError);
    assert.deepEqual([q.limit, q.max, q.current], ["per_minute", 5, 6]);
    assert.ok(mapError({ code: "P0002", message: "generation x not found" }) instanceof NotFoundError);
    assert.ok(mapError({ code: "GQ410", message: "input scrubbed" }) instanceof GoneError);
    for (const code of ["22023", "22003", "54000", "22P02"]) {
      assert.ok(mapError({ code, message: "bad" }) instanceof InvalidArgumentError, code);
    }
  });

  it("reads supabase-js (PostgREST) errors, whose DETAIL is `details`", () => {
    const e = mapError({ code: "GQ402", message: "insufficient credits", details: '{"needed": 30, "available": 0}', hint: null });
    assert.ok(e instanceof InsufficientCreditsError);
    assert.deepEqual([e.needed, e.available], [30, 0]);
  });

  it("returns every other error as the same object", () => {
    for (const err of [{ code: "23505", message: "dup" }, new Error("socket hang up"), "text", null, { code: 402 }]) {
      assert.equal(mapError(err), err);
    }
  });

  it("a GQ402 with an unreadable DETAIL still maps (fields NaN)", () => {
    const e = mapError({ code: "GQ402", message: "m", detail: "not json" });
    assert.ok(e instanceof InsufficientCreditsError);
    assert.ok(Number.isNaN(e.needed));
  });
});

const sample = {
  id: "6f1c3a9e-0000-4000-8000-000000000001",
  user_id: "u1",
  provider: "fal",
  model: "m",
  state: "running-unknown",
  progress: { phase: "running", queue_position: null, percent: 45, message: "45%|", updated_at: "2026-01-01T00:00:01Z" },
  output: [{ store: "local", key: "outputs/u1/x/0.png", url: "file:///x", size: 10, content_type: "image/png" }],
  error: { code: "moderation", message: "refused" },
  cost: 10,
  credits: { held: 10, captured: 0, released: 10 },
  input: { prompt: "p" },
  input_scrubbed: false,
  cancel_requested: true,
  deleted_at: null,
  created_at: "2026-01-01T00:00:00Z",
  submitted_at: null,
  finished_at: "2026-01-01T00:00:05Z",
  updated_at: "2026-01-01T00:00:05Z",
  version: 7,
};

describe("parseGeneration", () => {
  it("camelCases, parses timestamps into Date and keeps the version as a string", () => {
    const g = parseGeneration({ ...sample, state: "failed" });
    assert.equal(g.userId, "u1");
    assert.equal(g.state, "failed");
    assert.deepEqual(g.progress, { phase: "running", queuePosition: null, percent: 45, message: "45%|", updatedAt: new Date("2026-01-01T00:00:01Z") });
    assert.deepEqual(g.output, [{ store: "local", key: "outputs/u1/x/0.png", url: "file:///x", size: 10, contentType: "image/png" }]);
    assert.deepEqual(g.error, { code: "moderation", message: "refused" });
    assert.deepEqual(g.createdAt, new Date("2026-01-01T00:00:00Z"));
    assert.equal(g.submittedAt, null);
    assert.equal(g.cancelRequested, true);
    assert.equal(g.deletedAt, null);
    assert.equal(g.version, "7");
  });

  it("a scrubbed input reads as null; JSON text is accepted", () => {
    const g = parseGeneration(JSON.stringify({ ...sample, input: {}, input_scrubbed: true }));
    assert.equal(g.input, null);
    assert.equal(g.inputScrubbed, true);
  });

  it("refuses what is not a generation", () => {
    assert.throws(() => parseGeneration({ state: "queued" }), TypeError);
    assert.throws(() => parseGeneration(null), TypeError);
    assert.throws(() => parseGeneration("[1]"), TypeError);
  });
});

describe("toQueryable", () => {
  it("recognises postgres.js by unsafe, node-postgres by { rows }, a Queryable by rows", async () => {
    const seen: unknown[] = [];
    const pgLike = { query: async (text: string, params: unknown[]) => (seen.push(["pg", text, params]), { rows: [{ a: 1 }] }) };
    const pjs = Object.assign(() => undefined, { unsafe: async (text: string, params?: unknown[]) => (seen.push(["pjs", text, params]), [{ b: 2 }]) });
    const custom = { query: async () => [{ c: 3 }] };
    assert.deepEqual(await toQueryable(pgLike).query("q1", [1]), [{ a: 1 }]);
    assert.deepEqual(await toQueryable(pjs).query("q2", [2]), [{ b: 2 }]);
    assert.deepEqual(await toQueryable(custom).query("q3", []), [{ c: 3 }]);
    assert.deepEqual(seen, [["pg", "q1", [1]], ["pjs", "q2", [2]]]);
  });

  it("refuses a handle it cannot use", async () => {
    assert.throws(() => toQueryable({} as never), TypeError);
    await assert.rejects(toQueryable({ query: async () => 5 } as never).query("q", []), TypeError);
  });
});

/** A scripted EventSource: records every instance; the test drives its events. */
class FakeSource implements EventSourceLike {
  static all: FakeSource[] = [];
  readyState = 0;
  onopen: ((ev: never) => unknown) | null = null;
  onerror: ((ev: never) => unknown) | null = null;
  closed = false;
  private listeners = new Map<string, (ev: MessageEventLike) => void>();
  constructor(readonly url: string) {
    FakeSource.all.push(this);
  }
  addEventListener(type: string, listener: (ev: MessageEventLike) => void): void {
    this.listeners.set(type, listener);
  }
  close(): void {
    this.closed = true;
    this.readyState = 2;
  }
  emit(state: string, version: number): void {
    this.listeners.get("generation")?.({ data: JSON.stringify({ ...sample, state, version }), lastEventId: String(version) });
  }
  fail(closed: boolean): void {
    this.readyState = closed ? 2 : 0;
    (this.onerror as ((ev: unknown) => void) | null)?.({});
  }
}

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("subscribe (scripted EventSource)", () => {
  it("builds the stream URL with the token, delivers events and stops after a final state", () => {
    FakeSource.all = [];
    const states: string[] = [];
    subscribeGeneration("https://genq.example.com/base", "tok en", "g/1", (e) => states.push(e.generation.state), { EventSource: FakeSource });
    const es = FakeSource.all[0]!;
    assert.equal(es.url, "https://genq.example.com/base/v1/generations/g%2F1/events?token=tok+en");
    es.emit("queued", 1);
    es.emit("succeeded", 2);
    es.emit("failed", 3);
    assert.deepEqual(states, ["queued", "succeeded"]);
    assert.ok(es.closed);
  });

  it("reopens a stream the browser closed, with backoff; leaves retrying ones alone; unsubscribe stops it", async () => {
    FakeSource.all = [];
    const errors: Error[] = [];
    const stop = subscribeUser("http://127.0.0.1:1", "t", () => undefined, { EventSource: FakeSource, onError: (e) => errors.push(e), retryMs: 5, maxRetryMs: 10 });
    assert.equal(FakeSource.all[0]?.url, "http://127.0.0.1:1/v1/users/me/events?token=t");
    FakeSource.all[0]!.fail(false);
    await tick(30);
    assert.equal(FakeSource.all.length, 1, "the browser retries a CONNECTING stream itself");
    FakeSource.all[0]!.fail(true);
    await tick(30);
    assert.equal(FakeSource.all.length, 2, "a CLOSED stream is reopened");
    assert.equal(errors.length, 2);
    stop();
    assert.ok(FakeSource.all[1]!.closed);
    FakeSource.all[1]!.fail(true);
    await tick(30);
    assert.equal(FakeSource.all.length, 2, "nothing reopens after unsubscribe");
  });

  it("reopens with a refreshed token; a failing refresher is reported and asked again later", async () => {
    FakeSource.all = [];
    const errors: Error[] = [];
    let calls = 0;
    const refreshToken = async () => {
      calls += 1;
      if (calls === 1) throw new Error("backend down");
      return `fresh-${calls}`;
    };
    const stop = subscribeGeneration("http://h", "first", "g1", () => undefined, {
      EventSource: FakeSource, onError: (e) => errors.push(e), retryMs: 5, maxRetryMs: 10, refreshToken,
    });
    assert.equal(FakeSource.all[0]?.url, "http://h/v1/generations/g1/events?token=first");
    FakeSource.all[0]!.fail(true);
    await tick(60);
    stop();
    assert.equal(calls, 2);
    assert.equal(FakeSource.all.length, 2);
    assert.equal(FakeSource.all[1]?.url, "http://h/v1/generations/g1/events?token=fresh-2");
    assert.deepEqual(errors.map((e) => e.message), ["genq: event stream interrupted", "backend down"]);
  });

  it("reports an unparsable event and carries on", () => {
    FakeSource.all = [];
    const errors: Error[] = [];
    const states: string[] = [];
    const stop = subscribeUser("http://h", "t", (e) => states.push(e.generation.state), { EventSource: FakeSource, onError: (e) => errors.push(e) });
    const es = FakeSource.all[0]!;
    (es as unknown as { listeners: Map<string, (ev: MessageEventLike) => void> }).listeners.get("generation")?.({ data: "{not json" });
    es.emit("queued", 1);
    stop();
    assert.equal(errors.length, 1);
    assert.deepEqual(states, ["queued"]);
  });

  it("without an EventSource it says what to pass", () => {
    assert.throws(() => subscribeUser("http://h", "t", () => undefined), /pass one as options.EventSource/);
  });
});
