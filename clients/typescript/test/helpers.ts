// Small helpers shared by the suites: the rejection of a call, and skipping a test whose
// SQL another branch adds when this schema lacks it (the skip names the branch).

import assert from "node:assert/strict";
import type { TestContext } from "node:test";
import type { TestEnv } from "./harness.js";

/** The error `fn` rejects with (fails the test if it resolves). */
export async function rejection(fn: () => Promise<unknown>): Promise<unknown> {
  try {
    await fn();
  } catch (err) {
    return err;
  }
  assert.fail("expected the call to fail");
}

/** Whether the schema has function genq.`name` (else the test is skipped, naming the branch). */
export async function lacks(t: TestContext, env: TestEnv, name: string, branch: string): Promise<boolean> {
  const { rows } = await env.admin.query(
    "SELECT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'genq' AND p.proname = $1) AS ok",
    [name],
  );
  if (rows[0]?.ok === true) return false;
  t.skip(`genq.${name} (branch ${branch}) is not in this schema`);
  return true;
}
