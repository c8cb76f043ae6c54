//! Adapts Orthanc's REST callbacks to the core: the DICOMweb proxy and the
//! management API. Orthanc's HTTP threads are synchronous; they enter the
//! plugin's async runtime here, and only here: each callback hops to a
//! runtime blocking thread (`State::on_worker`) and waits there (`block_on`).
//!
//! Every request gets a correlation id (the caller's `X-Request-ID` or
//! `X-Correlation-ID`, else a new one), carried by a `tracing` span into its
//! log lines and forwarded upstream as `X-Request-ID`.

use crate::http::{Bytes, Method, Request, Response, Upload};
use crate::plugin::{state, State};
use dicomweb_oauth_core::api::{self, ApiAnswer};
use dicomweb_oauth_core::error::{error_body, plain_error_body};
use dicomweb_oauth_core::proxy::forward::Method as UpstreamMethod;
use dicomweb_oauth_core::proxy::{
    self, BodySender, ForwardRequest, ProxyResponse, StreamedRequest,
};
use dicomweb_oauth_core::ErrorCode;
use serde_json::{json, Value};
use std::cell::Cell;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

/// The proxy route: server name, then the DICOMweb path below it.
pub const PROXY_ROUTE: &str = "/oauth-dicom-web/servers/([^/]+)/(.*)";
/// Management API routes.
pub const API_ROUTES: &[&str] = &[
    "/dicomweb-oauth/status",
    "/dicomweb-oauth/servers",
    "/dicomweb-oauth/servers/([^/]+)/test",
    "/dicomweb-oauth/servers/([^/]+)/token",
    "/dicomweb-oauth/metrics",
    "/dicomweb-oauth/ui",
];
use dicomweb_oauth_core::proxy::request::{PROXY_ENDPOINT, PROXY_PREFIX};

/// The status page: one self-contained HTML file (no CDN), built into the library.
const STATUS_PAGE: &str = include_str!("ui.html");

thread_local! {
    /// The client address of the request this Orthanc thread is serving, as
    /// Orthanc's incoming-request filter saw it just before the callback (REST
    /// callbacks are not told the address themselves).
    static CLIENT_IP: Cell<Option<IpAddr>> = const { Cell::new(None) };
}

/// A JSON error answer (SPEC 3.2 body).
pub fn error_response(code: ErrorCode, message: &str) -> Response {
    error_with_status(code, code.http_status(), message)
}

fn error_with_status(code: ErrorCode, status: u16, message: &str) -> Response {
    Response::json(status, &error_body(code, message, Value::Null, status))
}

fn plain_error(status: u16, error: &str, message: &str) -> Response {
    Response::json(status, &plain_error_body(status, error, message))
}

fn not_found(message: &str) -> Response {
    plain_error(404, "not_found", message)
}

fn method_not_allowed(allowed: &str) -> Response {
    plain_error(405, "method_not_allowed", &format!("use {allowed}")).with_header("Allow", allowed)
}

fn unavailable() -> Response {
    plain_error(
        503,
        "not_configured",
        "the plugin has no DicomWebOAuth section and is idle",
    )
}

fn from_api(answer: ApiAnswer) -> Response {
    Response::json(answer.status, &answer.body)
}

/// The caller's correlation id if it is a sane token, else a new one.
fn correlation_id(request: &Request) -> String {
    proxy::request::correlation_id(
        request.header("x-request-id"),
        request.header("x-correlation-id"),
    )
}

/// Applies the rate limit of the route; `Err` is the 429 answer.
fn rate_limited(state: &State, proxy_route: bool) -> Result<(), Response> {
    let limiter = if proxy_route {
        &state.proxy_limiter
    } else {
        &state.api_limiter
    };
    let (Some(limiter), Some(client)) = (limiter, CLIENT_IP.get()) else {
        return Ok(());
    };
    limiter.check(client).map_err(|retry_after| {
        let seconds = retry_after.as_secs_f64().ceil() as u64;
        tracing::warn!(event = "rate_limit_exceeded", client = %client, retry_after_s = seconds, "rate limit exceeded");
        plain_error(429, "rate_limit_exceeded", "too many requests; retry later")
            .with_header("Retry-After", &seconds.to_string())
    })
}

/// Metrics label of an API path.
fn api_endpoint(path: &str) -> &'static str {
    match path {
        "/dicomweb-oauth/status" => "/dicomweb-oauth/status",
        "/dicomweb-oauth/servers" => "/dicomweb-oauth/servers",
        "/dicomweb-oauth/metrics" => "/dicomweb-oauth/metrics",
        "/dicomweb-oauth/ui" => "/dicomweb-oauth/ui",
        p if p.ends_with("/test") => "/dicomweb-oauth/servers/{name}/test",
        p if p.ends_with("/token") => "/dicomweb-oauth/servers/{name}/token",
        _ => "other",
    }
}

/// Whole-body requests: proxy GET/DELETE and the management API.
pub fn handle(request: &Request) -> Response {
    let Some(state) = state() else {
        return unavailable();
    };
    let proxy_route = request.url.starts_with(PROXY_PREFIX);
    if let Err(refused) = rate_limited(&state, proxy_route) {
        return refused;
    }
    let request = request.clone();
    state.on_worker(move |state| {
        let started = Instant::now();
        let id = correlation_id(&request);
        let server = request.groups.first().cloned().unwrap_or_default();
        let operation = if proxy_route { "proxy" } else { "api" };
        let span =
            tracing::info_span!("request", correlation_id = %id, operation, server = %server);
        let _entered = span.enter();
        let endpoint = if proxy_route {
            PROXY_ENDPOINT
        } else {
            api_endpoint(request.url.trim_end_matches('/'))
        };
        let response = if proxy_route {
            proxy_buffered(state, &request, &id, &span)
        } else {
            api_route(state, &request)
        };
        state.engine.metrics().observe_http(
            request.method.as_str(),
            endpoint,
            response.status,
            started.elapsed().as_secs_f64(),
        );
        response
    })
}

/// Streamed requests (POST/PUT on the proxy route).
pub fn start_upload(request: &Request) -> Result<Box<dyn Upload>, Response> {
    let state = state().ok_or_else(unavailable)?;
    rate_limited(&state, true)?;
    let request = request.clone();
    state.on_worker(move |state| start_upload_on_worker(state, &request))
}

fn start_upload_on_worker(
    state: &Arc<State>,
    request: &Request,
) -> Result<Box<dyn Upload>, Response> {
    let started = Instant::now();
    let id = correlation_id(request);
    let (server, forward) = proxy_target(state, request, &id)?;
    let span =
        tracing::info_span!("request", correlation_id = %id, operation = "proxy", server = %server);
    let manager = Arc::clone(
        state
            .engine
            .manager(&server)
            .ok_or_else(|| not_found("unknown server"))?,
    );
    let http = state
        .engine
        .http_client(&server)
        .cloned()
        .ok_or_else(|| not_found("unknown server"))?;
    // The token first: if it cannot be had, nothing is sent upstream at all.
    let token = state
        .runtime
        .block_on(manager.token().instrument(span.clone()))
        .map(|(token, _)| token)
        .map_err(|e| {
            let _entered = span.enter();
            tracing::warn!(code = e.code().as_str(), "no token, request not sent: {e}");
            to_response(ProxyResponse::token_error(&e))
        })?;
    let (sender, stream) = proxy::body_pipe(proxy::forward::LENT_CHUNKS);
    let in_flight = {
        let _entered = span.enter();
        StreamedRequest::start(
            state.runtime.handle(),
            http,
            manager,
            forward,
            token,
            stream,
        )
    };
    Ok(Box::new(ProxyUpload {
        state: Arc::clone(state),
        sender,
        in_flight,
        server,
        method: request.method,
        span,
        started,
    }))
}

struct ProxyUpload {
    state: Arc<State>,
    sender: BodySender,
    in_flight: StreamedRequest,
    server: String,
    method: Method,
    span: tracing::Span,
    started: Instant,
}

impl Upload for ProxyUpload {
    fn add_chunk(&mut self, data: Bytes) -> Result<(), Response> {
        self.sender.send_blocking(data);
        Ok(())
    }

    fn finish(self: Box<Self>) -> Response {
        let ProxyUpload {
            state,
            sender,
            in_flight,
            server,
            method,
            span,
            started,
        } = *self;
        let sent = sender.finish();
        let finish_span = span.clone();
        let answer = state.on_worker(move |state| {
            state
                .runtime
                .block_on(in_flight.finish().instrument(finish_span))
        });
        let _entered = span.enter();
        record_proxied(&state, &server, method, &answer, sent, started);
        to_response(answer)
    }
}

fn record_proxied(
    state: &State,
    server: &str,
    method: Method,
    answer: &ProxyResponse,
    sent: u64,
    started: Instant,
) {
    proxy::request::record(
        state.engine.metrics(),
        server,
        method.as_str(),
        answer,
        sent,
        started,
    );
}

/// Which server and which upstream request a proxy URL means.
fn proxy_target(
    state: &State,
    request: &Request,
    correlation_id: &str,
) -> Result<(String, ForwardRequest), Response> {
    let (Some(server), Some(rest)) = (request.groups.first(), request.groups.get(1)) else {
        return Err(not_found("no such route"));
    };
    let config = state
        .config
        .server(server)
        .ok_or_else(|| not_found(&format!("unknown DICOMweb OAuth server '{server}'")))?;
    let method = match request.method {
        Method::Get => UpstreamMethod::GET,
        Method::Post => UpstreamMethod::POST,
        Method::Put => UpstreamMethod::PUT,
        Method::Delete => UpstreamMethod::DELETE,
    };
    let forward = proxy::request::forward_request(
        config,
        method,
        rest,
        &request.query,
        &request.headers,
        correlation_id,
    )
    .map_err(|e| plain_error(400, "bad_request", e.message()))?;
    Ok((server.clone(), forward))
}

fn proxy_buffered(
    state: &State,
    request: &Request,
    correlation_id: &str,
    span: &tracing::Span,
) -> Response {
    let started = Instant::now();
    let (server, forward) = match proxy_target(state, request, correlation_id) {
        Ok(t) => t,
        Err(response) => return response,
    };
    let (Some(manager), Some(http)) = (
        state.engine.manager(&server),
        state.engine.http_client(&server),
    ) else {
        return not_found("unknown server");
    };
    let sent = request.body.len() as u64;
    let body = (!request.body.is_empty()).then(|| Bytes::copy_from_slice(&request.body));
    let answer = state
        .runtime
        .block_on(proxy::forward_buffered(http, manager, &forward, body).instrument(span.clone()));
    record_proxied(state, &server, request.method, &answer, sent, started);
    to_response(answer)
}

fn to_response(answer: ProxyResponse) -> Response {
    let answer = answer.for_caller();
    Response {
        status: answer.status,
        content_type: answer.content_type.unwrap_or_default(),
        headers: answer.headers,
        body: answer.body,
    }
}

/// Orthanc's incoming HTTP filter: notes the client address for the rate
/// limit, and admits to the proxy route only `ProxyAllowedClients`.
pub fn allow(_method: Method, uri: &str, ip: &str) -> bool {
    CLIENT_IP.set(ip.trim().parse().ok());
    if !uri.starts_with(PROXY_PREFIX) {
        return true;
    }
    match state() {
        Some(state) => {
            let allowed = state.config.proxy_allowed(ip);
            if !allowed {
                tracing::warn!(
                    event = "auth_failure",
                    client = ip,
                    "proxy route refused: client not in ProxyAllowedClients"
                );
            }
            allowed
        }
        None => true,
    }
}

/// The management API (SPEC 3.3).
fn api_route(state: &State, request: &Request) -> Response {
    let path = request.url.trim_end_matches('/');
    let get = request.method == Method::Get;
    match path {
        "/dicomweb-oauth/status" if get => from_api(api::status(&state.config, &state.engine)),
        "/dicomweb-oauth/servers" if get => from_api(api::servers(&state.config, &state.engine)),
        "/dicomweb-oauth/metrics" if get => Response {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8".into(),
            headers: Vec::new(),
            body: Bytes::from(state.engine.encode_metrics()),
        },
        "/dicomweb-oauth/ui" if get => Response {
            status: 200,
            content_type: "text/html; charset=utf-8".into(),
            headers: vec![
                ("Cache-Control".into(), "no-store".into()),
                (
                    "Content-Security-Policy".into(),
                    "default-src 'self'; script-src 'unsafe-inline' 'self'; style-src 'unsafe-inline' 'self'; img-src 'self' data:".into(),
                ),
            ],
            body: Bytes::from_static(STATUS_PAGE.as_bytes()),
        },
        "/dicomweb-oauth/status" | "/dicomweb-oauth/servers" | "/dicomweb-oauth/metrics" | "/dicomweb-oauth/ui" => {
            method_not_allowed("GET")
        }
        _ => {
            let Some(server) = request.groups.first() else {
                return not_found("no such route");
            };
            if path.ends_with("/test") {
                if request.method != Method::Post {
                    return method_not_allowed("POST");
                }
                // Orthanc passes query arguments to plugins for GET only, so
                // `?force=true` is read when Orthanc gives it, and `{"force": true}`
                // in the body always works.
                let force = request.query_value("force") == Some("true")
                    || serde_json::from_slice::<Value>(&request.body)
                        .is_ok_and(|b| b["force"] == json!(true));
                from_api(state.runtime.block_on(api::test_server(&state.engine, server, force)))
            } else if request.method == Method::Delete {
                from_api(api::drop_token(&state.engine, server))
            } else {
                method_not_allowed("DELETE")
            }
        }
    }
}
