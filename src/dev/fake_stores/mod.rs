//! Fake blob stores on loopback (Vercel Blob, Supabase Storage), beside the fake
//! providers so the tests, the demo and the benchmarks can all use them.

pub mod supabase;
pub mod vercel;
