//! The real identity provider: `oidc-provider` from npm (fixtures/idp).

use crate::workspace_root;
use crate::NodeFixture;
use serde_json::Value;
use std::process::Command;

/// A running identity provider; stopped on drop.
pub struct Idp {
    node: NodeFixture,
    /// `http://127.0.0.1:PORT`, exactly as the provider writes `iss`.
    pub issuer: String,
    pub port: u16,
}

impl Idp {
    /// Starts the provider with a fixtures/idp configuration (see fixtures/idp/README.md)
    /// and waits for its ready line.
    pub fn start(config: &Value) -> Idp {
        let node = NodeFixture::start("idp", config, Some("node_modules/oidc-provider"));
        Idp {
            issuer: node.url.clone(),
            port: node.port,
            node,
        }
    }

    /// A fresh client key pair for private_key_jwt (`RS256` or `ES256`):
    /// `{"private_pem", "public_pem", "public_jwk"}` (fixtures/idp/genkey.js).
    pub fn generate_key(alg: &str, kid: &str) -> Value {
        let out = Command::new("node")
            .arg(workspace_root().join("fixtures/idp/genkey.js"))
            .args([alg, kid])
            .output()
            .expect("run node fixtures/idp/genkey.js");
        assert!(
            out.status.success(),
            "genkey.js failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("genkey.js prints JSON")
    }

    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer)
    }

    /// The provider's request counters (`GET /__stats`).
    pub fn stats(&self) -> Value {
        self.node
            .http
            .get(&format!("{}/__stats", self.issuer))
            .json()
    }

    pub fn token_requests(&self) -> u64 {
        self.stats()["token_requests"].as_u64().unwrap()
    }

    pub fn reset_stats(&self) {
        self.node.http.post(
            &format!("{}/__reset_stats", self.issuer),
            "application/json",
            b"{}",
        );
    }

    /// Replaces the signing key; returns the new `kid`.
    pub fn rotate_keys(&self) -> String {
        let reply = self.node.http.post(
            &format!("{}/__rotate_keys", self.issuer),
            "application/json",
            b"{}",
        );
        reply.json()["kid"].as_str().unwrap().to_owned()
    }

    pub fn log(&self) -> String {
        self.node.log()
    }
}
