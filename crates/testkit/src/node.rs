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

/// How long a fixture may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

enum StartFailure {
    /// No ready line in time; what the process was doing.
    TimedOut(String),
    /// It exited or printed something else.
    Exited(String),
}

impl std::fmt::Display for StartFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartFailure::TimedOut(state) => {
                write!(f, "no ready line in {READY_TIMEOUT:?}; {state}")
            }
            StartFailure::Exited(details) => write!(f, "{details}"),
        }
    }
}

/// The kernel's view of a stuck process (state, wait channel) and the JavaScript stack
/// from a Node diagnostic report (asked for with SIGUSR2, waited for ≤ 5 s).
fn stuck_process_report(child: &Child, dir: &Path) -> String {
    let pid = child.id();
    let proc_file = |file: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/{file}"))
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    let state = proc_file("status")
        .lines()
        .find(|l| l.starts_with("State:"))
        .unwrap_or("State: unknown")
        .to_owned();
    let wchan = proc_file("wchan");
    let _ = Command::new("kill")
        .args(["-USR2", &pid.to_string()])
        .status();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let report = loop {
        let found = std::fs::read_dir(dir).ok().and_then(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .find(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("report."))
                })
                .and_then(|p| std::fs::read_to_string(p).ok())
                .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        });
        if found.is_some() || std::time::Instant::now() > deadline {
            break found;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stack = report.map_or_else(
        || "no diagnostic report (the JavaScript thread never reached a safe point)".to_owned(),
        |r| {
            let handles: Vec<&str> = r["libuv"]
                .as_array()
                .map(|a| a.iter().filter_map(|h| h["type"].as_str()).collect())
                .unwrap_or_default();
            format!("{}, libuv handles {handles:?}", r["javascriptStack"])
        },
    );
    format!("pid {pid} {state}, wchan {wchan:?}, JavaScript stack {stack}")
}

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
    /// Starts `fixtures/{name}/server.js` with `config` and waits (≤ 60 s) for its ready line.
    /// `needs` is a path under the fixture that must exist first (its `node_modules`), named
    /// in the error.
    ///
    /// A start that times out is retried once, after printing what the stuck process was
    /// doing (its JavaScript stack from a Node diagnostic report, its kernel state): a CI
    /// run once saw the identity provider print nothing for 60 s, which no local run
    /// reproduced. A fixture that fails twice, or exits, panics with its log.
    pub fn start(name: &str, config: &Value, needs: Option<&str>) -> NodeFixture {
        let fixture = workspace_root().join("fixtures").join(name);
        if let Some(needed) = needs {
            assert!(
                fixture.join(needed).exists(),
                "fixtures/{name}/{needed} missing: run `npm ci` in fixtures/{name} (scripts/setup does)"
            );
        }
        match Self::try_start(name, &fixture, config) {
            Ok(started) => started,
            Err(StartFailure::TimedOut(first)) => {
                eprintln!("fixtures/{name} gave no ready line in {READY_TIMEOUT:?}; retrying once. {first}");
                match Self::try_start(name, &fixture, config) {
                    Ok(started) => started,
                    Err(again) => panic!(
                        "fixtures/{name} did not start twice.\nfirst: {first}\nthen: {again}"
                    ),
                }
            }
            Err(failure) => panic!("fixtures/{name} did not start: {failure}"),
        }
    }

    fn try_start(name: &str, fixture: &Path, config: &Value) -> Result<NodeFixture, StartFailure> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir()
            .unwrap();
        let config_path = dir.path().join("config.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = std::fs::File::create(dir.path().join("fixture.log")).unwrap();
        let mut child = Command::new("node")
            // SIGUSR2 writes a diagnostic report (with the JavaScript stack) into `dir`.
            .arg("--report-on-signal")
            .arg(format!("--report-directory={}", dir.path().display()))
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
        let fixture_log = |dir: &TempDir| {
            std::fs::read_to_string(dir.path().join("fixture.log")).unwrap_or_default()
        };
        let ready: Value = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) => match serde_json::from_str(&line) {
                Ok(ready) => ready,
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait();
                    return Err(StartFailure::Exited(format!(
                        "stdout {line:?}, exit {status:?}\n{}",
                        fixture_log(&dir)
                    )));
                }
            },
            Err(_) => {
                let state = stuck_process_report(&child, dir.path());
                let _ = child.kill();
                let _ = child.wait();
                return Err(StartFailure::TimedOut(format!(
                    "{state}\nlog:\n{}",
                    fixture_log(&dir)
                )));
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
        Ok(NodeFixture {
            child,
            dir,
            ready,
            port,
            url,
            http: HttpClient::new(),
        })
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
