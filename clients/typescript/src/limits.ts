// Per-user limits (plans): how many generations a user may have in flight or queued, how
// many they may start per minute, and their share of the generation queue. Refusals at
// enqueue come back as `QuotaExceededError` (GQ429).

import { asJson, NamedArgs, call, one } from "./call.js";
import type { Db } from "./queryable.js";

/** Limits to set; an omitted field is left to genq's default. */
export interface UserLimitsInput {
  /** Generations submitted to a provider at once. */
  maxInFlight?: number | null;
  /** Generations waiting to be submitted. */
  maxQueued?: number | null;
  /** Generations enqueued per minute. */
  perMinute?: number | null;
  /** Share of the generation queue against other users (1 = normal). */
  weight?: number | null;
}

/** One effective limit and whether it is genq's default. */
export interface EffectiveLimit<T = number> {
  value: T | null;
  isDefault: boolean;
}

/** A user's effective limits (`genq.get_user_limits`). */
export interface UserLimits {
  userId: string;
  maxInFlight: EffectiveLimit;
  maxQueued: EffectiveLimit;
  perMinute: EffectiveLimit;
  weight: EffectiveLimit;
  /** The JSON genq returned, for fields this client does not know. */
  raw: Record<string, unknown>;
}

/** Sets a user's limits (upsert); returns the effective limits afterwards. */
export async function setUserLimits(db: Db, userId: string, limits: UserLimitsInput): Promise<UserLimits> {
  const args = new NamedArgs()
    .add("user_id", "text", userId)
    .add("max_in_flight", "integer", limits.maxInFlight)
    .add("max_queued", "integer", limits.maxQueued)
    .add("per_minute", "integer", limits.perMinute)
    .add("weight", "real", limits.weight);
  await call(db, `SELECT genq.set_user_limits(${args})::text AS r`, args.params);
  return getUserLimits(db, userId);
}

function limit(raw: Record<string, unknown>, name: string): EffectiveLimit {
  const v = raw[name];
  const nested = v !== null && typeof v === "object" ? (v as Record<string, unknown>) : null;
  const value = nested ? nested["value"] : v;
  const isDefault = nested ? nested["is_default"] ?? nested["default"] : raw[`${name}_is_default`];
  return {
    value: value === null || value === undefined ? null : Number(value),
    isDefault: isDefault === true,
  };
}

/** A user's effective limits and which of them are genq's defaults. */
export async function getUserLimits(db: Db, userId: string): Promise<UserLimits> {
  const json = asJson(await one(db, "SELECT to_jsonb(l)::text AS l FROM genq.get_user_limits($1::text) AS l", [userId], "l"));
  const raw = (json !== null && typeof json === "object" ? json : {}) as Record<string, unknown>;
  return {
    userId,
    maxInFlight: limit(raw, "max_in_flight"),
    maxQueued: limit(raw, "max_queued"),
    perMinute: limit(raw, "per_minute"),
    weight: limit(raw, "weight"),
    raw,
  };
}
