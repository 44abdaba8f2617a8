// Tokens for the browser's event streams (GET /v1/generations/{id}/events and
// /v1/users/me/events): an HS256 JWT the backend signs with the secret it shares with the
// daemons (`[events]` in genq.toml). Signed with node:crypto, so no JWT library is needed;
// server side only (the secret must never reach a browser).

import { createHmac } from "node:crypto";

/** Options of `mintEventsToken`. */
export interface EventsTokenOptions {
  /**
   * The shared HS256 secret: the daemons' `GENQ_EVENTS_JWT_SECRET` (or `[events]
   * jwt_secret_file`). Text is trimmed as the daemon trims it, so a value read from the same
   * file with its trailing newline signs the same way.
   */
  secret: string | Uint8Array;
  /** Restrict the token to these generation ids (the `gen` claim). */
  generations?: readonly string[];
  /** The `aud` claim, if the daemons are configured to require one. */
  audience?: string;
  /** The clock, for tests (default now). */
  now?: Date;
}

function base64url(data: string | Uint8Array): string {
  return Buffer.from(data).toString("base64url");
}

/**
 * A token letting the browser of `userId` follow their generations for `ttlSeconds`
 * (`sub` = user id, `iat`, `exp`, optional `gen` and `aud`).
 */
export function mintEventsToken(userId: string, ttlSeconds: number, opts: EventsTokenOptions): string {
  if (typeof userId !== "string" || userId.length === 0) {
    throw new TypeError("genq: mintEventsToken needs a non-empty user id");
  }
  if (!Number.isFinite(ttlSeconds) || ttlSeconds <= 0) {
    throw new RangeError("genq: mintEventsToken needs a positive ttl in seconds");
  }
  const secret = typeof opts.secret === "string" ? Buffer.from(opts.secret.trim(), "utf8") : opts.secret;
  if (secret.length === 0) throw new TypeError("genq: mintEventsToken needs a non-empty secret");
  const iat = Math.floor((opts.now ?? new Date()).getTime() / 1000);
  const claims: Record<string, unknown> = { sub: userId, iat, exp: iat + Math.ceil(ttlSeconds) };
  if (opts.generations !== undefined) claims["gen"] = [...opts.generations];
  if (opts.audience !== undefined) claims["aud"] = opts.audience;
  const head = `${base64url(JSON.stringify({ alg: "HS256", typ: "JWT" }))}.${base64url(JSON.stringify(claims))}`;
  const signature = createHmac("sha256", secret).update(head).digest("base64url");
  return `${head}.${signature}`;
}
