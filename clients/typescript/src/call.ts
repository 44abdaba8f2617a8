// The one path from a client function to the database: run the statement on the caller's
// handle and turn genq's SQLSTATEs into typed errors (errors.ts). Results are read as text
// (bigints as strings, JSON parsed here), so every driver and driver setting gives the same
// values.

import { mapError } from "./errors.js";
import { toQueryable, type Db } from "./queryable.js";

/** Runs `text` with `params` on `db`; rows as the driver returns them. */
export async function call(db: Db, text: string, params: readonly unknown[]): Promise<readonly Record<string, unknown>[]> {
  const q = toQueryable(db);
  try {
    return await q.query(text, params);
  } catch (err) {
    throw mapError(err);
  }
}

/** The first row's column `column` (a statement that always returns one row). */
export async function one(db: Db, text: string, params: readonly unknown[], column: string): Promise<unknown> {
  const rows = await call(db, text, params);
  const row = rows[0];
  if (row === undefined) throw new Error(`genq: expected one row from ${text.split("(")[0] ?? text}`);
  return row[column];
}

/** A text column as string (`::text` in the SQL keeps drivers from converting it). */
export function asText(v: unknown): string {
  if (typeof v !== "string") throw new Error(`genq: expected text, got ${v === null ? "null" : typeof v}`);
  return v;
}

/** JSON text (`::text` of a jsonb) parsed, or null. */
export function asJson(v: unknown): unknown {
  if (v === null || v === undefined) return null;
  return typeof v === "string" ? (JSON.parse(v) as unknown) : v;
}

/**
 * JSON for a `$n::text::jsonb` parameter, as text: node-postgres would send a JS array as a
 * SQL array, and postgres.js, told by the server that `$n::jsonb` is jsonb, would encode a
 * string again (a JSON string instead of the object). Through `text` both send it as is.
 */
export function jsonParam(v: unknown): string {
  return JSON.stringify(v ?? {});
}

/** A credits amount for a `$n::bigint` parameter. */
export function bigintParam(v: number | bigint | string): string {
  return typeof v === "string" ? v : v.toString();
}

/** Builds `name => $n::type` arguments from the defined entries only (SQL defaults apply to the rest). */
export class NamedArgs {
  readonly params: unknown[] = [];
  private readonly parts: string[] = [];

  add(name: string, type: string, value: unknown): this {
    if (value === undefined) return this;
    this.params.push(value);
    this.parts.push(`${name} => $${this.params.length}::${type}`);
    return this;
  }

  toString(): string {
    return this.parts.join(", ");
  }
}
