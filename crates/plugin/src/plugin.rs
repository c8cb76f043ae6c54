//! What the entry points do, in safe Rust: version check, configuration,
//! start-up and shutdown.

use crate::{dicomweb_servers, ffi, logging, routes};
use dicomweb_oauth_core::config::{self, Config, Mode};
use dicomweb_oauth_core::proxy::listener::{LoopbackEndpoint, ProxyHost, ProxyListener};
use dicomweb_oauth_core::rate_limit::RateLimiter;
use dicomweb_oauth_core::registration;
use dicomweb_oauth_core::token::Engine;
use dicomweb_oauth_core::{PLUGIN_NAME, PLUGIN_VERSION};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The oldest Orthanc this plugin runs on (SPEC 2).
const MINIMAL_ORTHANC: (u32, u32, u32) = (1, 10, 1);
/// How long finalization waits for in-flight outbound requests.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything the running plugin owns.
pub struct State {
    pub config: Config,
    pub engine: Engine,
    /// `RateLimitRequests` on the management API, per client.
    pub api_limiter: Option<RateLimiter>,
    /// `ProxyRateLimitRequests` on the proxy route, per client.
    pub proxy_limiter: Option<RateLimiter>,
    /// The async runtime of all outbound I/O; Orthanc's threads enter it in one place.
    pub runtime: tokio::runtime::Runtime,
    /// The proxy's loopback listener, which the auto-registered proxy-mode entries use.
    pub loopback: Option<LoopbackEndpoint>,
}

impl ProxyHost for State {
    fn config(&self) -> &Config {
        &self.config
    }
    fn engine(&self) -> &Engine {
        &self.engine
    }
    fn proxy_limiter(&self) -> Option<&RateLimiter> {
        self.proxy_limiter.as_ref()
    }
}

/// Stack of the runtime's threads: deep enough for HTTP/TLS futures in debug builds.
const THREAD_STACK: usize = 8 << 20;

impl State {
    /// Runs `work` on one of the runtime's blocking threads and waits for it.
    ///
    /// Orthanc's HTTP threads have small stacks; building the proxy's futures
    /// there overflowed them (a segfault in debug builds). Every callback that
    /// does real work hops here first; only a tiny join handle stays on
    /// Orthanc's stack.
    pub fn on_worker<T, F>(self: &Arc<Self>, work: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(&Arc<State>) -> T + Send + 'static,
    {
        let state = Arc::clone(self);
        let task = self.runtime.spawn_blocking(move || work(&state));
        match self.runtime.block_on(task) {
            Ok(output) => output,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => panic!("the plugin's runtime is shutting down"),
        }
    }
}

/// The running plugin; `None` while idle or after finalization.
static STATE: Mutex<Option<Arc<State>>> = Mutex::new(None);

/// The running plugin, if any.
pub fn state() -> Option<Arc<State>> {
    STATE.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Initializes the plugin; `Err` makes Orthanc refuse to start.
pub fn initialize(orthanc_version: &str) -> Result<(), ()> {
    logging::install();
    if !version_supported(orthanc_version) {
        tracing::error!(
            "this plugin needs Orthanc {}.{}.{} or newer, but runs in Orthanc {orthanc_version}; refusing to load",
            MINIMAL_ORTHANC.0,
            MINIMAL_ORTHANC.1,
            MINIMAL_ORTHANC.2
        );
        return Err(());
    }
    ffi::set_description(
        "OAuth2 and cloud credentials (Azure, Google, AWS, any OIDC provider) for the DICOMweb plugin's remote servers",
    );

    let Some(text) = ffi::configuration() else {
        tracing::error!("[INT-001] Orthanc did not provide its configuration; refusing to load");
        return Err(());
    };
    let orthanc_config: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(
                "[INT-001] Orthanc's configuration is not valid JSON ({e}); refusing to load"
            );
            return Err(());
        }
    };
    // Orthanc has already replaced ${VAR} (unset ones by ""): read our section
    // as written, so that an unset variable is reported by name (CFG-003).
    let raw_section = ffi::configuration_path()
        .and_then(|path| config::files::raw_section(std::path::Path::new(&path)));
    let loaded = config::load_with_raw_section(&orthanc_config, raw_section, &|name| {
        std::env::var(name).ok()
    });
    let config = match loaded {
        Ok(Some(config)) => config,
        Ok(None) => {
            tracing::warn!(
                "no \"{}\" section in the Orthanc configuration: the plugin is loaded but idle",
                config::SECTION
            );
            return Ok(());
        }
        Err(e) => {
            tracing::error!(
                event = "config_error",
                code = e.code.as_str(),
                "invalid configuration, Orthanc will stop: {e}"
            );
            return Err(());
        }
    };
    logging::configure(&config);
    if let Some(from) = &config.migration.from_version {
        tracing::info!(
            "configuration version {from} migrated to 2.0: {}",
            if config.migration.changes.is_empty() {
                "nothing to change".to_owned()
            } else {
                config.migration.changes.join(", ")
            }
        );
    }
    for warning in &config.warnings {
        tracing::warn!("SECURITY WARNING: {warning}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("dicomweb-oauth")
        .thread_stack_size(THREAD_STACK)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("[INT-001] cannot start the plugin's runtime: {e}; Orthanc will stop");
            return Err(());
        }
    };
    let engine = match Engine::new(&config, runtime.handle().clone()) {
        Ok(engine) => engine,
        Err(e) => {
            tracing::error!("invalid configuration, Orthanc will stop: {e}");
            runtime.shutdown_background();
            return Err(());
        }
    };
    engine.start_refreshers();
    let listener = if config.proxy_listener && registers_proxy_entries(&config) {
        match ProxyListener::bind() {
            Ok(listener) => Some(listener),
            Err(e) => {
                tracing::error!("[INT-001] cannot open the proxy's loopback listener on 127.0.0.1: {e}; Orthanc will stop (\"ProxyListener\": false uses Orthanc's own port)");
                runtime.shutdown_background();
                return Err(());
            }
        }
    } else {
        None
    };
    let names: Vec<&str> = config.servers.iter().map(|s| s.name.as_str()).collect();
    tracing::info!(
        "{PLUGIN_NAME} {PLUGIN_VERSION} started with {} server(s): {}",
        names.len(),
        names.join(", ")
    );
    let state = Arc::new(State {
        api_limiter: RateLimiter::new(config.rate_limit_requests, config.rate_limit_window),
        proxy_limiter: RateLimiter::new(config.proxy_rate_limit_requests, config.rate_limit_window),
        loopback: listener.as_ref().map(|l| l.endpoint().clone()),
        config,
        engine,
        runtime,
    });
    if let Some(listener) = listener {
        tracing::info!(
            port = listener.endpoint().port,
            "proxy listener on 127.0.0.1:{} for the DICOMweb plugin's entries",
            listener.endpoint().port
        );
        listener.serve(state.runtime.handle(), Arc::downgrade(&state));
    }
    *STATE.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&state));
    ffi::register_chunked_route(routes::PROXY_ROUTE);
    for route in routes::API_ROUTES {
        ffi::register_rest_route(route);
    }
    ffi::register_incoming_filter();
    dicomweb_servers::install(&state);
    ffi::register_started_callback();
    Ok(())
}

/// Releases everything the plugin started: refreshers, connections, the
/// runtime and its threads. Orthanc unloads the library next.
pub fn finalize() {
    let Some(state) = STATE.lock().unwrap_or_else(|p| p.into_inner()).take() else {
        return;
    };
    state.engine.stop();
    // Requests still running hold their own Arc; wait briefly for them to end.
    let state = match Arc::try_unwrap(state) {
        Ok(state) => state,
        Err(shared) => {
            let deadline = std::time::Instant::now() + SHUTDOWN_TIMEOUT;
            let mut shared = shared;
            loop {
                match Arc::try_unwrap(shared) {
                    Ok(state) => break state,
                    Err(again) if std::time::Instant::now() < deadline => {
                        shared = again;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => {
                        tracing::warn!(
                            "requests still running at shutdown; leaving them to Orthanc's exit"
                        );
                        return;
                    }
                }
            }
        }
    };
    let State {
        engine, runtime, ..
    } = state;
    drop(engine);
    runtime.shutdown_timeout(SHUTDOWN_TIMEOUT);
    tracing::info!("{PLUGIN_NAME} stopped: refreshers ended, runtime shut down");
    logging::close();
}

/// Whether any proxy-mode server gets an entry in the DICOMweb plugin.
fn registers_proxy_entries(config: &Config) -> bool {
    registration::servers_to_register(config)
        .0
        .iter()
        .any(|s| s.mode == Mode::Proxy)
}

/// Whether `version` (as Orthanc reports it) is at least [`MINIMAL_ORTHANC`].
/// Development builds report "mainline" and are accepted.
fn version_supported(version: &str) -> bool {
    if version == "mainline" {
        return true;
    }
    let mut parts = version.split('.').map(|p| {
        p.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u32>()
            .ok()
    });
    match (
        parts.next().flatten(),
        parts.next().flatten(),
        parts.next().flatten().or(Some(0)),
    ) {
        (Some(major), Some(minor), Some(revision)) => (major, minor, revision) >= MINIMAL_ORTHANC,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::version_supported;

    #[test]
    fn version_check() {
        assert!(version_supported("1.10.1"));
        assert!(version_supported("1.12.4"));
        assert!(version_supported("2.0"));
        assert!(version_supported("mainline"));
        assert!(!version_supported("1.10.0"));
        assert!(!version_supported("1.9.7"));
        assert!(!version_supported("garbage"));
        assert!(!version_supported(""));
    }
}
