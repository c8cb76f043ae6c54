//! Shared set-up of the token engine tests.
#![allow(dead_code)]

use dicomweb_oauth_core::config::{self, Config};
use dicomweb_oauth_core::token::Engine;
use serde_json::{json, Value};
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

/// Everything the core logged during this test binary's run.
static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures the core's `tracing` output (every level) for the secret checks.
pub fn capture_logs() {
    let buffer = LOGS
        .get_or_init(|| Arc::new(Mutex::new(Vec::new())))
        .clone();
    let writer = Capture(buffer);
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _ = tracing::subscriber::set_global_default(subscriber);
}

pub fn logs() -> String {
    LOGS.get()
        .map(|b| String::from_utf8_lossy(&b.lock().unwrap()).into_owned())
        .unwrap_or_default()
}

/// Loads an Orthanc configuration (`orthanc` holds Orthanc's own keys) with one
/// `DicomWebOAuth` server named `s`.
pub fn config_with(server: Value, orthanc: Value) -> Config {
    let mut full = orthanc;
    if full.is_null() {
        full = json!({});
    }
    // Section keys given by the caller (e.g. CacheType) are kept beside the server.
    let mut section = match full.get("DicomWebOAuth") {
        Some(Value::Object(extra)) => Value::Object(extra.clone()),
        _ => json!({}),
    };
    section["ConfigVersion"] = json!("2.0");
    section["Servers"] = json!({"s": server});
    full["DicomWebOAuth"] = section;
    config::load(&full, &|_| None).unwrap().unwrap()
}

pub fn engine(server: Value) -> Engine {
    engine_with(server, Value::Null)
}

pub fn engine_with(server: Value, orthanc: Value) -> Engine {
    capture_logs();
    Engine::new(
        &config_with(server, orthanc),
        tokio::runtime::Handle::current(),
    )
    .unwrap()
}

/// Fast retries for fault tests.
pub fn fast_resilience(attempts: u32) -> Value {
    json!({"RetryMaxAttempts": attempts, "RetryInitialDelay": 0.01, "RetryMaxDelay": 0.05, "RetryStrategy": "fixed"})
}
