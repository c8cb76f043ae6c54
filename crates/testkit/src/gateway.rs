//! The OAuth2-protected DICOMweb server: a streaming reverse proxy that checks
//! bearer tokens (JWTs against a JWKS, or one static token) in front of a
//! plain Orthanc (fixtures/gateway).

use crate::NodeFixture;
use serde_json::{json, Value};

/// A running gateway; stopped on drop.
pub struct Gateway {
    node: NodeFixture,
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub url: String,
    pub port: u16,
}

impl Gateway {
    /// Starts the gateway with a fixtures/gateway configuration (see
    /// fixtures/gateway/README.md) and waits for its ready line; panics with
    /// its log if it does not start.
    pub fn start(config: &Value) -> Gateway {
        let node = NodeFixture::start("gateway", config, Some("node_modules/jose"));
        Gateway {
            url: node.url.clone(),
            port: node.port,
            node,
        }
    }

    fn admin(&self, path: &str, body: &Value) {
        self.node.admin_post(path, body);
    }

    /// The counters (`GET /__stats`): `requests`, `accepted`, `rejected`,
    /// `rejected_by_status` (`{"401": n, "403": n, ...}`), `injected`,
    /// `upstream_errors`, `bytes_in`, `bytes_out`,
    /// `last_authorization_present`, `seen_headers`, `last_request_id`.
    pub fn stats(&self) -> Value {
        self.node.http.get(&format!("{}/__stats", self.url)).json()
    }

    /// Sets every counter back to zero (test controls are kept).
    pub fn reset_stats(&self) {
        self.admin("/__reset_stats", &json!({}));
    }

    /// From now on, tokens issued before now are rejected (401,
    /// `token revoked`); tokens issued later are accepted.
    pub fn revoke_tokens_before_now(&self) {
        self.admin("/__revoke_tokens_before_now", &json!({}));
    }

    /// The next `count` authenticated requests get `status` (a JSON body)
    /// without reaching the upstream. `count` 0 cancels.
    pub fn fail_next(&self, status: u16, count: u32) {
        self.admin("/__fail_next", &json!({"status": status, "count": count}));
    }

    /// While enabled, every request gets 401, valid token or not.
    pub fn reject_all(&self, enabled: bool) {
        self.admin("/__reject_all", &json!({"enabled": enabled}));
    }

    /// What the gateway logged so far (stderr).
    pub fn log(&self) -> String {
        self.node.log()
    }
}
