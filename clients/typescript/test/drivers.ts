// The two drivers the suite runs on, behind one shape: a handle for autocommit calls and a
// transaction helper that commits when the callback returns and rolls back when it throws.
// Both log in as the test's superuser and act as `role` (the database's genq backend role,
// through the startup option `-c role=...`), so the suite proves a backend's grants suffice.

import pg from "pg";
import postgres from "postgres";
import type { Db } from "@genq/client";

export interface Driver {
  name: string;
  /** A handle for calls outside a transaction (a node-postgres Pool, a postgres.js sql). */
  db: Db;
  /** Runs `fn` in a transaction on the driver's own transaction handle. */
  tx<T>(fn: (db: Db) => Promise<T>): Promise<T>;
  /** The driver's own error class (errors genq does not map must come through as it). */
  nativeError: abstract new (...args: never[]) => Error;
  close(): Promise<void>;
}

export function nodePostgres(url: string, role: string): Driver {
  const pool = new pg.Pool({ connectionString: url, max: 3, options: `-c role=${role}` });
  return {
    name: "node-postgres",
    db: pool,
    async tx(fn) {
      const client = await pool.connect();
      try {
        await client.query("BEGIN");
        const out = await fn(client);
        await client.query("COMMIT");
        return out;
      } catch (err) {
        await client.query("ROLLBACK");
        throw err;
      } finally {
        client.release();
      }
    },
    nativeError: pg.DatabaseError,
    close: () => pool.end(),
  };
}

export function postgresJs(url: string, role: string): Driver {
  const sql = postgres(url, { max: 3, onnotice: () => undefined, connection: { options: `-c role=${role}` } });
  return {
    name: "postgres.js",
    db: sql,
    async tx(fn) {
      return (await sql.begin((tx) => fn(tx))) as never;
    },
    nativeError: postgres.PostgresError,
    close: () => sql.end({ timeout: 5 }),
  };
}
