// The real environment of the client's tests: a fresh database migrated by the real
// `genq migrate`, the real fake provider (`genq fake-provider`) and a real `genq run`
// pointed at it on loopback ports, with its public listener serving the event streams.
// Torn down (processes stopped, database and roles dropped) after the tests.

import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";

const here = dirname(fileURLToPath(import.meta.url));
/** The repository root (build/test -> clients/typescript -> repo). */
export const repoRoot = resolve(here, "../../../..");
const genqBin = process.env["GENQ_BIN"] ?? join(repoRoot, "target/debug/genq");
/** This run's name: its database, and the prefix of its roles (roles are cluster-wide and
 * serve one database, so a run never shares them with another run's database). */
const runName = `genq_ts_${process.pid}_${randomBytes(3).toString("hex")}`;
const rolePrefix = `gq_${runName.slice("genq_".length)}`;
const roles = ["owner", "backend", "worker"].map((r) => `${rolePrefix}_${r}`);
/** The role a backend is granted (`genq_backend` under this run's prefix). */
export const backendRole = `${rolePrefix}_backend`;

/** What the tests reach. */
export interface TestEnv {
  /** The test database's URL. */
  url: string;
  /** The daemon's internal HTTP address (/healthz, /metrics). */
  httpBase: string;
  /** The daemon's public listener (webhooks, event streams). */
  publicBase: string;
  /** The HS256 secret the daemon verifies event tokens with (`GENQ_EVENTS_JWT_SECRET`). */
  eventsSecret: string;
  /** Whether the daemon serves the event streams (a daemon without them answers 404). */
  eventsOn: boolean;
  /** A pg pool as the test's own observer (not the client under test). */
  admin: pg.Pool;
  /** Runs the real `genq` CLI on the test database (e.g. `queue pause generation`). */
  genq(...args: string[]): void;
}

function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.once("error", fail);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr !== null ? addr.port : 0;
      srv.close(() => ok(port));
    });
  });
}

function databaseUrl(base: string, name: string): string {
  const u = new URL(base);
  u.pathname = `/${name}`;
  return u.toString();
}

/** Waits until `check` holds, polling; throws naming `what` after `ms`. */
export async function waitUntil(what: string, ms: number, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function stopProcess(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((ok) => {
    const kill = setTimeout(() => child.kill("SIGKILL"), 15000);
    child.once("exit", () => {
      clearTimeout(kill);
      ok();
    });
    child.kill("SIGTERM");
  });
}

/** Starts everything; `teardown` undoes it. */
export class Harness {
  env!: TestEnv;
  private base = process.env["DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/postgres";
  private dbName = runName;
  private dir = mkdtempSync(join(tmpdir(), "genq-ts-"));
  private fake: ChildProcess | undefined;
  private daemon: ChildProcess | undefined;
  private created = false;

  async setup(): Promise<TestEnv> {
    const root = new pg.Client({ connectionString: this.base });
    await root.connect();
    try {
      await root.query(`CREATE DATABASE ${this.dbName}`);
      this.created = true;
    } finally {
      await root.end();
    }
    const url = databaseUrl(this.base, this.dbName);
    const env = { ...process.env, DATABASE_URL: url, GENQ_CONFIG: "/dev/null", GENQ_DATABASE_ROLE_PREFIX: rolePrefix, GENQ_LOG: "warn" };
    const genq = (...args: string[]): void => {
      const run = spawnSync(genqBin, args, { env, encoding: "utf8" });
      if (run.status !== 0) throw new Error(`genq ${args.join(" ")} failed (${genqBin}): ${run.stderr}${run.error ?? ""}`);
    };
    genq("migrate");

    const fakePort = await freePort();
    this.fake = spawn(genqBin, ["fake-provider", "--port", String(fakePort), "--render-time", "300ms"], {
      env,
      stdio: ["ignore", "ignore", "inherit"],
    });
    const httpPort = await freePort();
    const publicPort = await freePort();
    const fakeBase = `http://127.0.0.1:${fakePort}`;
    await waitUntil("the fake provider", 20000, async () => {
      await fetch(`${fakeBase}/_fake/stats`);
      return true;
    });

    const eventsSecret = randomBytes(32).toString("hex");
    const config = join(this.dir, "genq.toml");
    writeFileSync(
      config,
      [
        "[database]",
        `role_prefix = "${rolePrefix}"`,
        "[worker]",
        'poll_interval = "100ms"',
        "[http]",
        `bind = "127.0.0.1:${httpPort}"`,
        `public_bind = "127.0.0.1:${publicPort}"`,
        "[providers]",
        'webhook_base_url = ""',
        "[providers.fal]",
        `base_url = "${fakeBase}/fal"`,
        "[providers.byteplus]",
        `base_url = "${fakeBase}/byteplus/api/v3"`,
        "[providers.replicate]",
        `base_url = "${fakeBase}/replicate/v1"`,
        "[outbound]",
        'allow_private = ["127.0.0.0/8"]',
        "[storage]",
        'backend = "local"',
        "[storage.local]",
        `dir = "${join(this.dir, "blobs")}"`,
        "",
      ].join("\n"),
    );
    this.daemon = spawn(genqBin, ["run"], {
      env: {
        ...env,
        GENQ_CONFIG: config,
        GENQ_ERASURE_HASH_KEY: randomBytes(32).toString("hex"),
        GENQ_EVENTS_JWT_SECRET: eventsSecret,
        FAL_KEY: "fake-fal-key",
        ARK_API_KEY: "fake-ark-key",
        REPLICATE_API_TOKEN: "fake-replicate-token",
      },
      stdio: ["ignore", "ignore", "inherit"],
    });
    const httpBase = `http://127.0.0.1:${httpPort}`;
    await waitUntil("the daemon's /healthz", 30000, async () => (await fetch(`${httpBase}/healthz`)).ok);
    const publicBase = `http://127.0.0.1:${publicPort}`;
    await waitUntil("the daemon's public listener", 30000, async () => {
      await (await fetch(`${publicBase}/healthz`)).body?.cancel();
      return true; // any answer: the listener accepts
    });
    // Without a token the streams answer 401 when they exist, 404 when this daemon has none.
    const probe = await fetch(`${publicBase}/v1/users/me/events`);
    await probe.body?.cancel();
    this.env = {
      url,
      httpBase,
      publicBase,
      eventsSecret,
      eventsOn: probe.status !== 404,
      admin: new pg.Pool({ connectionString: url, max: 2 }),
      genq,
    };
    return this.env;
  }

  async teardown(): Promise<void> {
    await this.env?.admin.end().catch(() => undefined);
    await stopProcess(this.daemon);
    await stopProcess(this.fake);
    if (this.created) {
      const root = new pg.Client({ connectionString: this.base });
      await root.connect();
      try {
        await root.query(`DROP DATABASE IF EXISTS ${this.dbName} WITH (FORCE)`);
        for (const role of roles) await root.query(`DROP ROLE IF EXISTS ${role}`);
      } finally {
        await root.end();
      }
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
