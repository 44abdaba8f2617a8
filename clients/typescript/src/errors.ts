// genq's SQL API reports refusals as SQLSTATEs (docs/credits.md, migrations/0003 and 0012):
// here they become classes a backend can `instanceof` and read fields from, instead of
// parsing `err.detail`. Only genq's documented codes are mapped; any other error (a
// connection loss, a unique violation, a serialization failure) is rethrown untouched.

/** The fields Postgres drivers (node-postgres, postgres.js) and supabase-js put on a server error. */
interface DriverError {
  code?: unknown;
  message?: unknown;
  detail?: unknown;
  /** supabase-js (PostgREST) names it `details`. */
  details?: unknown;
  hint?: unknown;
}

/** Base class of every error the client maps from a genq SQLSTATE. */
export class GenqError extends Error {
  /** The SQLSTATE Postgres reported (e.g. `GQ402`). */
  readonly code: string;
  /** The DETAIL of the server error, if any. */
  readonly detail: string | undefined;
  /** The HINT of the server error, if any. */
  readonly hint: string | undefined;

  constructor(message: string, code: string, cause?: unknown, detail?: string, hint?: string) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = new.target.name;
    this.code = code;
    this.detail = detail;
    this.hint = hint;
  }
}

/** GQ402: the user's available credits do not cover the cost; nothing was held or written. */
export class InsufficientCreditsError extends GenqError {
  /** Credits the request needed. */
  readonly needed: number;
  /** Credits the user had available. */
  readonly available: number;

  constructor(message: string, needed: number, available: number, cause?: unknown, detail?: string, hint?: string) {
    super(message, "GQ402", cause, detail, hint);
    this.needed = needed;
    this.available = available;
  }
}

/** Which per-user limit refused a request (`genq.set_user_limits`). */
export type QuotaLimit = "max_queued" | "per_minute" | (string & {});

/** GQ429: a per-user quota refused the request; nothing was written. */
export class QuotaExceededError extends GenqError {
  /** The limit that refused it, e.g. `max_queued` or `per_minute`. */
  readonly limit: QuotaLimit;
  /** The limit's value. */
  readonly max: number;
  /** The user's count when refused. */
  readonly current: number;

  constructor(message: string, limit: QuotaLimit, max: number, current: number, cause?: unknown, detail?: string, hint?: string) {
    super(message, "GQ429", cause, detail, hint);
    this.limit = limit;
    this.max = max;
    this.current = current;
  }
}

/** P0002: the generation (or other object) named does not exist. */
export class NotFoundError extends GenqError {}

/**
 * GQ410: what the call needs is gone: `recreateGeneration` of a generation whose input
 * retention scrubbed, or that its user deleted. Nothing was written; ask the user for the
 * input again.
 */
export class GoneError extends GenqError {}

/**
 * An argument genq refused: 22023 (malformed or too long), 22003 (an amount out of range),
 * 54000 (a JSON argument over 1 MiB) or 22P02 (not a valid uuid/number). The message names
 * the function and the argument.
 */
export class InvalidArgumentError extends GenqError {}

/** SQLSTATEs mapped to `InvalidArgumentError`. */
export const INVALID_ARGUMENT_CODES: readonly string[] = ["22023", "22003", "54000", "22P02"];

function text(v: unknown): string | undefined {
  return typeof v === "string" ? v : undefined;
}

function detailJson(detail: string | undefined): Record<string, unknown> {
  if (detail === undefined) return {};
  try {
    const parsed: unknown = JSON.parse(detail);
    return parsed !== null && typeof parsed === "object" ? (parsed as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

function num(v: unknown): number {
  return typeof v === "number" ? v : Number(v);
}

/**
 * The typed error for a driver error carrying a genq SQLSTATE, or the error itself (the
 * same object) for anything else.
 */
export function mapError(err: unknown): unknown {
  if (err === null || typeof err !== "object") return err;
  const e = err as DriverError;
  const code = text(e.code);
  if (code === undefined) return err;
  const message = text(e.message) ?? code;
  const detail = text(e.detail) ?? text(e.details);
  const hint = text(e.hint);
  switch (code) {
    case "GQ402": {
      const d = detailJson(detail);
      return new InsufficientCreditsError(message, num(d["needed"]), num(d["available"]), err, detail, hint);
    }
    case "GQ429": {
      const d = detailJson(detail);
      return new QuotaExceededError(message, String(d["limit"] ?? ""), num(d["max"]), num(d["current"]), err, detail, hint);
    }
    case "P0002":
      return new NotFoundError(message, code, err, detail, hint);
    case "GQ410":
      return new GoneError(message, code, err, detail, hint);
    default:
      if (INVALID_ARGUMENT_CODES.includes(code)) {
        return new InvalidArgumentError(message, code, err, detail, hint);
      }
      return err;
  }
}
