//! The one outbound HTTP client (token endpoints, discovery, JWKS, and the proxy).
//!
//! It follows Orthanc's own conventions so that an administrator configures
//! egress once: TLS with rustls over the system roots plus Orthanc's
//! `HttpsCACertificates` bundle and any per-server CA bundle; Orthanc's
//! `HttpProxy`, else the standard `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`
//! variables, with a per-server `HttpProxy` override; Orthanc's `HttpTimeout`
//! as the default total timeout. Connections are pooled and HTTP/2 is used
//! where the server offers it (ALPN).

use crate::config::{OrthancSettings, ServerConfig};
use crate::error::{Error, ErrorCode};
use std::time::Duration;

/// Settings that make two servers' clients different; equal settings share one client.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientSettings {
    pub verify_tls: bool,
    pub ca_files: Vec<std::path::PathBuf>,
    /// Explicit proxy URL; `None` means the environment variables.
    pub proxy: Option<String>,
    pub timeout: Option<Duration>,
    pub connect_timeout: Duration,
}

impl ClientSettings {
    /// The settings of one server, with Orthanc's globals as defaults.
    pub fn for_server(server: &ServerConfig, orthanc: &OrthancSettings) -> Self {
        let mut ca_files = server.tls.ca_files.clone();
        if let Some(global) = &orthanc.https_ca_certificates {
            // Orthanc's default points at the system bundle, which may be absent; skip it then.
            if global.is_file() {
                ca_files.push(global.clone());
            }
        }
        ClientSettings {
            verify_tls: server.tls.verify,
            ca_files,
            proxy: server
                .http_proxy
                .clone()
                .or_else(|| orthanc.http_proxy.clone()),
            timeout: server.timeout.or(orthanc.http_timeout),
            connect_timeout: server.connect_timeout,
        }
    }
}

/// Builds a pooled client; errors are configuration errors (CFG-002).
pub fn build_client(settings: &ClientSettings) -> Result<reqwest::Client, Error> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(true)
        .connect_timeout(settings.connect_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!(
            "orthanc-dicomweb-oauth/",
            env!("CARGO_PKG_VERSION")
        ));
    if let Some(timeout) = settings.timeout {
        builder = builder.timeout(timeout);
    }
    if !settings.verify_tls {
        builder = builder.danger_accept_invalid_certs(true);
    }
    for file in &settings.ca_files {
        let pem = std::fs::read(file).map_err(|e| {
            Error::coded(
                ErrorCode::Cfg002,
                format!("cannot read CA bundle {}: {}", file.display(), e.kind()),
            )
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|_| {
            Error::coded(
                ErrorCode::Cfg002,
                format!(
                    "CA bundle {} holds no valid PEM certificate",
                    file.display()
                ),
            )
        })?;
        if certs.is_empty() {
            return Err(Error::coded(
                ErrorCode::Cfg002,
                format!("CA bundle {} holds no certificate", file.display()),
            ));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    if let Some(proxy) = &settings.proxy {
        builder = builder.proxy(parse_proxy(proxy)?);
    }
    builder
        .build()
        .map_err(|e| Error::coded(ErrorCode::Cfg002, format!("HTTP client: {e}")))
}

/// Orthanc writes `HttpProxy` as `host:port` or `user:password@host:port`; URLs work too.
fn parse_proxy(text: &str) -> Result<reqwest::Proxy, Error> {
    let url = if text.contains("://") {
        text.to_owned()
    } else {
        format!("http://{text}")
    };
    // The value may hold proxy credentials: never echo it.
    let proxy = reqwest::Proxy::all(&url)
        .map_err(|_| Error::coded(ErrorCode::Cfg002, "HttpProxy is not a valid proxy address"))?;
    Ok(proxy.no_proxy(reqwest::NoProxy::from_env()))
}

/// Classifies a transport failure as NET-001 (timeout), NET-003 (TLS) or NET-002.
pub fn classify_transport_error(error: &reqwest::Error) -> ErrorCode {
    if error.is_timeout() {
        return ErrorCode::Net001;
    }
    // hyper/reqwest wrap the rustls error in nested io::Errors whose inner
    // error is not always exposed through source(): follow both paths.
    let mut pending: Vec<&(dyn std::error::Error + 'static)> = vec![error];
    while let Some(e) = pending.pop() {
        if e.downcast_ref::<rustls::Error>().is_some() {
            return ErrorCode::Net003;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return ErrorCode::Net001;
            }
            if let Some(inner) = io.get_ref() {
                pending.push(inner);
            }
        }
        if let Some(next) = e.source() {
            pending.push(next);
        }
    }
    ErrorCode::Net002
}

/// A transport failure as an [`Error`], naming what was being reached.
pub fn transport_error(what: &str, error: &reqwest::Error) -> Error {
    let code = classify_transport_error(error);
    let kind = match code {
        ErrorCode::Net001 => "timed out",
        ErrorCode::Net003 => "TLS handshake or certificate verification failed",
        _ => "could not connect",
    };
    // reqwest's Display includes the URL; ours are configuration, not secrets.
    Error::coded(code, format!("{what}: {kind} ({})", root_cause(error)))
}

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut last = error;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}
