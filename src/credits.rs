//! Credits: holds, captures and releases recorded in an append-only ledger.
