//! What every front door of the proxy does the same way: Orthanc's REST route
//! and the plugin's loopback listener both turn a caller's request into a
//! [`ForwardRequest`], tag it with a correlation id, and record the outcome.

use super::forward::{ForwardRequest, Method, ProxyResponse};
use super::headers;
use super::target::{upstream_url, PathError};
use crate::config::ServerConfig;
use crate::error::ErrorCode;
use crate::metrics::Metrics;
use std::time::Instant;

/// Metrics label of the proxy route (one label for every server and path).
pub const PROXY_ENDPOINT: &str = "/oauth-dicom-web/servers/{name}";
/// The path prefix of the proxy route, on Orthanc's port and on the listener.
pub const PROXY_PREFIX: &str = "/oauth-dicom-web/";
/// The part of the proxy path before the server's name.
pub const SERVERS_PREFIX: &str = "/oauth-dicom-web/servers/";

/// The caller's correlation id (`X-Request-ID`, else `X-Correlation-ID`) if it
/// is a sane token, else a new one.
pub fn correlation_id(request_id: Option<&str>, correlation_id: Option<&str>) -> String {
    let given = request_id.or(correlation_id).filter(|id| {
        (1..=128).contains(&id.len())
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
    });
    match given {
        Some(id) => id.to_owned(),
        None => {
            let bytes: [u8; 16] = rand::random();
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        }
    }
}

/// The upstream request for `rest` (the path below the server's name) on
/// `server`: allowed headers only, plus the correlation id as `X-Request-ID`.
pub fn forward_request(
    server: &ServerConfig,
    method: Method,
    rest: &str,
    query: &[(String, String)],
    caller_headers: &[(String, String)],
    correlation_id: &str,
) -> Result<ForwardRequest, PathError> {
    let url = upstream_url(&server.url, rest, query)?;
    let mut headers: Vec<(String, String)> = headers::forwardable(caller_headers)
        .filter(|(k, _)| !k.eq_ignore_ascii_case("x-request-id"))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    headers.push(("X-Request-ID".into(), correlation_id.to_owned()));
    Ok(ForwardRequest {
        method,
        url,
        headers,
        signing: server.sigv4(),
    })
}

/// Logs one proxied request and counts it in the metrics.
pub fn record(
    metrics: &Metrics,
    server: &str,
    method: &str,
    answer: &ProxyResponse,
    sent: u64,
    started: Instant,
) {
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        method,
        status = answer.status,
        bytes_sent = sent,
        bytes_received = answer.upstream_bytes,
        duration_ms = (seconds * 1000.0) as u64,
        "proxied"
    );
    metrics.observe_proxy(
        server,
        method,
        answer.status,
        sent,
        answer.upstream_bytes,
        seconds,
    );
    metrics.observe_http(method, PROXY_ENDPOINT, answer.status, seconds);
}

impl ProxyResponse {
    /// The answer as the caller gets it. A 301 is not passed through: Orthanc
    /// cannot send one from a plugin, and following it would send the caller
    /// to the remote without credentials.
    pub fn for_caller(self) -> ProxyResponse {
        if self.status == 301 {
            return ProxyResponse::error(
                ErrorCode::Net002,
                502,
                "the remote DICOMweb server answered a permanent redirect (301): check the server's Url",
                serde_json::Value::Null,
            );
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlation_ids_are_kept_when_sane_and_made_otherwise() {
        assert_eq!(correlation_id(Some("abc-1"), Some("other")), "abc-1");
        assert_eq!(correlation_id(None, Some("corr.2")), "corr.2");
        let made = correlation_id(Some("bad id\n"), None);
        assert_eq!(made.len(), 32);
        assert!(made.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(made, correlation_id(None, None));
    }

    #[test]
    fn a_301_becomes_a_502_with_net_002() {
        let answer =
            ProxyResponse::error(ErrorCode::Auth001, 301, "moved", serde_json::Value::Null)
                .for_caller();
        assert_eq!(answer.status, 502);
        assert!(String::from_utf8_lossy(&answer.body).contains("NET-002"));
    }
}
