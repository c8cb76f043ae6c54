//! Test harness: starts real processes (Orthanc with its DICOMweb plugin and
//! ours, the `oidc-provider` identity provider) on free loopback ports in
//! temporary directories, waits for them to be ready by polling (never by
//! sleeping a fixed time), and stops and removes them on drop — also when a
//! test fails.
//!
//! It installs nothing: `scripts/test` installs the Debian packages and npm
//! fixtures first. A missing prerequisite fails loudly with what to install.

mod aws;
mod azure;
mod dicom;
mod fault;
mod gateway;
mod google;
mod http;
mod idp;
mod node;
mod orthanc;
mod redis;
mod tinyproxy;
mod tls;

pub use aws::AwsEmulator;
pub use azure::{self_signed_certificate, AzureEmulator};
pub use dicom::{create_study, study_file_hashes, Study};
pub use fault::{Fault, FaultServer, RecordedRequest};
pub use gateway::Gateway;
pub use google::GoogleEmulator;
pub use http::{HttpClient, Reply};
pub use idp::Idp;
pub use node::NodeFixture;
pub use orthanc::{Exited, Orthanc, OrthancBuilder};
pub use redis::RedisServer;
pub use tinyproxy::Tinyproxy;
pub use tls::{TestCa, TestCert};

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The workspace root (where `Cargo.toml`, `fixtures/` and `target/` live).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral loopback port")
        .port()
}

/// Polls `probe` until it returns `Some`, failing after `timeout`.
///
/// This is synchronisation on an observable condition, not a fixed sleep:
/// it returns as soon as the condition holds.
pub fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Asserts that none of `secrets` occurs in `text` (naming where it looked).
pub fn assert_no_secrets(place: &str, text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!secret.is_empty(), "empty secret in the list");
        assert!(!text.contains(secret), "a secret leaked into {place}");
    }
}

/// The plugin's structured log lines in an Orthanc log: the JSON object after
/// Orthanc's own prefix (`I1204 21:00:00.000000 PluginsManager.cpp:161] (plugins) {…}`).
/// Panics on a line that starts like one of ours but is not valid JSON.
pub fn plugin_log_lines(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|line| {
            let start = line.find("{\"timestamp\"")?;
            let value: serde_json::Value = serde_json::from_str(&line[start..])
                .unwrap_or_else(|e| panic!("a plugin log line is not valid JSON ({e}): {line}"));
            Some(value)
        })
        .collect()
}
