//! Real Orthanc processes with generated configurations.

use crate::{free_port, wait_for, HttpClient, Reply};
use serde_json::{json, Value};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const DEFAULT_ORTHANC: &str = "/usr/sbin/Orthanc";
const DEFAULT_DICOMWEB: &str = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so";
const START_TIMEOUT: Duration = Duration::from_secs(60);

fn orthanc_binary() -> PathBuf {
    let path = std::env::var_os("ORTHANC_BIN")
        .map_or_else(|| PathBuf::from(DEFAULT_ORTHANC), PathBuf::from);
    assert!(
        path.exists(),
        "{} not found: install the Debian packages orthanc orthanc-dicomweb (scripts/test does), or set ORTHANC_BIN",
        path.display()
    );
    path
}

fn dicomweb_plugin() -> PathBuf {
    let path = std::env::var_os("ORTHANC_DICOMWEB_PLUGIN")
        .map_or_else(|| PathBuf::from(DEFAULT_DICOMWEB), PathBuf::from);
    assert!(
        path.exists(),
        "{} not found: install orthanc-dicomweb",
        path.display()
    );
    path
}

/// Our plugin, as built by `cargo build -p orthanc-dicomweb-oauth` (or `ORTHANC_OAUTH_PLUGIN`).
///
/// `cargo test` does not rebuild a cdylib when only its dependencies changed,
/// so a stale library would silently test old code: this refuses a library
/// older than any source file of the core or the plugin.
pub fn oauth_plugin() -> PathBuf {
    if let Some(p) = std::env::var_os("ORTHANC_OAUTH_PLUGIN") {
        return PathBuf::from(p);
    }
    // Integration tests run from target/<profile>/deps/, binaries from target/<profile>/.
    let exe = std::env::current_exe().expect("executable path");
    let exe_dir = exe.parent().expect("target/<profile>");
    let profile_dir = if exe_dir.ends_with("deps") {
        exe_dir.parent().expect("target/<profile>")
    } else {
        exe_dir
    };
    let path = profile_dir.join("liborthanc_dicomweb_oauth.so");
    let build = "cargo build -p orthanc-dicomweb-oauth (scripts/test does)";
    let built = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{} not found: run {build}", path.display()));
    let root = crate::workspace_root();
    for dir in ["crates/core/src", "crates/plugin/src"] {
        if let Some(newest) = newest_mtime(&root.join(dir)) {
            assert!(
                newest <= built,
                "{} is older than the sources in {dir}: run {build}",
                path.display()
            );
        }
    }
    path
}

fn newest_mtime(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let time = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(time);
    }
    newest
}

/// Builds the configuration of one Orthanc and starts it.
pub struct OrthancBuilder {
    config: Value,
    env: Vec<(String, String)>,
    with_oauth_plugin: bool,
    plugin_override: Option<PathBuf>,
    port: Option<u16>,
    credentials: Option<(String, String)>,
}

impl Default for OrthancBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl OrthancBuilder {
    /// Orthanc with the DICOMweb plugin and ours, no DICOM server, no authentication.
    pub fn new() -> Self {
        OrthancBuilder {
            config: json!({
                "Name": "test",
                "DicomServerEnabled": false,
                "RemoteAccessAllowed": false,
                "AuthenticationEnabled": false,
                "HttpTimeout": 30,
                "StorageCompression": false,
                "DicomWeb": {"Enable": true, "Root": "/dicom-web/"},
            }),
            env: Vec::new(),
            with_oauth_plugin: true,
            plugin_override: None,
            port: None,
            credentials: None,
        }
    }

    /// Turns Orthanc's authentication on with one registered user; the
    /// harness's own requests then carry these credentials.
    pub fn basic_auth(mut self, user: &str, password: &str) -> Self {
        self.config["AuthenticationEnabled"] = json!(true);
        self.config["RegisteredUsers"] = json!({ user: password });
        self.credentials = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// Uses this HTTP port (e.g. one taken with [`crate::free_port`] to write
    /// a configuration that points at Orthanc itself).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Sets the `DicomWebOAuth` section.
    pub fn oauth(self, section: Value) -> Self {
        self.set("DicomWebOAuth", section)
    }

    /// Sets a top-level key of the Orthanc configuration.
    pub fn set(mut self, key: &str, value: Value) -> Self {
        self.config[key] = value;
        self
    }

    /// Loads this build of our plugin instead of [`oauth_plugin`]'s (a benchmark's baseline).
    pub fn oauth_plugin_at(mut self, path: &Path) -> Self {
        self.plugin_override = Some(path.to_owned());
        self
    }

    /// Loads only the DICOMweb plugin (for a plain remote Orthanc).
    pub fn without_oauth_plugin(mut self) -> Self {
        self.with_oauth_plugin = false;
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    fn client(&self) -> HttpClient {
        match &self.credentials {
            Some((user, password)) => HttpClient::new().with_basic_auth(user, password),
            None => HttpClient::new(),
        }
    }

    fn spawn(mut self) -> (Child, TempDir, u16, PathBuf) {
        let dir = tempfile::Builder::new()
            .prefix("orthanc-test-")
            .tempdir()
            .expect("temp dir");
        let port = self.port.unwrap_or_else(free_port);
        let mut plugins = vec![dicomweb_plugin()];
        if self.with_oauth_plugin {
            plugins.push(self.plugin_override.take().unwrap_or_else(oauth_plugin));
        }
        self.config["HttpPort"] = json!(port);
        self.config["StorageDirectory"] = json!(dir.path().join("db"));
        self.config["IndexDirectory"] = json!(dir.path().join("db"));
        self.config["Plugins"] = json!(plugins);
        let config_path = dir.path().join("orthanc.json");
        std::fs::write(
            &config_path,
            serde_json::to_vec_pretty(&self.config).unwrap(),
        )
        .unwrap();
        let log_path = dir.path().join("orthanc.log");
        let child = spawn_orthanc(dir.path(), &self.env);
        (child, dir, port, log_path)
    }

    /// Starts Orthanc and waits until its REST API answers; panics with its log if it exits.
    pub fn start(self) -> Orthanc {
        let http = self.client();
        let env = self.env.clone();
        let (mut child, dir, port, log_path) = self.spawn();
        let ready = wait_until_ready(&mut child, &http, port);
        let orthanc = Orthanc {
            child: Some(child),
            dir,
            port,
            log_path,
            http,
            env,
        };
        if let Err(status) = ready {
            panic!(
                "Orthanc exited during start-up ({status}); its log:\n{}",
                orthanc.log()
            );
        }
        orthanc
    }

    /// Starts Orthanc expecting it to stop by itself (e.g. on a bad configuration).
    pub fn run_to_exit(self) -> Exited {
        let (mut child, dir, _port, log_path) = self.spawn();
        let deadline = Instant::now() + START_TIMEOUT;
        let status = wait_for(
            "Orthanc to exit",
            START_TIMEOUT + Duration::from_secs(1),
            || match child.try_wait().expect("wait for Orthanc") {
                Some(status) => Some(Some(status)),
                None if Instant::now() >= deadline => Some(None),
                None => None,
            },
        );
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let Some(status) = status else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("Orthanc did not exit; its log:\n{log}");
        };
        drop(dir);
        Exited { status, log }
    }
}

/// `Orthanc --verbose DIR/orthanc.json`, logging to (the end of) `DIR/orthanc.log`.
fn spawn_orthanc(dir: &Path, env: &[(String, String)]) -> Child {
    let log = File::options()
        .create(true)
        .append(true)
        .open(dir.join("orthanc.log"))
        .expect("log file");
    Command::new(orthanc_binary())
        .arg("--verbose")
        .arg(dir.join("orthanc.json"))
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start Orthanc")
}

/// Waits until Orthanc's REST API answers; `Err` if the process exited first.
fn wait_until_ready(child: &mut Child, http: &HttpClient, port: u16) -> Result<(), ExitStatus> {
    let url = format!("http://127.0.0.1:{port}/system");
    wait_for("Orthanc to answer /system", START_TIMEOUT, || {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(Err(status));
        }
        match http.try_get(&url) {
            Ok(reply) if reply.status == 200 => Some(Ok(())),
            _ => None,
        }
    })
}

/// An Orthanc that stopped by itself.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    pub log: String,
}

/// A running Orthanc; stopped and its directory removed on drop.
pub struct Orthanc {
    child: Option<Child>,
    dir: TempDir,
    port: u16,
    log_path: PathBuf,
    http: HttpClient,
    env: Vec<(String, String)>,
}

impl Orthanc {
    /// Shuts Orthanc down and starts it again on the same configuration and
    /// storage (a fresh process: e.g. memory figures without earlier history).
    pub fn restart(&mut self) {
        let mut child = self.child.take().expect("running");
        let _ = self
            .http
            .post(&self.url("/tools/shutdown"), "text/plain", b"");
        wait_for("Orthanc to shut down", Duration::from_secs(30), || {
            child.try_wait().expect("wait for Orthanc")
        });
        let mut child = spawn_orthanc(self.dir.path(), &self.env);
        let ready = wait_until_ready(&mut child, &self.http, self.port);
        self.child = Some(child);
        if let Err(status) = ready {
            panic!(
                "Orthanc exited on restart ({status}); its log:\n{}",
                self.log()
            );
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    pub fn get(&self, path: &str) -> Reply {
        self.http.get(&self.url(path))
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.http.post_json(&self.url(path), body)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Asks Orthanc to shut down and waits for it; returns its exit status.
    pub fn stop(mut self) -> (ExitStatus, String) {
        let mut child = self.child.take().expect("running");
        let _ = self
            .http
            .post(&self.url("/tools/shutdown"), "text/plain", b"");
        let status = wait_for("Orthanc to shut down", Duration::from_secs(30), || {
            child.try_wait().expect("wait for Orthanc")
        });
        (status, self.log())
    }
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "---- last lines of the Orthanc log (port {}) ----\n{}",
                self.port,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
