// The quick start (clients/typescript/README.md): a Next.js route handler that holds the
// user's credits and enqueues a generation in one transaction, answers 402 when the credits
// do not cover it, and hands the browser a token for the generation's event stream.
import { Pool } from "pg";
import { enqueueGeneration, InsufficientCreditsError, mintEventsToken } from "@genq/client";

const pool = new Pool({ connectionString: process.env["DATABASE_URL"] });

export async function POST(req: Request): Promise<Response> {
  const { userId, prompt, requestId } = (await req.json()) as { userId: string; prompt: string; requestId: string };
  try {
    const id = await enqueueGeneration(pool, {
      userId, provider: "replicate", model: "bytedance/seedance-1-pro", input: { prompt }, cost: 30, idempotencyKey: requestId,
    });
    const token = mintEventsToken(userId, 600, { secret: process.env["GENQ_EVENTS_JWT_SECRET"] ?? "", generations: [id] });
    return Response.json({ id, token });
  } catch (err) {
    if (err instanceof InsufficientCreditsError) return Response.json({ needed: err.needed, available: err.available }, { status: 402 });
    throw err;
  }
}
