// Jobs: `genq.enqueue` and `genq.enqueue_many` on the caller's connection, so a job exists
// if and only if the caller's transaction commits. `defineJobs` adds compile-time payload
// types per job kind; the SQL is the same.

import { asText, call, jsonParam, NamedArgs, one } from "./call.js";
import type { Db } from "./queryable.js";

/** Options of one job; omitted ones take genq's defaults. */
export interface EnqueueOptions {
  /** Queue name (default `default`). */
  queue?: string;
  /** Earliest start (default now). */
  runAt?: Date;
  /** Lower runs first (default 0). */
  priority?: number;
  /** Attempts before the job is discarded (default 20). */
  maxAttempts?: number;
  /** While an unfinished job holds this key, its id is returned instead of a new job. */
  uniqueKey?: string;
  /** Who the job is for (e.g. a user id): a fair queue shares its slots among keys (migration 0013, docs/fairness.md). */
  fairnessKey?: string;
  /** A group whose limit the job counts against while it runs (e.g. `pdf-renderer`; fair queues only). */
  limitGroup?: string;
}

/** One job of `enqueueMany`. */
export type JobSpec<K extends string = string, P = unknown> = { kind: K; payload?: P } & EnqueueOptions;

/**
 * Enqueues one job in whatever transaction `db` is in. Returns the job id (a bigint, as a
 * string), or the id of the unfinished job already holding `uniqueKey`.
 */
export async function enqueue(db: Db, kind: string, payload?: unknown, opts: EnqueueOptions = {}): Promise<string> {
  const args = new NamedArgs()
    .add("kind", "text", kind)
    .add("payload", "text::jsonb", jsonParam(payload))
    .add("queue", "text", opts.queue)
    .add("run_at", "text::timestamptz", opts.runAt?.toISOString())
    .add("priority", "integer", opts.priority)
    .add("max_attempts", "integer", opts.maxAttempts)
    .add("unique_key", "text", opts.uniqueKey)
    .add("fairness_key", "text", opts.fairnessKey)
    .add("limit_group", "text", opts.limitGroup);
  return asText(await one(db, `SELECT genq.enqueue(${args})::text AS id`, args.params, "id"));
}

/**
 * Enqueues many jobs in one statement. Returns how many were inserted: jobs whose unique key
 * is held by an unfinished job are skipped.
 */
export async function enqueueMany(db: Db, jobs: readonly JobSpec[]): Promise<number> {
  const body = jobs.map((j) => {
    const row: Record<string, unknown> = { kind: j.kind, payload: j.payload ?? {} };
    if (j.queue !== undefined) row["queue"] = j.queue;
    if (j.runAt !== undefined) row["run_at"] = j.runAt.toISOString();
    if (j.priority !== undefined) row["priority"] = j.priority;
    if (j.maxAttempts !== undefined) row["max_attempts"] = j.maxAttempts;
    if (j.uniqueKey !== undefined) row["unique_key"] = j.uniqueKey;
    if (j.fairnessKey !== undefined) row["fairness_key"] = j.fairnessKey;
    if (j.limitGroup !== undefined) row["limit_group"] = j.limitGroup;
    return row;
  });
  const n = await one(db, "SELECT genq.enqueue_many($1::text::jsonb)::text AS n", [JSON.stringify(body)], "n");
  return Number(asText(n));
}

/** A job of a typed map: the kind and, for that kind, its payload type. */
export type TypedJob<M> = { [K in keyof M & string]: JobSpec<K, M[K]> }[keyof M & string];

/** `enqueue` and `enqueueMany` with payloads checked against a map of kinds to payload types. */
export interface TypedJobs<M> {
  enqueue<K extends keyof M & string>(db: Db, kind: K, payload: M[K], opts?: EnqueueOptions): Promise<string>;
  enqueueMany(db: Db, jobs: readonly TypedJob<M>[]): Promise<number>;
}

/**
 * Declares the job kinds of an application and their payload types; the returned `enqueue`
 * refuses, at compile time, an unknown kind or a payload of the wrong shape:
 *
 * ```ts
 * const jobs = defineJobs<{ "email.send": { to: string; subject: string } }>();
 * await jobs.enqueue(client, "email.send", { to: "a@example.com", subject: "Hi" });
 * ```
 */
export function defineJobs<M extends Record<string, unknown>>(): TypedJobs<M> {
  return {
    enqueue: (db, kind, payload, opts) => enqueue(db, kind, payload, opts),
    enqueueMany: (db, jobs) => enqueueMany(db, jobs),
  };
}
