//! The AWS emulator (fixtures/aws-emulator): IMDSv2, the container credential provider, STS
//! `AssumeRoleWithWebIdentity` and a SigV4-verifying service (`/sigv4/…`), on loopback.

use crate::{workspace_root, HttpClient};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use tempfile::TempDir;

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running emulator; stopped on drop.
pub struct AwsEmulator {
    child: Child,
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub url: String,
    pub port: u16,
    dir: TempDir,
    http: HttpClient,
}

impl AwsEmulator {
    /// Starts the emulator with a configuration (see fixtures/aws-emulator/README.md; `{}` gives
    /// the defaults) and waits for its ready line.
    pub fn start(config: &Value) -> AwsEmulator {
        let script = workspace_root().join("fixtures/aws-emulator/server.js");
        let dir = tempfile::Builder::new()
            .prefix("aws-emulator-")
            .tempdir()
            .expect("temp dir");
        let config_path = dir.path().join("aws.json");
        std::fs::write(&config_path, config.to_string()).expect("write the emulator config");
        let log = std::fs::File::create(dir.path().join("aws.log")).expect("log file");
        let mut child = Command::new("node")
            .arg(&script)
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start node fixtures/aws-emulator/server.js (is Node 20 installed?)");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(START_TIMEOUT).unwrap_or_default();
        let ready: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(dir.path().join("aws.log")).unwrap_or_default();
                panic!("AWS emulator did not start: {line}\n{log}");
            }
        };
        AwsEmulator {
            child,
            url: ready["url"].as_str().expect("url").to_owned(),
            port: ready["port"].as_u64().expect("port") as u16,
            dir,
            http: HttpClient::new(),
        }
    }

    /// The IMDS endpoint (what `AWS_EC2_METADATA_SERVICE_ENDPOINT` or an override holds).
    pub fn imds_endpoint(&self) -> String {
        format!("{}/", self.url)
    }

    /// The base `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` is relative to (instead of
    /// `http://169.254.170.2`).
    pub fn ecs_base(&self) -> String {
        self.url.clone()
    }

    /// The STS endpoint, `{url}/`.
    pub fn sts_endpoint(&self) -> String {
        format!("{}/", self.url)
    }

    /// The SigV4-protected service's base URL, `{url}/sigv4` (append any path).
    pub fn sigv4_url(&self) -> String {
        format!("{}/sigv4", self.url)
    }

    /// `GET /__stats` (counters, the credentials issued, the last SigV4 verification).
    pub fn stats(&self) -> Value {
        self.http.get(&format!("{}/__stats", self.url)).json()
    }

    /// Zeroes the counters and drops queued answers (issued credentials stay valid).
    pub fn reset_stats(&self) {
        let reply = self.http.post(
            &format!("{}/__reset_stats", self.url),
            "application/json",
            b"{}",
        );
        assert_eq!(reply.status, 200, "POST /__reset_stats: {}", reply.text());
    }

    /// `POST /__config`: `credentialLifetime`, `ecsAuthorization`, `imdsRole`,
    /// `stsWebIdentityTokens` changed at run time.
    pub fn configure(&self, changes: Value) {
        let reply = self.http.post(
            &format!("{}/__config", self.url),
            "application/json",
            changes.to_string().as_bytes(),
        );
        assert_eq!(reply.status, 200, "POST /__config: {}", reply.text());
    }

    /// The next `count` requests to `route` (`imds`, `ecs`, `sts`, `sigv4` or `any`) answer
    /// `status` with `body` (a JSON value, or a string sent as text) and extra `headers`.
    pub fn inject(
        &self,
        route: &str,
        status: u16,
        count: u32,
        body: Option<Value>,
        headers: Value,
    ) {
        let mut spec =
            json!({"status": status, "count": count, "route": route, "headers": headers});
        if let Some(body) = body {
            spec["body"] = body;
        }
        let reply = self.http.post(
            &format!("{}/__next", self.url),
            "application/json",
            spec.to_string().as_bytes(),
        );
        assert_eq!(reply.status, 200, "POST /__next: {}", reply.text());
    }

    /// The emulator's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("aws.log")).unwrap_or_default()
    }
}

impl Drop for AwsEmulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
