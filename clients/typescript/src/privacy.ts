// Retention and privacy (docs/privacy.md): uploads registered for deletion on time, account
// erasure and data export requests. Ids of these rows are bigints, returned as strings.

import { asText, one } from "./call.js";
import type { Db } from "./queryable.js";

/** What an upload is, which decides how long genq keeps it. */
export type BlobRole = "source" | "reference" | "output" | "export";
/** Where it is stored. */
export type BlobStore = "local" | "s3" | "vercel" | "supabase";

/** An upload genq must delete on time. */
export interface NewBlob {
  userId: string;
  role: BlobRole;
  store: BlobStore;
  /** A relative key with a segment equal to the user id, e.g. `uploads/<user>/<file>`. */
  key: string;
  /** The generation it belongs to (a source upload is dated from its end). */
  generationId?: string;
}

/** Registers an upload; call it in the transaction that records the upload. Returns its id. */
export async function registerBlob(db: Db, blob: NewBlob): Promise<string> {
  const id = await one(
    db,
    "SELECT genq.register_blob($1::text, $2::text, $3::text, $4::text, $5::uuid)::text AS id",
    [blob.userId, blob.role, blob.store, blob.key, blob.generationId ?? null],
    "id",
  );
  return asText(id);
}

/** Asks genq to erase the user's account on its due date; returns the request id (the open one if any). */
export async function requestErasure(db: Db, userId: string): Promise<string> {
  return asText(await one(db, "SELECT genq.request_erasure($1::text)::text AS id", [userId], "id"));
}

/** Asks genq to export the user's data as a JSON archive; returns the request id. */
export async function requestExport(db: Db, userId: string): Promise<string> {
  return asText(await one(db, "SELECT genq.request_export($1::text)::text AS id", [userId], "id"));
}
