//! The entries the plugin registers in the DICOMweb plugin
//! (`PUT /dicom-web/servers/{name}`), so that one `DicomWebOAuth` server
//! definition is enough (issue 8).
//!
//! - **proxy** mode: the entry's `Url` is the plugin's loopback listener
//!   (`ProxyListener`, the default; the entry carries the listener's key in
//!   `HttpHeaders`), or else the plugin's route on Orthanc's loopback port; with
//!   `AuthenticationEnabled`, such an entry carries the credentials of one of
//!   Orthanc's `RegisteredUsers` (read from Orthanc's own configuration:
//!   nothing is copied by hand).
//! - **header** mode: the entry's `Url` is the real server and its
//!   `HttpHeaders` hold `Authorization: Bearer …`, replaced before every
//!   expiry. The DICOMweb plugin keeps run-time entries in memory only (unless
//!   `DicomWeb.ServersInDatabase`, which the configuration refuses with header mode).
//!
//! Entry bodies that hold a password or a token are [`Secret`]s.

use crate::config::{Config, Mode, ServerConfig};
use crate::proxy::listener::{LoopbackEndpoint, KEY_HEADER};
use crate::secret::Secret;
use serde_json::{json, Map, Value};

/// The servers to register, and the names skipped because the user defined them in `DicomWeb.Servers`.
pub fn servers_to_register(config: &Config) -> (Vec<&ServerConfig>, Vec<&str>) {
    let mut register = Vec::new();
    let mut skipped = Vec::new();
    for server in config.servers.iter().filter(|s| s.auto_register) {
        if config.orthanc.dicomweb_servers.contains(&server.name) {
            skipped.push(server.name.as_str());
        } else {
            register.push(server);
        }
    }
    (register, skipped)
}

/// Where `server`'s entry sends the DICOMweb plugin: the listener, if one runs.
pub fn proxy_url(
    config: &Config,
    server: &ServerConfig,
    listener: Option<&LoopbackEndpoint>,
) -> String {
    if let Some(listener) = listener {
        return listener.url(&server.name);
    }
    let scheme = if config.orthanc.ssl_enabled {
        "https"
    } else {
        "http"
    };
    format!(
        "{scheme}://127.0.0.1:{}/oauth-dicom-web/servers/{}/",
        config.orthanc.http_port, server.name
    )
}

fn base_entry(server: &ServerConfig, url: &str) -> Map<String, Value> {
    let mut entry = Map::new();
    entry.insert("Url".into(), Value::from(url));
    for (key, value) in &server.dicomweb_options {
        entry.insert(key.clone(), value.clone());
    }
    entry
}

/// The proxy-mode entry of `server`.
pub fn proxy_entry(
    config: &Config,
    server: &ServerConfig,
    listener: Option<&LoopbackEndpoint>,
) -> Secret {
    let mut entry = base_entry(server, &proxy_url(config, server, listener));
    if let Some(listener) = listener {
        let headers = entry
            .entry("HttpHeaders")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(headers) = headers {
            headers.insert(KEY_HEADER.into(), Value::from(listener.key.expose()));
        }
    } else if config.orthanc.authentication_enabled {
        let user = match &config.registration_user {
            Some(name) => config
                .orthanc
                .registered_users
                .iter()
                .find(|(n, _)| n == name),
            None => config.orthanc.registered_users.first(),
        };
        if let Some((name, password)) = user {
            entry.insert("Username".into(), Value::from(name.as_str()));
            entry.insert("Password".into(), Value::from(password.expose()));
        }
    }
    Secret::new(Value::Object(entry).to_string())
}

/// The header-mode entry of `server`, with `token` if one is available yet.
pub fn header_entry(server: &ServerConfig, token: Option<&Secret>) -> Secret {
    let mut entry = base_entry(server, server.url.as_str());
    if let Some(token) = token {
        entry.insert(
            "HttpHeaders".into(),
            json!({ "Authorization": format!("Bearer {}", token.expose()) }),
        );
    }
    Secret::new(Value::Object(entry).to_string())
}

/// The entry of `server` in its mode.
pub fn entry(
    config: &Config,
    server: &ServerConfig,
    token: Option<&Secret>,
    listener: Option<&LoopbackEndpoint>,
) -> Secret {
    match server.mode {
        Mode::Proxy => proxy_entry(config, server, listener),
        Mode::Header => header_entry(server, token),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn load(orthanc: Value) -> Config {
        config::load(&orthanc, &|_| None).unwrap().unwrap()
    }

    fn server(extra: Value) -> Value {
        let mut s = json!({"Url": "https://pacs.example/dicom-web", "TokenEndpoint": "https://idp.example/t",
                           "ClientId": "c", "ClientSecret": "s", "HasDelete": true});
        for (k, v) in extra.as_object().unwrap() {
            s[k] = v.clone();
        }
        s
    }

    #[test]
    fn proxy_entries_point_at_the_loopback_route_with_orthancs_credentials() {
        let c = load(json!({"HttpPort": 8043, "AuthenticationEnabled": true,
            "RegisteredUsers": {"alice": "alice-pw-1", "bob": "bob-pw-2"},
            "DicomWebOAuth": {"RegistrationUser": "bob", "Servers": {"a": server(json!({}))}}}));
        let entry: Value =
            serde_json::from_str(proxy_entry(&c, &c.servers[0], None).expose()).unwrap();
        assert_eq!(
            entry["Url"],
            "http://127.0.0.1:8043/oauth-dicom-web/servers/a/"
        );
        assert_eq!(entry["Username"], "bob");
        assert_eq!(entry["Password"], "bob-pw-2");
        assert_eq!(entry["HasDelete"], true);
        let c = load(json!({"DicomWebOAuth": {"Servers": {"a": server(json!({}))}}}));
        let entry: Value =
            serde_json::from_str(proxy_entry(&c, &c.servers[0], None).expose()).unwrap();
        assert!(
            entry.get("Username").is_none(),
            "no credentials without authentication"
        );
    }

    #[test]
    fn listener_entries_carry_the_key_and_no_orthanc_credentials() {
        let c = load(json!({"HttpPort": 8043, "AuthenticationEnabled": true,
            "RegisteredUsers": {"alice": "alice-pw-1"},
            "DicomWebOAuth": {"Servers": {"a": server(json!({}))}}}));
        let listener = LoopbackEndpoint {
            port: 40123,
            key: Secret::new("k-0123"),
        };
        let entry: Value =
            serde_json::from_str(proxy_entry(&c, &c.servers[0], Some(&listener)).expose()).unwrap();
        assert_eq!(
            entry["Url"],
            "http://127.0.0.1:40123/oauth-dicom-web/servers/a/"
        );
        assert_eq!(entry["HttpHeaders"][KEY_HEADER], "k-0123");
        assert!(entry.get("Username").is_none() && entry.get("Password").is_none());
        assert!(!format!("{listener:?}").contains("k-0123"));
    }

    #[test]
    fn header_entries_carry_the_bearer_token() {
        let c =
            load(json!({"DicomWebOAuth": {"Servers": {"a": server(json!({"Mode": "header"}))}}}));
        let token = Secret::new("tok-123");
        let entry: Value =
            serde_json::from_str(header_entry(&c.servers[0], Some(&token)).expose()).unwrap();
        assert_eq!(entry["Url"], "https://pacs.example/dicom-web");
        assert_eq!(entry["HttpHeaders"]["Authorization"], "Bearer tok-123");
    }

    #[test]
    fn user_defined_servers_win_and_bad_combinations_are_refused() {
        let c = load(json!({"DicomWeb": {"Servers": {"a": {"Url": "http://x/"}}},
            "DicomWebOAuth": {"Servers": {"a": server(json!({})), "b": server(json!({}))}}}));
        let (register, skipped) = servers_to_register(&c);
        assert_eq!(
            register.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            vec!["b"]
        );
        assert_eq!(skipped, vec!["a"]);
        let e = config::load(
            &json!({"DicomWeb": {"ServersInDatabase": true},
            "DicomWebOAuth": {"Servers": {"a": server(json!({"Mode": "header"}))}}}),
            &|_| None,
        )
        .unwrap_err();
        assert_eq!(e.key, "DicomWebOAuth.Servers.a.Mode");
        let e = config::load(
            &json!({"AuthenticationEnabled": true,
            "DicomWebOAuth": {"Servers": {"a": server(json!({}))}}}),
            &|_| None,
        )
        .unwrap_err();
        assert_eq!(e.key, "DicomWebOAuth.RegistrationUser");
        let e = config::load(
            &json!({"AuthenticationEnabled": true, "RegisteredUsers": {"x": "y"},
            "DicomWebOAuth": {"RegistrationUser": "nobody", "Servers": {"a": server(json!({}))}}}),
            &|_| None,
        )
        .unwrap_err();
        assert_eq!(e.code, crate::ErrorCode::Cfg002);
    }
}
