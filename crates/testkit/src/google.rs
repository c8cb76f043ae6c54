//! The Google emulator (fixtures/google-emulator): Google's token endpoint
//! (JWT-bearer grant) and the GCE metadata server, on loopback.

use crate::NodeFixture;
use serde_json::{json, Value};
use std::path::PathBuf;

/// A running emulator; stopped on drop.
pub struct GoogleEmulator {
    node: NodeFixture,
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub url: String,
    pub port: u16,
}

impl GoogleEmulator {
    /// Starts the emulator with a fixtures/google-emulator configuration (see
    /// its README.md) and waits for its ready line.
    pub fn start(config: &Value) -> GoogleEmulator {
        let node = NodeFixture::start("google-emulator", config, None);
        GoogleEmulator {
            url: node.url.clone(),
            port: node.port,
            node,
        }
    }

    /// The token endpoint, `{url}/token` (the `token_uri` of key files and the assertion's `aud`).
    pub fn token_uri(&self) -> String {
        format!("{}/token", self.url)
    }

    /// The metadata server's `host:port`, as `GCE_METADATA_HOST` would give it.
    pub fn metadata_host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A service-account key file's JSON for an account of this emulator
    /// (`token_uri` pointing here), as Google issues it.
    pub fn service_account_json(
        &self,
        client_email: &str,
        private_key_pem: &str,
        private_key_id: &str,
    ) -> Value {
        json!({
            "type": "service_account",
            "project_id": "emulated-project",
            "private_key_id": private_key_id,
            "private_key": private_key_pem,
            "client_email": client_email,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri(),
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": format!("https://www.googleapis.com/robot/v1/metadata/x509/{client_email}"),
            "universe_domain": "googleapis.com",
        })
    }

    /// Writes [`service_account_json`](Self::service_account_json) to a file in
    /// the emulator's temporary directory and returns its path.
    pub fn write_service_account(
        &self,
        file_name: &str,
        client_email: &str,
        private_key_pem: &str,
        private_key_id: &str,
    ) -> PathBuf {
        let path = self.node.dir().join(file_name);
        let json = self.service_account_json(client_email, private_key_pem, private_key_id);
        std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
        path
    }

    /// `GET /__stats`: request counters and the last assertion seen (see the fixture's README).
    pub fn stats(&self) -> Value {
        self.node.http.get(&format!("{}/__stats", self.url)).json()
    }

    pub fn reset_stats(&self) {
        self.node.http.post(
            &format!("{}/__reset_stats", self.url),
            "application/json",
            b"{}",
        );
    }

    /// The emulator's stderr so far.
    pub fn log(&self) -> String {
        self.node.log()
    }
}
