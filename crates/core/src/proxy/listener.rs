//! The plugin's own loopback door to the proxy, for the DICOMweb plugin's
//! entries (ADR 0012).
//!
//! Orthanc's REST route costs Orthanc's HTTP server a `poll` and a `recv` per
//! byte of every chunk-size line of a chunked body (CivetWeb reads them one
//! byte at a time); with the DICOMweb plugin's 64 KiB chunks that made the
//! loopback hop cost more CPU than sending the study itself. This listener
//! serves the same `/oauth-dicom-web/servers/{name}/…` paths with hyper on
//! `127.0.0.1` and an ephemeral port, and streams bodies straight into the
//! upstream request. It admits only requests carrying the key generated at
//! start-up (header [`KEY_HEADER`], set in the registered entries): other local
//! processes cannot borrow the server's credentials through it. Orthanc's
//! route stays for every other caller.

use super::forward::{
    body_pipe, forward_buffered, Method, ProxyResponse, StreamedRequest, OWNED_FRAMES, REPLAY_LIMIT,
};
use super::request::{correlation_id, forward_request, record, PROXY_ENDPOINT, SERVERS_PREFIX};
use super::target::check_raw;
use crate::config::Config;
use crate::error::plain_error_body;
use crate::rate_limit::RateLimiter;
use crate::secret::Secret;
use crate::token::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use tracing::Instrument;

/// The request header that carries the listener's key.
pub const KEY_HEADER: &str = "X-DicomWeb-OAuth-Proxy-Key";
/// Connections served at once; more wait to be accepted. Bounds the
/// descriptors and memory a local process can tie up, key or not.
const MAX_CONNECTIONS: usize = 256;
/// How long a connection may take to send a request's head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// What the listener needs from the running plugin.
pub trait ProxyHost: Send + Sync + 'static {
    fn config(&self) -> &Config;
    fn engine(&self) -> &Engine;
    /// `ProxyRateLimitRequests`, if set.
    fn proxy_limiter(&self) -> Option<&RateLimiter>;
}

/// Where the DICOMweb plugin's entries reach the listener.
#[derive(Clone)]
pub struct LoopbackEndpoint {
    pub port: u16,
    /// Sent by the DICOMweb plugin in [`KEY_HEADER`]; new at every start.
    pub key: Secret,
}

impl std::fmt::Debug for LoopbackEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopbackEndpoint")
            .field("port", &self.port)
            .field("key", &"[redacted]")
            .finish()
    }
}

impl LoopbackEndpoint {
    /// The proxy URL of `server` on the listener.
    pub fn url(&self, server: &str) -> String {
        format!("http://127.0.0.1:{}{SERVERS_PREFIX}{server}/", self.port)
    }
}

/// A bound, not yet serving, listener.
pub struct ProxyListener {
    socket: std::net::TcpListener,
    endpoint: LoopbackEndpoint,
}

impl ProxyListener {
    /// Binds `127.0.0.1` on an ephemeral port and draws a new key.
    pub fn bind() -> std::io::Result<ProxyListener> {
        let socket = std::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        socket.set_nonblocking(true)?;
        let port = socket.local_addr()?.port();
        let bytes: [u8; 32] = rand::random();
        let key: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ok(ProxyListener {
            socket,
            endpoint: LoopbackEndpoint {
                port,
                key: Secret::new(key),
            },
        })
    }

    pub fn endpoint(&self) -> &LoopbackEndpoint {
        &self.endpoint
    }

    /// Serves on `runtime` until it shuts down. The listener holds `host`
    /// weakly: only requests in progress keep the plugin alive.
    pub fn serve<H: ProxyHost>(self, runtime: &tokio::runtime::Handle, host: Weak<H>) {
        let ProxyListener { socket, endpoint } = self;
        let key = Arc::new(endpoint.key);
        runtime.spawn(async move {
            let listener = match tokio::net::TcpListener::from_std(socket) {
                Ok(listener) => listener,
                Err(e) => {
                    tracing::error!("[INT-001] the proxy's loopback listener cannot run: {e}");
                    return;
                }
            };
            let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
            loop {
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                    return;
                };
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors, typically: give running transfers a moment.
                        tracing::warn!("proxy listener: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (host, key) = (host.clone(), Arc::clone(&key));
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let (host, key) = (host.clone(), Arc::clone(&key));
                        async move { Ok::<_, Infallible>(handle(host, &key, peer, request).await) }
                    });
                    if let Err(e) = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_TIMEOUT)
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                    {
                        tracing::debug!("proxy listener connection ended: {e}");
                    }
                    drop(slot);
                });
            }
        });
    }
}

type Answer = Response<Full<Bytes>>;

fn json_answer(status: u16, body: &serde_json::Value) -> Answer {
    let mut answer = Response::new(Full::new(Bytes::from(body.to_string())));
    *answer.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    answer
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    answer
}

fn plain_error(status: u16, error: &str, message: &str) -> Answer {
    json_answer(status, &plain_error_body(status, error, message))
}

fn proxied_answer(answer: ProxyResponse) -> Answer {
    let answer = answer.for_caller();
    let mut response = Response::new(Full::new(answer.body));
    *response.status_mut() =
        hyper::StatusCode::from_u16(answer.status).unwrap_or(hyper::StatusCode::BAD_GATEWAY);
    let headers = response.headers_mut();
    if let Some(value) = answer
        .content_type
        .and_then(|t| HeaderValue::from_str(&t).ok())
    {
        headers.insert(CONTENT_TYPE, value);
    }
    for (name, value) in answer.headers {
        if let (Ok(name), Ok(value)) = (
            hyper::header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            headers.append(name, value);
        }
    }
    response
}

async fn handle<H: ProxyHost>(
    host: Weak<H>,
    key: &Secret,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Answer {
    let Some(host) = host.upgrade() else {
        return plain_error(503, "shutting_down", "the plugin is stopping");
    };
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let given = request
        .headers()
        .get(KEY_HEADER)
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    if !bool::from(given.ct_eq(key.expose().as_bytes())) {
        tracing::warn!(
            event = "auth_failure",
            client = %peer.ip(),
            "proxy listener refused a request without the proxy key"
        );
        let answer = plain_error(
            403,
            "forbidden",
            "this port serves the DICOMweb plugin's registered entries only; use Orthanc's /oauth-dicom-web/ route",
        );
        host.engine().metrics().observe_http(
            &method,
            PROXY_ENDPOINT,
            403,
            started.elapsed().as_secs_f64(),
        );
        return answer;
    }
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let id = correlation_id(
        header("x-request-id").as_deref(),
        header("x-correlation-id").as_deref(),
    );
    let path = request.uri().path().to_owned();
    let server = path
        .strip_prefix(SERVERS_PREFIX)
        .map(|after| after.split_once('/').map_or(after, |(name, _)| name))
        .unwrap_or_default()
        .to_owned();
    let span =
        tracing::info_span!("request", correlation_id = %id, operation = "proxy", server = %server);
    let answer = serve(&*host, &id, peer.ip(), request)
        .instrument(span.clone())
        .await;
    let _entered = span.enter();
    match answer {
        Served::Proxied { answer, sent } => {
            record(
                host.engine().metrics(),
                &server,
                &method,
                &answer,
                sent,
                started,
            );
            proxied_answer(answer)
        }
        Served::Refused(answer) => {
            host.engine().metrics().observe_http(
                &method,
                PROXY_ENDPOINT,
                answer.status().as_u16(),
                started.elapsed().as_secs_f64(),
            );
            answer
        }
    }
}

enum Served {
    /// Sent upstream (or stopped by a token or transport error): recorded as proxied.
    Proxied { answer: ProxyResponse, sent: u64 },
    /// Refused before anything was sent.
    Refused(Answer),
}

async fn serve<H: ProxyHost>(
    host: &H,
    correlation: &str,
    client: IpAddr,
    request: Request<Incoming>,
) -> Served {
    if let Some(limiter) = host.proxy_limiter() {
        if let Err(retry_after) = limiter.check(client) {
            let seconds = retry_after.as_secs_f64().ceil() as u64;
            tracing::warn!(event = "rate_limit_exceeded", client = %client, retry_after_s = seconds, "rate limit exceeded");
            let mut answer =
                plain_error(429, "rate_limit_exceeded", "too many requests; retry later");
            answer
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
            return Served::Refused(answer);
        }
    }
    let method = match *request.method() {
        hyper::Method::GET => Method::GET,
        hyper::Method::POST => Method::POST,
        hyper::Method::PUT => Method::PUT,
        hyper::Method::DELETE => Method::DELETE,
        _ => {
            let mut answer = plain_error(405, "method_not_allowed", "use GET, POST, PUT, DELETE");
            answer
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, POST, PUT, DELETE"));
            return Served::Refused(answer);
        }
    };
    let not_found = |message: &str| Served::Refused(plain_error(404, "not_found", message));
    let Some(after) = request.uri().path().strip_prefix(SERVERS_PREFIX) else {
        return not_found("no such route");
    };
    let (name, raw_rest) = after.split_once('/').unwrap_or((after, ""));
    // Here the path arrives as the caller wrote it: encoded slashes, NULs and
    // dots are refused before anything is decoded.
    if let Err(e) = check_raw(raw_rest).and_then(|()| check_raw(name)) {
        return Served::Refused(plain_error(400, "bad_request", e.message()));
    }
    let (Ok(name), Ok(rest)) = (
        percent_encoding::percent_decode_str(name).decode_utf8(),
        percent_encoding::percent_decode_str(raw_rest).decode_utf8(),
    ) else {
        return Served::Refused(plain_error(400, "bad_request", "the path is not UTF-8"));
    };
    let Some(config) = host.config().server(&name) else {
        return not_found(&format!("unknown DICOMweb OAuth server '{name}'"));
    };
    let (Some(manager), Some(http)) = (
        host.engine().manager(&name),
        host.engine().http_client(&name),
    ) else {
        return not_found("unknown server");
    };
    let query: Vec<(String, String)> = request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect();
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let forward = match forward_request(config, method, &rest, &query, &headers, correlation) {
        Ok(forward) => forward,
        Err(e) => return Served::Refused(plain_error(400, "bad_request", e.message())),
    };
    if !matches!(*request.method(), hyper::Method::POST | hyper::Method::PUT) {
        let body = match Limited::new(request.into_body(), REPLAY_LIMIT)
            .collect()
            .await
        {
            Ok(body) => body.to_bytes(),
            Err(_) => {
                return Served::Refused(plain_error(
                    413,
                    "payload_too_large",
                    "GET and DELETE bodies are limited to 4 MiB",
                ))
            }
        };
        let sent = body.len() as u64;
        let body = (!body.is_empty()).then_some(body);
        let answer = forward_buffered(http, manager, &forward, body).await;
        return Served::Proxied { answer, sent };
    }
    // The token first: if it cannot be had, nothing is sent upstream at all.
    let token = match manager.token().await {
        Ok((token, _)) => token,
        Err(e) => {
            tracing::warn!(code = e.code().as_str(), "no token, request not sent: {e}");
            return Served::Proxied {
                answer: ProxyResponse::token_error(&e),
                sent: 0,
            };
        }
    };
    let (mut sender, stream) = body_pipe(OWNED_FRAMES);
    let in_flight = StreamedRequest::start(
        &tokio::runtime::Handle::current(),
        http.clone(),
        Arc::clone(manager),
        forward,
        token,
        stream,
    );
    let mut body = request.into_body();
    loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    sender.send(data).await;
                }
            }
            Some(Err(e)) => {
                // The caller went away mid-body: dropping the sender unfinished
                // fails the upstream request (nothing half-stored as complete).
                tracing::warn!("the caller's request body broke off: {e}");
                let sent = sender.bytes_sent();
                drop(sender);
                let answer = in_flight.finish().await;
                return Served::Proxied { answer, sent };
            }
            None => break,
        }
    }
    let sent = sender.finish();
    Served::Proxied {
        answer: in_flight.finish().await,
        sent,
    }
}
