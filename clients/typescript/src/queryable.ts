// How the client reaches Postgres: through the caller's own connection or transaction, so a
// job or generation commits (or rolls back) with the caller's writes. Every driver is reduced
// to one method, `query(text, params) -> rows`; node-postgres and postgres.js are recognised
// as they are, anything else (Drizzle, Kysely, a pool wrapper) passes a `Queryable`.

/** The one thing the client needs from a database handle: run SQL with `$n` parameters. */
export interface Queryable {
  query(text: string, params: readonly unknown[]): Promise<readonly Record<string, unknown>[]>;
}

/** A node-postgres `Pool`, `Client` or `PoolClient` (anything with `query` returning `{ rows }`). */
export interface PgLike {
  query(text: string, values?: unknown[]): Promise<{ rows: unknown[] }>;
}

/** A postgres.js `sql` instance or the `sql` of `sql.begin(async (sql) => ...)`. */
export interface PostgresJsLike {
  unsafe(query: string, parameters?: never[]): PromiseLike<unknown>;
}

/** What every function of the client accepts as its database handle. */
export type Db = Queryable | PgLike | PostgresJsLike;

/** Wraps a node-postgres `Pool`, `Client` or `PoolClient`. */
export function fromPg(client: PgLike): Queryable {
  return {
    async query(text, params) {
      const result = await client.query(text, [...params]);
      return result.rows as Record<string, unknown>[];
    },
  };
}

/** Wraps a postgres.js `sql` (or a transaction's `sql`). */
export function fromPostgresJs(sql: PostgresJsLike): Queryable {
  return {
    async query(text, params) {
      const rows = await sql.unsafe(text, [...params] as never[]);
      return rows as Record<string, unknown>[];
    },
  };
}

const wrapped = new WeakMap<object, Queryable>();

/**
 * The `Queryable` for any accepted handle: postgres.js is recognised by its `unsafe`
 * method, node-postgres by `query` answering `{ rows }`, and a `Queryable` answers rows.
 */
export function toQueryable(db: Db): Queryable {
  if (db === null || (typeof db !== "object" && typeof db !== "function")) {
    throw new TypeError("genq: expected a node-postgres client/pool, a postgres.js sql or a Queryable");
  }
  const known = wrapped.get(db);
  if (known) return known;
  let q: Queryable;
  if (typeof (db as PostgresJsLike).unsafe === "function") {
    q = fromPostgresJs(db as PostgresJsLike);
  } else if (typeof (db as Queryable).query === "function") {
    const inner = db as { query(text: string, params: unknown[]): Promise<unknown> };
    q = {
      async query(text, params) {
        const result = await inner.query(text, [...params]);
        if (Array.isArray(result)) return result as Record<string, unknown>[];
        const rows = (result as { rows?: unknown } | null)?.rows;
        if (Array.isArray(rows)) return rows as Record<string, unknown>[];
        throw new TypeError("genq: query() returned neither rows nor { rows }");
      },
    };
  } else {
    throw new TypeError("genq: expected a node-postgres client/pool, a postgres.js sql or a Queryable");
  }
  wrapped.set(db, q);
  return q;
}
