//! The real identity provider: `oidc-provider` from npm (fixtures/idp).

use crate::{workspace_root, HttpClient};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use tempfile::TempDir;

/// A running identity provider; stopped on drop.
pub struct Idp {
    child: Child,
    pub issuer: String,
    pub port: u16,
    _dir: TempDir,
    http: HttpClient,
}

impl Idp {
    /// Starts the provider with a fixtures/idp configuration (see fixtures/idp/README.md)
    /// and waits for its ready line.
    pub fn start(config: &Value) -> Idp {
        let fixture = workspace_root().join("fixtures/idp");
        assert!(
            fixture.join("node_modules/oidc-provider").exists(),
            "fixtures/idp/node_modules missing: run `npm ci` in fixtures/idp (scripts/test does)"
        );
        let dir = tempfile::Builder::new().prefix("idp-").tempdir().unwrap();
        let config_path = dir.path().join("idp.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = std::fs::File::create(dir.path().join("idp.log")).unwrap();
        let mut child = Command::new("node")
            .arg(fixture.join("server.js"))
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start node fixtures/idp/server.js");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let ready: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(_) => {
                let _ = child.kill();
                let log = std::fs::read_to_string(dir.path().join("idp.log")).unwrap_or_default();
                panic!("identity provider did not start: {line}\n{log}");
            }
        };
        Idp {
            child,
            issuer: ready["issuer"].as_str().unwrap().to_owned(),
            port: ready["port"].as_u64().unwrap() as u16,
            _dir: dir,
            http: HttpClient::new(),
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
        self.http.get(&format!("{}/__stats", self.issuer)).json()
    }

    pub fn token_requests(&self) -> u64 {
        self.stats()["token_requests"].as_u64().unwrap()
    }

    pub fn reset_stats(&self) {
        self.http.post(
            &format!("{}/__reset_stats", self.issuer),
            "application/json",
            b"{}",
        );
    }

    /// Replaces the signing key; returns the new `kid`.
    pub fn rotate_keys(&self) -> String {
        let reply = self.http.post(
            &format!("{}/__rotate_keys", self.issuer),
            "application/json",
            b"{}",
        );
        reply.json()["kid"].as_str().unwrap().to_owned()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("idp.log")).unwrap_or_default()
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
