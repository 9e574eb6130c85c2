//! Rebuild when a migration changes: `embed_migrations!` does not notice new folders itself.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
