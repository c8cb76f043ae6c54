//! The Google emulator (fixtures/google-emulator): Google's token endpoint
//! (JWT-bearer grant) and the GCE metadata server, on loopback.

use crate::{workspace_root, HttpClient};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use tempfile::TempDir;

/// A running emulator; stopped on drop.
pub struct GoogleEmulator {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub port: u16,
    dir: TempDir,
    http: HttpClient,
}

impl GoogleEmulator {
    /// Starts the emulator with a fixtures/google-emulator configuration (see
    /// its README.md) and waits for its ready line.
    pub fn start(config: &Value) -> GoogleEmulator {
        let fixture = workspace_root().join("fixtures/google-emulator");
        let dir = tempfile::Builder::new()
            .prefix("google-emulator-")
            .tempdir()
            .unwrap();
        let config_path = dir.path().join("config.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = std::fs::File::create(dir.path().join("emulator.log")).unwrap();
        let mut child = Command::new("node")
            .arg(fixture.join("server.js"))
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start node fixtures/google-emulator/server.js (is Node 20 installed?)");
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
                let _ = child.wait();
                let log =
                    std::fs::read_to_string(dir.path().join("emulator.log")).unwrap_or_default();
                panic!("Google emulator did not start: {line}\n{log}");
            }
        };
        GoogleEmulator {
            child,
            url: ready["url"].as_str().unwrap().to_owned(),
            port: ready["port"].as_u64().unwrap() as u16,
            dir,
            http: HttpClient::new(),
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
        let path = self.dir.path().join(file_name);
        let json = self.service_account_json(client_email, private_key_pem, private_key_id);
        std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
        path
    }

    /// `GET /__stats`: request counters and the last assertion seen (see the fixture's README).
    pub fn stats(&self) -> Value {
        self.http.get(&format!("{}/__stats", self.url)).json()
    }

    pub fn reset_stats(&self) {
        self.http.post(
            &format!("{}/__reset_stats", self.url),
            "application/json",
            b"{}",
        );
    }

    /// The emulator's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("emulator.log")).unwrap_or_default()
    }
}

impl Drop for GoogleEmulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
