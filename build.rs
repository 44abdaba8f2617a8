//! Rebuilds the crate when a migration is added or removed: `sqlx::migrate!` embeds
//! `migrations/` at compile time but only tracks the files it saw (what `sqlx migrate
//! build-script` generates).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
