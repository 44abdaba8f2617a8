// One real environment (harness.ts) for the whole run; the server suite on node-postgres
// and on postgres.js, then the generation lifecycle and the browser's event streams.

import { after, before, describe } from "node:test";
import { nodePostgres, postgresJs, type Driver } from "./drivers.js";
import { backendRole, Harness, type TestEnv } from "./harness.js";
import { driverSuite } from "./suite.js";
import { lifecycleSuite } from "./lifecycle.js";
import { eventsSuite } from "./events.js";
import { adaptersSuite } from "./adapters.js";

const harness = new Harness();
let env: TestEnv;
const drivers: Record<string, Driver> = {};

before(async () => {
  env = await harness.setup();
  drivers["pg"] = nodePostgres(env.url, backendRole);
  drivers["postgres"] = postgresJs(env.url, backendRole);
});

after(async () => {
  for (const d of Object.values(drivers)) await d.close();
  await harness.teardown();
});

for (const [key, label] of [["pg", "node-postgres"], ["postgres", "postgres.js"]] as const) {
  describe(label, () => {
    const driver = () => {
      const d = drivers[key];
      if (!d) throw new Error("harness not set up");
      return d;
    };
    driverSuite(driver, () => env);
    lifecycleSuite(driver, () => env);
  });
}

describe("other handles: pg Client, Kysely and Drizzle (README)", () => {
  adaptersSuite(() => env);
});

describe("browser event streams", () => {
  eventsSuite(() => env, () => {
    const d = drivers["pg"];
    if (!d) throw new Error("harness not set up");
    return d;
  });
});
