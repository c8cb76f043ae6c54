//! The Node fixtures (identity provider, gateway, cloud emulators) share one
//! life cycle: `node fixtures/<name>/server.js CONFIG`, one JSON ready line on
//! stdout, logs on stderr, killed on drop.

use crate::{workspace_root, HttpClient};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use tempfile::TempDir;

/// A running Node fixture.
pub struct NodeFixture {
    child: Child,
    dir: TempDir,
    /// The fixture's ready line (`{"ready":true,"port":…,…}`).
    pub ready: Value,
    pub port: u16,
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub url: String,
    pub http: HttpClient,
}

impl NodeFixture {
    /// Starts `fixtures/{name}/server.js` with `config` and waits (≤ 60 s) for its ready line;
    /// panics with its log if it does not come. `needs` is a path under the fixture that must
    /// exist first (its `node_modules`), named in the error.
    pub fn start(name: &str, config: &Value, needs: Option<&str>) -> NodeFixture {
        let fixture = workspace_root().join("fixtures").join(name);
        if let Some(needed) = needs {
            assert!(
                fixture.join(needed).exists(),
                "fixtures/{name}/{needed} missing: run `npm ci` in fixtures/{name} (scripts/setup does)"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir()
            .unwrap();
        let config_path = dir.path().join("config.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = std::fs::File::create(dir.path().join("fixture.log")).unwrap();
        let mut child = Command::new("node")
            .arg(fixture.join("server.js"))
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start node fixtures/{name}/server.js: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        let ready: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let log =
                    std::fs::read_to_string(dir.path().join("fixture.log")).unwrap_or_default();
                panic!("fixtures/{name} did not start: {line}\n{log}");
            }
        };
        let port = ready["port"].as_u64().expect("ready line has a port") as u16;
        let url = ready["url"]
            .as_str()
            .or_else(|| ready["issuer"].as_str())
            .map_or_else(
                || format!("http://127.0.0.1:{port}"),
                |u| u.trim_end_matches('/').to_owned(),
            );
        NodeFixture {
            child,
            dir,
            ready,
            port,
            url,
            http: HttpClient::new(),
        }
    }

    /// A temporary folder that lives as long as the fixture.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The fixture's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("fixture.log")).unwrap_or_default()
    }

    /// `GET {url}{path}` as JSON (the fixtures' `/__…` admin endpoints).
    pub fn admin_get(&self, path: &str) -> Value {
        self.http.get(&format!("{}{path}", self.url)).json()
    }

    /// `POST {url}{path}` with a JSON body; panics (with the log) unless it answers 200.
    pub fn admin_post(&self, path: &str, body: &Value) -> Value {
        let reply = self.http.post_json(&format!("{}{path}", self.url), body);
        assert_eq!(
            reply.status,
            200,
            "POST {path}: {}\n{}",
            reply.text(),
            self.log()
        );
        if reply.body.is_empty() {
            Value::Null
        } else {
            reply.json()
        }
    }
}

impl NodeFixture {
    /// The emulators' fault injection (`POST /__next`): the next `count` requests to `route`
    /// answer `status` with `body` (a JSON value, or a string sent as text) and extra `headers`.
    pub fn inject_next(
        &self,
        route: &str,
        status: u16,
        count: u32,
        body: Option<Value>,
        headers: Value,
    ) {
        let mut spec = serde_json::json!({"status": status, "count": count, "route": route, "headers": headers});
        if let Some(body) = body {
            spec["body"] = body;
        }
        self.admin_post("/__next", &spec);
    }
}

impl Drop for NodeFixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
