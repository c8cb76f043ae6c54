//! The management API (SPEC 3.3) as plain functions: configuration and
//! engine in, status and JSON out. The plugin only routes Orthanc's requests
//! here. Nothing returned ever holds a token or a secret.

use crate::config::Config;
use crate::error::error_body;
use crate::token::{Engine, TokenOrigin};
use crate::PLUGIN_VERSION;
use serde_json::{json, Value};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// An answer: HTTP status and JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiAnswer {
    pub status: u16,
    pub body: Value,
}

impl ApiAnswer {
    fn ok(data: Value) -> Self {
        ApiAnswer {
            status: 200,
            body: envelope(data),
        }
    }
}

/// `{"plugin_version","api_version","timestamp","data"}`, as the Python plugin answered.
pub fn envelope(data: Value) -> Value {
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    json!({
        "plugin_version": PLUGIN_VERSION,
        "api_version": "2.0",
        "timestamp": timestamp,
        "data": data,
    })
}

/// A 404 for a server name that is not configured.
pub fn unknown_server(name: &str) -> ApiAnswer {
    ApiAnswer {
        status: 404,
        body: json!({"error": "not_found", "message": format!("unknown DICOMweb OAuth server '{name}'"), "http_status": 404}),
    }
}

/// URLs from the configuration, without any `user:password@`.
fn redacted_url(url: &url::Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string()
}

fn server_json(config: &Config, engine: &Engine, name: &str) -> Value {
    let server = config
        .server(name)
        .expect("managers mirror the configuration");
    let manager = engine.manager(name).expect("every server has a manager");
    let token = manager.peek().filter(|t| t.expires_in().as_secs() > 0);
    json!({
        "name": name,
        "url": redacted_url(&server.url),
        "token_endpoint": server.token_endpoint.as_ref().map(redacted_url),
        "issuer": server.issuer.as_ref().map(redacted_url),
        "provider_type": server.provider.as_str(),
        "has_cached_token": token.is_some(),
        "token_expires_at": token.as_ref().map(|t| t.expires_at_unix),
        "token_expires_in": token.as_ref().map(|t| t.expires_in().as_secs()),
        "circuit_breaker_state": manager.circuit_state().as_str(),
        "last_error": manager.last_error().map(|e| json!({"error_code": e.code().as_str(), "message": e.to_string()})),
    })
}

fn all_servers(config: &Config, engine: &Engine) -> Vec<Value> {
    config
        .servers
        .iter()
        .map(|s| server_json(config, engine, &s.name))
        .collect()
}

/// `GET /dicomweb-oauth/status`.
pub fn status(config: &Config, engine: &Engine) -> ApiAnswer {
    let servers = all_servers(config, engine);
    let healthy = engine.managers().iter().all(|m| m.last_error().is_none());
    let shared_cache = engine.shared_store().map(|store| {
        let state = store.state();
        json!({"type": "redis", "available": state.available, "outages": state.outages,
               "last_error": state.last_error, "rejected_entries": state.rejected_entries})
    });
    ApiAnswer::ok(json!({
        "status": if healthy { "healthy" } else { "degraded" },
        "servers_configured": servers.len(),
        "servers": servers,
        "shared_cache": shared_cache.unwrap_or(json!({"type": "memory"})),
    }))
}

/// `GET /dicomweb-oauth/servers`.
pub fn servers(config: &Config, engine: &Engine) -> ApiAnswer {
    let servers = all_servers(config, engine);
    ApiAnswer::ok(json!({"count": servers.len(), "servers": servers}))
}

/// `POST /dicomweb-oauth/servers/{name}/test[?force=true]`: a token exactly as a
/// DICOMweb request would get it (from the cache while valid), or a fresh one.
pub async fn test_server(engine: &Engine, name: &str, force: bool) -> ApiAnswer {
    let Some(manager) = engine.manager(name) else {
        return unknown_server(name);
    };
    let started = Instant::now();
    let result = if force {
        manager
            .force_refresh()
            .await
            .map(|t| (t, TokenOrigin::Provider))
    } else {
        manager.token().await
    };
    match result {
        Ok((token, origin)) => ApiAnswer::ok(json!({
            "server": name,
            "success": true,
            "source": match origin { TokenOrigin::Cache => "cache", TokenOrigin::Provider => "provider" },
            "expires_in": token.expires_in().as_secs(),
            "duration_ms": started.elapsed().as_millis() as u64,
        })),
        Err(e) => {
            let status = e.code().http_status();
            ApiAnswer {
                status,
                body: error_body(
                    e.code(),
                    &e.to_string(),
                    json!({"server": name, "success": false}),
                    status,
                ),
            }
        }
    }
}

/// `DELETE /dicomweb-oauth/servers/{name}/token`.
pub fn drop_token(engine: &Engine, name: &str) -> ApiAnswer {
    match engine.manager(name) {
        Some(manager) => {
            manager.invalidate();
            ApiAnswer::ok(json!({"server": name, "token_cached": false}))
        }
        None => unknown_server(name),
    }
}
