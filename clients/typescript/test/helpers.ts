// Small helpers shared by the suites: the rejection of a call, and skipping a test whose
// SQL another branch adds when this schema lacks it (the skip names the branch).

import assert from "node:assert/strict";
import type { TestContext } from "node:test";
import { backendRole, type TestEnv } from "./harness.js";

/** The error `fn` rejects with (fails the test if it resolves). */
export async function rejection(fn: () => Promise<unknown>): Promise<unknown> {
  try {
    await fn();
  } catch (err) {
    return err;
  }
  assert.fail("expected the call to fail");
}

/**
 * Whether the schema lacks function genq.`name`, or the backend role may not call it; the
 * test is then skipped with a reason naming the branch, or the grant to combine on merge.
 */
export async function lacks(t: TestContext, env: TestEnv, name: string, branch: string): Promise<boolean> {
  const { rows } = await env.admin.query(
    `SELECT count(*) > 0 AS present, coalesce(bool_and(has_function_privilege($2, p.oid, 'EXECUTE')), false) AS granted
       FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
      WHERE n.nspname = 'genq' AND p.proname = $1`,
    [name, backendRole],
  );
  if (rows[0]?.present !== true) {
    t.skip(`genq.${name} (branch ${branch}) is not in this schema`);
    return true;
  }
  if (rows[0]?.granted !== true) {
    t.skip(
      `the backend role may not EXECUTE genq.${name}: the backend list of genq.secure_objects in the last migration ` +
        `lacks it (merge: combine the lists of every migration that replaced secure_objects)`,
    );
    return true;
  }
  return false;
}

/** Whether table genq.`table` lacks column `column` (the test is then skipped, naming the branch). */
export async function lacksColumn(t: TestContext, env: TestEnv, table: string, column: string, branch: string): Promise<boolean> {
  const { rows } = await env.admin.query(
    "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'genq' AND table_name = $1 AND column_name = $2) AS ok",
    [table, column],
  );
  if (rows[0]?.ok === true) return false;
  t.skip(`genq.${table}.${column} (branch ${branch}) is not in this schema`);
  return true;
}
