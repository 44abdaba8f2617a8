// Credits: grants (idempotent per key, e.g. the payment id), the balance, and payment
// invoices (`genq.record_invoice`, docs/credits.md). Amounts are numbers: genq bounds a
// balance to 10^12 credits, well inside a double's exact integers.

import { asText, bigintParam, call, one } from "./call.js";
import type { Db } from "./queryable.js";
import type { CreditBalance } from "./types.js";

/**
 * Grants `amount` credits to `userId`; the same key with the same user and amount again is a
 * no-op. Returns the user's available credits afterwards.
 */
export async function grantCredits(db: Db, userId: string, amount: number | bigint, idempotencyKey: string): Promise<number> {
  const available = await one(
    db,
    "SELECT genq.grant_credits($1::text, $2::bigint, $3::text)::text AS available",
    [userId, bigintParam(amount), idempotencyKey],
    "available",
  );
  return Number(asText(available));
}

/** The user's available and held credits (zero for an unknown user). */
export async function creditBalance(db: Db, userId: string): Promise<CreditBalance> {
  const rows = await call(
    db,
    "SELECT available::text AS available, held::text AS held FROM genq.credit_balance($1::text)",
    [userId],
  );
  const row = rows[0];
  return { available: Number(asText(row?.["available"])), held: Number(asText(row?.["held"])) };
}

/** A payment invoice created by the backend (`genq.record_invoice`). */
export interface Invoice {
  txnId: string;
  orderNumber: string;
  userId: string;
  credits: number | bigint;
}

/** Records an invoice so its payment callback can grant the credits; idempotent per `txnId`. */
export async function recordInvoice(db: Db, invoice: Invoice): Promise<void> {
  await call(db, "SELECT genq.record_invoice($1::text, $2::text, $3::text, $4::bigint)", [
    invoice.txnId,
    invoice.orderNumber,
    invoice.userId,
    bigintParam(invoice.credits),
  ]);
}
