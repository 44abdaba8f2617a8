// The server entry point (`@genq/client`): every genq SQL API call on the caller's own
// database handle (node-postgres, postgres.js or any `Queryable`), typed results and
// errors, and the token minting for the browser's event streams.

export { fromPg, fromPostgresJs, toQueryable } from "./queryable.js";
export type { Db, PgLike, PostgresJsLike, Queryable } from "./queryable.js";
export {
  GenqError,
  GoneError,
  INVALID_ARGUMENT_CODES,
  InsufficientCreditsError,
  InvalidArgumentError,
  NotFoundError,
  QuotaExceededError,
  mapError,
} from "./errors.js";
export type { QuotaLimit } from "./errors.js";
export * from "./types.js";
export { defineJobs, enqueue, enqueueMany } from "./jobs.js";
export type { EnqueueOptions, JobSpec, TypedJob, TypedJobs } from "./jobs.js";
export {
  cancelGeneration,
  deleteGeneration,
  enqueueGeneration,
  getGeneration,
  listGenerations,
  recreateGeneration,
} from "./generations.js";
export type { ListOptions, NewGeneration } from "./generations.js";
export { creditBalance, grantCredits, recordInvoice } from "./credits.js";
export type { Invoice } from "./credits.js";
export { getUserLimits, setUserLimits } from "./limits.js";
export type { EffectiveLimit, UserLimits, UserLimitsInput } from "./limits.js";
export { registerBlob, requestErasure, requestExport } from "./privacy.js";
export type { BlobRole, BlobStore, NewBlob } from "./privacy.js";
export { mintEventsToken } from "./token.js";
export type { EventsTokenOptions } from "./token.js";
