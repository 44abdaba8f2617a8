// Generations: hold credits and create one (`genq.enqueue_generation`), cancel, read, list,
// recreate and delete, each one SQL call on the caller's handle. Reads return the JSON of
// `genq.get_generation` parsed into `Generation` (types.ts).

import { asJson, asText, bigintParam, call, jsonParam, one } from "./call.js";
import type { Db } from "./queryable.js";
import { parseGeneration, type Generation, type GenerationState, type Provider } from "./types.js";

/** A generation request (`genq.enqueue_generation`). */
export interface NewGeneration {
  userId: string;
  provider: Provider;
  /** The provider's model id, e.g. `bytedance/seedance-1-pro`. */
  model: string;
  /** The model input, sent to the provider as is. */
  input: unknown;
  /** Credits held now, captured on success, released on failure or cancellation. */
  cost: number | bigint;
  /** Per user: the same key again returns the first generation and holds nothing. */
  idempotencyKey: string;
}

/**
 * Holds `cost` credits and creates the generation with its submit job, in the caller's
 * transaction. Returns the generation id (uuid). Throws `InsufficientCreditsError` (GQ402)
 * or `QuotaExceededError` (GQ429) with nothing written.
 */
export async function enqueueGeneration(db: Db, g: NewGeneration): Promise<string> {
  const id = await one(
    db,
    `SELECT genq.enqueue_generation(user_id => $1::text, provider => $2::text, model => $3::text,
            input => $4::text::jsonb, cost => $5::bigint, idempotency_key => $6::text)::text AS id`,
    [g.userId, g.provider, g.model, jsonParam(g.input), bigintParam(g.cost), g.idempotencyKey],
    "id",
  );
  return asText(id);
}

/**
 * Cancels a generation: a queued one ends `cancelled` at once (hold released); a submitted
 * one is cancelled at the provider in the background. Returns the state it was in (or
 * `cancelled`). Throws `NotFoundError` for an unknown id.
 */
export async function cancelGeneration(db: Db, id: string): Promise<GenerationState> {
  const state = await one(db, "SELECT genq.cancel_generation($1::uuid)::text AS state", [id], "state");
  return asText(state) as GenerationState;
}

/** The generation with this id, or null when there is none. */
export async function getGeneration(db: Db, id: string): Promise<Generation | null> {
  const json = asJson(await one(db, "SELECT genq.get_generation($1::uuid)::text AS g", [id], "g"));
  return json === null ? null : parseGeneration(json);
}

/** Options of `listGenerations`. */
export interface ListOptions {
  /** Page size (genq accepts 1..100; default 20). */
  limit?: number;
  /** The id of the last generation of the previous page: the next page starts after it. */
  before?: string;
}

/** A user's generations, newest first, one page (keyset pagination with `before`). */
export async function listGenerations(db: Db, userId: string, opts: ListOptions = {}): Promise<Generation[]> {
  const rows = await call(
    db,
    "SELECT g::text AS g FROM genq.list_generations($1::text, coalesce($2::integer, 20), $3::uuid) AS g",
    [userId, opts.limit ?? null, opts.before ?? null],
  );
  return rows.map((r) => parseGeneration(asJson(r["g"])));
}

/**
 * A new generation with the same user, provider, model, input and cost as `id` (credits held
 * again; idempotent per key). Returns the new id.
 */
export async function recreateGeneration(db: Db, id: string, idempotencyKey: string): Promise<string> {
  const newId = await one(
    db,
    "SELECT genq.recreate_generation($1::uuid, $2::text)::text AS id",
    [id, idempotencyKey],
    "id",
  );
  return asText(newId);
}

/**
 * Deletes a generation for its user: cancels it if still running, scrubs its input and
 * output metadata and schedules its stored files for deletion. Returns the state it was in.
 */
export async function deleteGeneration(db: Db, id: string): Promise<GenerationState> {
  const state = await one(db, "SELECT genq.delete_generation($1::uuid)::text AS state", [id], "state");
  return asText(state) as GenerationState;
}
