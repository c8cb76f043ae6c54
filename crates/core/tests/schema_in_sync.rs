//! Files generated from the key table must be exactly what the code generates.
//! Regenerate with `UPDATE_SCHEMA=1 cargo test -p dicomweb-oauth-core --test schema_in_sync`.

use dicomweb_oauth_core::config::schema::{reference_markdown, section_schema_json};
use std::path::PathBuf;

fn check(relative: &str, generated: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative);
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, generated).unwrap();
    }
    let shipped = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        shipped == generated,
        "{relative} is out of date: run `UPDATE_SCHEMA=1 cargo test -p dicomweb-oauth-core --test schema_in_sync`"
    );
}

#[test]
fn shipped_schema_matches_the_code() {
    check("schemas/dicomweb-oauth.schema.json", &section_schema_json());
}

#[test]
fn configuration_reference_matches_the_code() {
    check("docs/configuration.md", &reference_markdown());
}
