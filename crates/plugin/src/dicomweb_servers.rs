//! Auto-registration in the DICOMweb plugin and header mode (issue 8): the
//! plugin `PUT`s each `DicomWebOAuth` server into `/dicom-web/servers` once
//! Orthanc has started, and in header mode again with every new token.

use crate::ffi;
use crate::plugin::State;
use dicomweb_oauth_core::config::{Config, Mode, ServerConfig};
use dicomweb_oauth_core::registration;
use dicomweb_oauth_core::secret::Secret;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Set once Orthanc has started: its REST API (the DICOMweb plugin's routes
/// included) may be called from then on.
static STARTED: AtomicBool = AtomicBool::new(false);

/// Hooks header-mode servers to their token managers (called at initialization).
pub fn install(state: &Arc<State>) {
    STARTED.store(false, Ordering::SeqCst);
    let (servers, _) = registration::servers_to_register(&state.config);
    for server in servers.into_iter().filter(|s| s.mode == Mode::Header) {
        let Some(manager) = state.engine.manager(&server.name) else {
            continue;
        };
        let server = server.clone();
        manager.on_new_token(Box::new(move |token| {
            if STARTED.load(Ordering::SeqCst) {
                put(
                    &server,
                    &registration::header_entry(&server, Some(&token.value)),
                );
            }
        }));
    }
}

/// Orthanc has started: register every server (with the token cached so far, in header mode).
pub fn orthanc_started() {
    let Some(state) = crate::plugin::state() else {
        return;
    };
    STARTED.store(true, Ordering::SeqCst);
    register_all(&state.config, &state);
}

fn register_all(config: &Config, state: &State) {
    let (servers, skipped) = registration::servers_to_register(config);
    for name in skipped {
        tracing::info!(server = name, "DicomWeb.Servers already defines this server: the user's entry is kept, not registered");
    }
    for server in servers {
        match server.mode {
            Mode::Proxy => {
                let listener = state.loopback.as_ref();
                put(server, &registration::proxy_entry(config, server, listener));
                tracing::info!(
                    server = %server.name,
                    "registered in the DICOMweb plugin through {}",
                    registration::proxy_url(config, server, listener)
                );
            }
            Mode::Header => match state.engine.manager(&server.name).and_then(|m| m.cached()) {
                // An entry without its Authorization header would send unauthenticated
                // requests to the remote: header-mode servers appear with their first token.
                Some(token) => {
                    put(
                        server,
                        &registration::header_entry(server, Some(&token.value)),
                    );
                    tracing::info!(server = %server.name, "registered in the DICOMweb plugin with an Authorization header (header mode)");
                }
                None => tracing::info!(
                    server = %server.name,
                    "header mode: the server is registered in the DICOMweb plugin as soon as its first token arrives"
                ),
            },
        }
    }
}

/// `PUT /dicom-web/servers/{name}`; the body (credentials, token) is never logged.
fn put(server: &ServerConfig, body: &Secret) {
    let uri = format!("/dicom-web/servers/{}", server.name);
    if let Err(code) = ffi::rest_api_put(&uri, body.expose().as_bytes()) {
        tracing::warn!(
            server = %server.name,
            orthanc_error = code,
            "could not register the server in the DICOMweb plugin (is it loaded, with DicomWeb.Enable?)"
        );
    }
}
