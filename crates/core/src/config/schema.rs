//! JSON Schema of the `DicomWebOAuth` section, generated from the key table.
//!
//! `schemas/dicomweb-oauth.schema.json` is this function's output; a test
//! fails when the two differ (regenerate with `UPDATE_SCHEMA=1 cargo test`).

use super::keys::{self, Default, KeySpec, Kind};
use serde_json::{json, Map, Value};

/// The schema of the section, as pretty-printed JSON with a trailing newline.
pub fn section_schema_json() -> String {
    let mut text = serde_json::to_string_pretty(&section_schema()).expect("schema serializes");
    text.push('\n');
    text
}

pub fn section_schema() -> Value {
    let mut schema = object_schema(keys::GLOBAL_KEYS, &["Servers"]);
    let obj = schema.as_object_mut().expect("object");
    let mut head = Map::new();
    head.insert(
        "$schema".into(),
        json!("https://json-schema.org/draft/2020-12/schema"),
    );
    head.insert(
        "$id".into(),
        json!("https://orthanc-dicomweb-oauth/schemas/dicomweb-oauth.schema.json"),
    );
    head.insert("title".into(), json!("DicomWebOAuth"));
    head.insert(
        "description".into(),
        json!("The DicomWebOAuth section of the Orthanc configuration (orthanc-dicomweb-oauth). Any string may contain ${VAR}, replaced by an environment variable."),
    );
    head.append(obj);
    Value::Object(head)
}

fn object_schema(table: &[KeySpec], required: &[&str]) -> Value {
    let properties: Map<String, Value> = table
        .iter()
        .map(|k| (k.name.to_owned(), key_schema(k)))
        .collect();
    let mut schema = json!({
        "type": "object",
        "additionalProperties": false,
        "properties": properties,
    });
    if !required.is_empty() {
        schema["required"] = json!(required);
    }
    schema
}

fn key_schema(spec: &KeySpec) -> Value {
    let mut s = match spec.kind {
        Kind::Str => json!({"type": "string"}),
        Kind::HttpUrl => {
            json!({"type": "string", "format": "uri", "pattern": "^(https?://|\\$\\{)"})
        }
        Kind::Enum(values) => json!({"type": "string", "enum": values}),
        Kind::Bool => json!({"type": "boolean"}),
        Kind::Integer { min, max } => json!({"type": "integer", "minimum": min, "maximum": max}),
        Kind::Number { min, max } => json!({"type": "number", "minimum": min, "maximum": max}),
        Kind::StrOrList => json!({"oneOf": [
            {"type": "string"},
            {"type": "array", "items": {"type": "string"}, "minItems": 1}
        ]}),
        Kind::BoolOrPath => json!({"type": ["boolean", "string"]}),
        Kind::Object(table) => object_schema(table, &[]),
        Kind::ServerMap => json!({
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": "^[A-Za-z0-9._-]{1,64}$"},
            "additionalProperties": object_schema(keys::SERVER_KEYS, &["Url"]),
        }),
    };
    let doc = if spec.added {
        format!("{} (Added by the Rust plugin.)", spec.doc)
    } else {
        spec.doc.to_owned()
    };
    s["description"] = json!(doc);
    match spec.default {
        Default::None => {}
        Default::Str(v) => s["default"] = json!(v),
        Default::Bool(v) => s["default"] = json!(v),
        Default::Integer(v) => s["default"] = json!(v),
        Default::Number(v) => s["default"] = json!(v),
    }
    if spec.secret {
        s["writeOnly"] = json!(true);
    }
    s
}

/// The configuration reference (`docs/configuration.md`), generated from the key table.
pub fn reference_markdown() -> String {
    let mut out = String::from(
        "# Configuration reference\n\n\
         <!-- Generated from crates/core/src/config/keys.rs; a test keeps it in sync. -->\n\n\
         The `DicomWebOAuth` section of the Orthanc configuration. Any string may contain `${VAR}`,\n\
         replaced by the environment variable `VAR` (`$$` is a literal `$`); an unset variable stops\n\
         Orthanc with CFG-003. A section without `ConfigVersion` is version 1.0 and is migrated to\n\
         2.0 at start-up (`ProviderType: \"auto\"`, `TokenRefreshBufferSeconds: 300` written in).\n\
         Unknown keys are refused with a suggestion. Keys marked *added* do not exist in the Python\n\
         plugin; they never change the meaning of the others. Secret values are never logged.\n\
         The machine-readable form is `schemas/dicomweb-oauth.schema.json`.\n",
    );
    let sections: [(&str, &[KeySpec]); 3] = [
        ("Global keys", keys::GLOBAL_KEYS),
        ("Server keys (`Servers.<name>`)", keys::SERVER_KEYS),
        (
            "`ResilienceConfig` (global default, or per server)",
            keys::RESILIENCE_KEYS,
        ),
    ];
    for (title, table) in sections {
        out.push_str(&format!(
            "\n## {title}\n\n| key | type | default | description |\n|---|---|---|---|\n"
        ));
        for k in table {
            let kind = match k.kind {
                Kind::Str => "string".to_owned(),
                Kind::HttpUrl => "http(s) URL".to_owned(),
                Kind::Enum(v) => v.join(" \\| "),
                Kind::Bool => "boolean".to_owned(),
                Kind::Integer { min, max } => format!("integer {min}–{max}"),
                Kind::Number { min, max } => format!("number {min}–{max}"),
                Kind::StrOrList => "string or list".to_owned(),
                Kind::BoolOrPath => "boolean or file path".to_owned(),
                Kind::Object(_) => "object".to_owned(),
                Kind::ServerMap => "object: name → server".to_owned(),
            };
            let default = match k.default {
                Default::None => String::new(),
                Default::Str(v) => format!("`\"{v}\"`"),
                Default::Bool(v) => format!("`{v}`"),
                Default::Integer(v) => format!("`{v}`"),
                Default::Number(v) => format!("`{v}`"),
            };
            let mut notes = String::new();
            if k.secret {
                notes.push_str(" *Secret.*");
            }
            if k.added {
                notes.push_str(" *Added.*");
            }
            out.push_str(&format!(
                "| `{}` | {kind} | {default} | {}{notes} |\n",
                k.name, k.doc
            ));
        }
    }
    out
}
