//! The OAuth2-protected DICOMweb server: a streaming reverse proxy that checks
//! bearer tokens (JWTs against a JWKS, or one static token) in front of a
//! plain Orthanc (fixtures/gateway).

use crate::{workspace_root, HttpClient, Reply};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use tempfile::TempDir;

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running gateway; stopped on drop.
pub struct Gateway {
    child: Child,
    /// The port it listens on (on `127.0.0.1`).
    pub port: u16,
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub url: String,
    dir: TempDir,
    http: HttpClient,
}

impl Gateway {
    /// Starts the gateway with a fixtures/gateway configuration (see
    /// fixtures/gateway/README.md) and waits for its ready line; panics with
    /// its log if it does not start.
    pub fn start(config: &Value) -> Gateway {
        let fixture = workspace_root().join("fixtures/gateway");
        assert!(
            fixture.join("node_modules/jose").exists(),
            "fixtures/gateway/node_modules missing: run npm ci in fixtures/gateway (scripts/test does)"
        );
        let dir = tempfile::Builder::new()
            .prefix("gateway-")
            .tempdir()
            .expect("temp dir");
        let config_path = dir.path().join("gateway.json");
        std::fs::write(&config_path, config.to_string()).expect("write the gateway config");
        let log = std::fs::File::create(dir.path().join("gateway.log")).expect("log file");
        let mut child = Command::new("node")
            .arg(fixture.join("server.js"))
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start node fixtures/gateway/server.js");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(START_TIMEOUT).unwrap_or_default();
        let ready = serde_json::from_str::<Value>(&line)
            .ok()
            .filter(|v| v["ready"] == json!(true) && v["port"].is_u64());
        let Some(ready) = ready else {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(dir.path().join("gateway.log")).unwrap_or_default();
            panic!("gateway did not start: {line:?}\n{log}");
        };
        Gateway {
            child,
            port: u16::try_from(ready["port"].as_u64().unwrap()).expect("a port number"),
            url: ready["url"]
                .as_str()
                .expect("url in the ready line")
                .to_owned(),
            dir,
            http: HttpClient::new(),
        }
    }

    fn admin(&self, path: &str, body: &Value) -> Reply {
        let reply = self.http.post_json(&format!("{}{path}", self.url), body);
        assert_eq!(
            reply.status,
            200,
            "gateway POST {path}: {}\n{}",
            reply.text(),
            self.log()
        );
        reply
    }

    /// The counters (`GET /__stats`): `requests`, `accepted`, `rejected`,
    /// `rejected_by_status` (`{"401": n, "403": n, ...}`), `injected`,
    /// `upstream_errors`, `bytes_in`, `bytes_out`,
    /// `last_authorization_present`, `seen_headers`, `last_request_id`.
    pub fn stats(&self) -> Value {
        self.http.get(&format!("{}/__stats", self.url)).json()
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
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
