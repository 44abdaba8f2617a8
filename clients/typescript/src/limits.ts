// Per-user limits (plans): how many generations a user may have in flight or queued, how
// many they may start per minute, and their share of the generation queue. Refusals at
// enqueue come back as `QuotaExceededError` (GQ429).

import { asJson, call, NamedArgs, one } from "./call.js";
import type { Db } from "./queryable.js";

/**
 * A user's plan. Each call of `setUserLimits` replaces the whole plan: an omitted (or null)
 * field follows genq's default (`[users]` in genq.toml), so `setUserLimits(db, user, {})`
 * resets the user. Limits are 1..1,000,000, weight 0.01..1000 (else `InvalidArgumentError`).
 */
export interface UserLimitsInput {
  /** Generations submitted to a provider at once. */
  maxInFlight?: number | null;
  /** Generations waiting to be submitted. */
  maxQueued?: number | null;
  /** Generations enqueued per minute. */
  perMinute?: number | null;
  /** Share of the generation queue against other users (default 1). */
  weight?: number | null;
}

/** One effective limit and whether it is genq's default. */
export interface EffectiveLimit {
  /** The limit; null = unlimited. */
  value: number | null;
  isDefault: boolean;
}

/** A user's effective limits (`genq.get_user_limits`). */
export interface UserLimits {
  maxInFlight: EffectiveLimit;
  maxQueued: EffectiveLimit;
  perMinute: EffectiveLimit;
  weight: EffectiveLimit;
}

function limit(raw: Record<string, unknown>, name: string): EffectiveLimit {
  const v = raw[name];
  return { value: v === null || v === undefined ? null : Number(v), isDefault: raw[`${name}_default`] === true };
}

function parseLimits(v: unknown): UserLimits {
  const json = asJson(v);
  const raw = (json !== null && typeof json === "object" ? json : {}) as Record<string, unknown>;
  return {
    maxInFlight: limit(raw, "max_in_flight"),
    maxQueued: limit(raw, "max_queued"),
    perMinute: limit(raw, "per_minute"),
    weight: limit(raw, "weight"),
  };
}

/** Sets (replaces) a user's plan; returns the effective limits afterwards (read on the same handle). */
export async function setUserLimits(db: Db, userId: string, limits: UserLimitsInput): Promise<UserLimits> {
  const args = new NamedArgs()
    .add("user_id", "text", userId)
    .add("max_in_flight", "integer", limits.maxInFlight ?? undefined)
    .add("max_queued", "integer", limits.maxQueued ?? undefined)
    .add("per_minute", "integer", limits.perMinute ?? undefined)
    .add("weight", "real", limits.weight ?? undefined);
  await call(db, `SELECT genq.set_user_limits(${args})`, args.params);
  return getUserLimits(db, userId);
}

/** A user's effective limits and which of them are genq's defaults. */
export async function getUserLimits(db: Db, userId: string): Promise<UserLimits> {
  return parseLimits(await one(db, "SELECT to_jsonb(l)::text AS l FROM genq.get_user_limits($1::text) AS l", [userId], "l"));
}
