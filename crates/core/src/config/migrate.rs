//! Migration of version 1.0 sections (no `ConfigVersion`) to version 2.0.
//!
//! Version 1.0 files predate `ProviderType` and per-server refresh buffers;
//! the Python plugin gives them `ProviderType: "auto"` and
//! `TokenRefreshBufferSeconds: 300`. Migrating writes those values in
//! explicitly, so a later change of a 2.0 default never changes how an old
//! file behaves.

use serde_json::{Map, Value};

/// What a migration changed, for the start-up log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Migration {
    pub from_version: Option<String>,
    pub changes: Vec<String>,
}

/// Migrates `section` in place to version 2.0; a 2.0 section is left as is.
pub fn migrate_to_v2(section: &mut Map<String, Value>) -> Migration {
    let version = section.get("ConfigVersion").and_then(Value::as_str);
    if version.is_some_and(|v| v != "1.0") {
        return Migration::default();
    }
    let mut migration = Migration {
        from_version: Some("1.0".into()),
        changes: Vec::new(),
    };
    if let Some(Value::Object(servers)) = section.get_mut("Servers") {
        for (name, server) in servers.iter_mut() {
            let Value::Object(server) = server else {
                continue;
            };
            for (key, value) in [
                ("ProviderType", Value::from("auto")),
                ("TokenRefreshBufferSeconds", Value::from(300)),
            ] {
                if !server.contains_key(key) {
                    migration
                        .changes
                        .push(format!("Servers.{name}.{key} = {value}"));
                    server.insert(key.into(), value);
                }
            }
        }
    }
    section.insert("ConfigVersion".into(), Value::from("2.0"));
    migration
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn v1_section_gets_v2_defaults_written_in() {
        let mut s = obj(json!({"Servers": {
            "a": {"Url": "https://x"},
            "b": {"Url": "https://y", "ProviderType": "azure", "TokenRefreshBufferSeconds": 60}}}));
        let m = migrate_to_v2(&mut s);
        assert_eq!(m.from_version.as_deref(), Some("1.0"));
        assert_eq!(s["ConfigVersion"], "2.0");
        assert_eq!(s["Servers"]["a"]["ProviderType"], "auto");
        assert_eq!(s["Servers"]["a"]["TokenRefreshBufferSeconds"], 300);
        assert_eq!(s["Servers"]["b"]["ProviderType"], "azure");
        assert_eq!(s["Servers"]["b"]["TokenRefreshBufferSeconds"], 60);
        assert_eq!(m.changes.len(), 2);
    }

    #[test]
    fn explicit_1_0_is_migrated_too() {
        let mut s = obj(json!({"ConfigVersion": "1.0", "Servers": {"a": {"Url": "https://x"}}}));
        assert!(migrate_to_v2(&mut s).from_version.is_some());
        assert_eq!(s["ConfigVersion"], "2.0");
    }

    #[test]
    fn v2_section_is_untouched() {
        let original = obj(json!({"ConfigVersion": "2.0", "Servers": {"a": {"Url": "https://x"}}}));
        let mut s = original.clone();
        assert_eq!(migrate_to_v2(&mut s), Migration::default());
        assert_eq!(s, original);
    }
}
