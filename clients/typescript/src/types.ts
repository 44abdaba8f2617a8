// The shapes genq returns, as TypeScript types, and the one parser from genq's JSON (the
// JSON of `genq.get_generation`, which the event streams also carry) to them: snake_case
// becomes camelCase, timestamps become `Date`, bigint ids stay strings. Shared by the
// server and browser entry points, so it imports nothing from Node.

/** Where a generation is (docs/generation.md). */
export type GenerationState = "queued" | "submitting" | "submitted" | "succeeded" | "failed" | "cancelled";

/** The states a generation never leaves. */
export const FINAL_STATES: readonly GenerationState[] = ["succeeded", "failed", "cancelled"];

/** Whether `state` is final (succeeded, failed or cancelled). */
export function isFinal(state: GenerationState): boolean {
  return FINAL_STATES.includes(state);
}

/** The providers genq drives. */
export type Provider = "fal" | "byteplus" | "replicate";

/** What the provider last reported while rendering (null until it reports). */
export interface Progress {
  /** e.g. `queued`, `starting`, `running`. */
  phase: string;
  /** Place in the provider's queue, when it says. */
  queuePosition: number | null;
  /** 0..100, when the provider's logs say. */
  percent: number | null;
  /** The provider's last log line (capped). */
  message: string | null;
  updatedAt: Date | null;
}

/** One stored output object (`outputs/<user_id>/<generation_id>/<n>.<ext>`). */
export interface OutputFile {
  /** `local`, `s3`, `vercel` or `supabase`. */
  store: string;
  key: string;
  url: string;
  size: number;
  contentType: string | null;
}

/** Machine codes of why a generation failed or was cancelled (docs/generation.md). */
export type GenerationErrorCode =
  | "moderation"
  | "invalid_input"
  | "provider_failed"
  | "timeout"
  | "cancelled"
  | "output_unfetchable"
  | "storage_failed"
  | "internal_error"
  | (string & {});

/** Why a generation failed or was cancelled, safe to show to its user. */
export interface GenerationError {
  code: GenerationErrorCode;
  /** A user-safe message for the code. */
  message: string | null;
}

/** The credits of one generation, from the ledger. */
export interface GenerationCredits {
  held: number;
  captured: number;
  released: number;
}

/** One generation, as `getGeneration`, `listGenerations` and the event streams give it. */
export interface Generation {
  id: string;
  userId: string;
  provider: Provider;
  model: string;
  state: GenerationState;
  progress: Progress | null;
  /** The stored outputs, primary first (empty until succeeded, and after scrubbing). */
  output: OutputFile[];
  error: GenerationError | null;
  cost: number;
  credits: GenerationCredits | null;
  /** The model input; null once retention scrubbed it (`inputScrubbed`). */
  input: unknown;
  inputScrubbed: boolean;
  /** A cancellation was asked for and is on its way to the provider. */
  cancelRequested: boolean;
  createdAt: Date;
  submittedAt: Date | null;
  finishedAt: Date | null;
  updatedAt: Date;
  /** When its user deleted it (`deleteGeneration`), else null. */
  deletedAt: Date | null;
  /** Bumped on every state or progress change (the event id of the generation's stream). */
  version: string;
}

/** A user's credits (`genq.credit_balance`). */
export interface CreditBalance {
  available: number;
  held: number;
}

type Json = Record<string, unknown>;

function obj(v: unknown): Json | null {
  return v !== null && typeof v === "object" && !Array.isArray(v) ? (v as Json) : null;
}

function str(v: unknown): string | null {
  return typeof v === "string" ? v : v === null || v === undefined ? null : String(v);
}

function numOrNull(v: unknown): number | null {
  if (v === null || v === undefined || v === "") return null;
  const n = typeof v === "number" ? v : Number(v);
  return Number.isFinite(n) ? n : null;
}

function date(v: unknown): Date | null {
  if (v instanceof Date) return v;
  if (typeof v !== "string" || v === "") return null;
  const d = new Date(v);
  return Number.isNaN(d.getTime()) ? null : d;
}

function parseProgress(v: unknown): Progress | null {
  const p = obj(v);
  if (!p) return null;
  return {
    phase: str(p["phase"]) ?? "unknown",
    queuePosition: numOrNull(p["queue_position"]),
    percent: numOrNull(p["percent"]),
    message: str(p["message"]),
    updatedAt: date(p["updated_at"]),
  };
}

function parseOutput(v: unknown): OutputFile[] {
  const list = Array.isArray(v) ? v : Array.isArray(obj(v)?.["files"]) ? (obj(v)?.["files"] as unknown[]) : [];
  return list.flatMap((item) => {
    const o = obj(item);
    if (!o) return [];
    return [
      {
        store: str(o["store"]) ?? "",
        key: str(o["key"]) ?? "",
        url: str(o["url"]) ?? "",
        size: numOrNull(o["size"]) ?? 0,
        contentType: str(o["content_type"]),
      },
    ];
  });
}

function parseError(v: unknown): GenerationError | null {
  if (typeof v === "string") return { code: "unknown", message: v };
  const e = obj(v);
  if (!e) return null;
  return { code: str(e["code"]) ?? "unknown", message: str(e["message"]) };
}

function parseCredits(v: unknown): GenerationCredits | null {
  const c = obj(v);
  if (!c) return null;
  return {
    held: numOrNull(c["held"]) ?? 0,
    captured: numOrNull(c["captured"]) ?? 0,
    released: numOrNull(c["released"]) ?? 0,
  };
}

/** A generation from genq's JSON (`genq.get_generation`, an event's data). */
export function parseGeneration(json: unknown): Generation {
  const g = obj(typeof json === "string" ? (JSON.parse(json) as unknown) : json);
  if (!g || typeof g["id"] !== "string" || typeof g["state"] !== "string") {
    throw new TypeError("genq: not a generation (expected an object with id and state)");
  }
  const scrubbed = g["input_scrubbed"] === true;
  return {
    id: g["id"],
    userId: str(g["user_id"]) ?? "",
    provider: (str(g["provider"]) ?? "") as Provider,
    model: str(g["model"]) ?? "",
    state: g["state"] as GenerationState,
    progress: parseProgress(g["progress"]),
    output: parseOutput(g["output"]),
    error: parseError(g["error"]),
    cost: numOrNull(g["cost"]) ?? 0,
    credits: parseCredits(g["credits"]),
    input: scrubbed ? null : (g["input"] ?? null),
    inputScrubbed: scrubbed,
    cancelRequested: g["cancel_requested"] === true,
    createdAt: date(g["created_at"]) ?? new Date(0),
    submittedAt: date(g["submitted_at"]),
    finishedAt: date(g["finished_at"]),
    updatedAt: date(g["updated_at"]) ?? date(g["created_at"]) ?? new Date(0),
    deletedAt: date(g["deleted_at"]),
    version: str(g["version"]) ?? "0",
  };
}
