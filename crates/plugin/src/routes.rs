//! Adapts Orthanc's REST callbacks to the core: the DICOMweb proxy and the
//! management API. Orthanc's HTTP threads are synchronous; they enter the
//! plugin's async runtime here, and only here: each callback hops to a
//! runtime blocking thread (`State::on_worker`) and waits there (`block_on`).

use crate::http::{Method, Request, Response, Upload};
use crate::plugin::{state, State};
use dicomweb_oauth_core::error::error_body;
use dicomweb_oauth_core::proxy::forward::{Bytes, Method as UpstreamMethod};
use dicomweb_oauth_core::proxy::{self, BodySender, ForwardRequest, StreamedRequest};
use dicomweb_oauth_core::token::TokenOrigin;
use dicomweb_oauth_core::{ErrorCode, PLUGIN_VERSION};
use serde_json::{json, Value};
use std::sync::Arc;

/// The proxy route: server name, then the DICOMweb path below it.
pub const PROXY_ROUTE: &str = "/oauth-dicom-web/servers/([^/]+)/(.*)";
/// Management API routes.
pub const API_ROUTES: &[&str] = &[
    "/dicomweb-oauth/status",
    "/dicomweb-oauth/servers",
    "/dicomweb-oauth/servers/([^/]+)/test",
    "/dicomweb-oauth/servers/([^/]+)/token",
];
const PROXY_PREFIX: &str = "/oauth-dicom-web/";

/// A JSON error answer (SPEC 3.2 body).
pub fn error_response(code: ErrorCode, message: &str) -> Response {
    error_with_status(code, code.http_status(), message)
}

fn error_with_status(code: ErrorCode, status: u16, message: &str) -> Response {
    Response::json(status, &error_body(code, message, Value::Null, status))
}

fn not_found(message: &str) -> Response {
    Response::json(
        404,
        &json!({"error": "not_found", "message": message, "http_status": 404}),
    )
}

fn bad_request(message: &str) -> Response {
    Response::json(
        400,
        &json!({"error": "bad_request", "message": message, "http_status": 400}),
    )
}

fn method_not_allowed(allowed: &str) -> Response {
    Response::json(
        405,
        &json!({"error": "method_not_allowed", "message": format!("use {allowed}"), "http_status": 405}),
    )
    .with_header("Allow", allowed)
}

fn unavailable() -> Response {
    Response::json(
        503,
        &json!({"error": "not_configured", "message": "the plugin has no DicomWebOAuth section and is idle", "http_status": 503}),
    )
}

/// Whole-body requests: proxy GET/DELETE and the management API.
pub fn handle(request: &Request) -> Response {
    let Some(state) = state() else {
        return unavailable();
    };
    let request = request.clone();
    state.on_worker(move |state| {
        if request.url.starts_with(PROXY_PREFIX) {
            proxy_buffered(state, &request)
        } else {
            api(state, &request)
        }
    })
}

/// Streamed requests (POST/PUT on the proxy route).
pub fn start_upload(request: &Request) -> Result<Box<dyn Upload>, Response> {
    let state = state().ok_or_else(unavailable)?;
    let request = request.clone();
    state.on_worker(move |state| start_upload_on_worker(state, &request))
}

fn start_upload_on_worker(
    state: &Arc<State>,
    request: &Request,
) -> Result<Box<dyn Upload>, Response> {
    let state = Arc::clone(state);
    let (server, forward) = proxy_target(&state, request)?;
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
    let token = {
        let manager = Arc::clone(&manager);
        state.runtime.block_on(manager.token())
    }
    .map(|(token, _)| token)
    .map_err(|e| to_response(proxy::ProxyResponse::token_error(&e)))?;
    let (sender, stream) = proxy::body_pipe();
    let in_flight = StreamedRequest::start(
        state.runtime.handle(),
        http,
        manager,
        forward,
        token,
        stream,
    );
    Ok(Box::new(ProxyUpload {
        state,
        sender,
        in_flight,
    }))
}

struct ProxyUpload {
    state: Arc<State>,
    sender: BodySender,
    in_flight: StreamedRequest,
}

impl Upload for ProxyUpload {
    fn add_chunk(&mut self, data: &[u8]) -> Result<(), Response> {
        self.sender.send_blocking(data);
        Ok(())
    }

    fn finish(self: Box<Self>) -> Response {
        let ProxyUpload {
            state,
            sender,
            in_flight,
        } = *self;
        let sent = sender.finish();
        let answer = state.on_worker(move |state| state.runtime.block_on(in_flight.finish()));
        tracing::debug!(
            method = "POST/PUT",
            bytes_sent = sent,
            status = answer.status,
            "proxied (streamed)"
        );
        to_response(answer)
    }
}

/// Which server and which upstream request a proxy URL means.
fn proxy_target(state: &State, request: &Request) -> Result<(String, ForwardRequest), Response> {
    let (Some(server), Some(rest)) = (request.groups.first(), request.groups.get(1)) else {
        return Err(not_found("no such route"));
    };
    let config = state
        .config
        .server(server)
        .ok_or_else(|| not_found(&format!("unknown DICOMweb OAuth server '{server}'")))?;
    let url = proxy::upstream_url(&config.url, rest, &request.query)
        .map_err(|e| bad_request(e.message()))?;
    let method = match request.method {
        Method::Get => UpstreamMethod::GET,
        Method::Post => UpstreamMethod::POST,
        Method::Put => UpstreamMethod::PUT,
        Method::Delete => UpstreamMethod::DELETE,
    };
    let headers = proxy::headers::forwardable(&request.headers)
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Ok((
        server.clone(),
        ForwardRequest {
            method,
            url,
            headers,
        },
    ))
}

fn proxy_buffered(state: &State, request: &Request) -> Response {
    let (server, forward) = match proxy_target(state, request) {
        Ok(t) => t,
        Err(response) => return response,
    };
    let (Some(manager), Some(http)) = (
        state.engine.manager(&server),
        state.engine.http_client(&server),
    ) else {
        return not_found("unknown server");
    };
    let body = (!request.body.is_empty()).then(|| bytes_of(&request.body));
    let answer = state
        .runtime
        .block_on(proxy::forward_buffered(http, manager, &forward, body));
    tracing::debug!(server = %server, method = request.method.as_str(), status = answer.status, "proxied");
    to_response(answer)
}

fn bytes_of(body: &[u8]) -> Bytes {
    Bytes::copy_from_slice(body)
}

fn to_response(answer: proxy::ProxyResponse) -> Response {
    if answer.status == 301 {
        // Orthanc cannot pass a 301 through a plugin, and following it would
        // send the caller to the remote without credentials.
        return error_with_status(
            ErrorCode::Net002,
            502,
            "the remote DICOMweb server answered a permanent redirect (301): check the server's Url",
        );
    }
    Response {
        status: answer.status,
        content_type: answer.content_type.unwrap_or_default(),
        headers: answer.headers,
        body: answer.body.to_vec(),
    }
}

/// Orthanc's incoming HTTP filter: the proxy route only for allowed clients.
pub fn allow(_method: Method, uri: &str, ip: &str) -> bool {
    if !uri.starts_with(PROXY_PREFIX) {
        return true;
    }
    match state() {
        Some(state) => state.config.proxy_allowed(ip),
        None => true,
    }
}

// ---------------------------------------------------------------------------
// Management API (SPEC 3.3)
// ---------------------------------------------------------------------------

fn envelope(data: Value) -> Value {
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    json!({
        "plugin_version": PLUGIN_VERSION,
        "api_version": "2.0",
        "timestamp": timestamp,
        "data": data,
    })
}

fn api(state: &State, request: &Request) -> Response {
    let path = request.url.trim_end_matches('/');
    match (request.method, path) {
        (Method::Get, "/dicomweb-oauth/status") => Response::json(200, &envelope(status(state))),
        (_, "/dicomweb-oauth/status") => method_not_allowed("GET"),
        (Method::Get, "/dicomweb-oauth/servers") => Response::json(200, &envelope(servers(state))),
        (_, "/dicomweb-oauth/servers") => method_not_allowed("GET"),
        _ => {
            let Some(server) = request.groups.first() else {
                return not_found("no such route");
            };
            let Some(manager) = state.engine.manager(server) else {
                return not_found(&format!("unknown DICOMweb OAuth server '{server}'"));
            };
            if path.ends_with("/test") {
                if request.method != Method::Post {
                    return method_not_allowed("POST");
                }
                if request.query_value("force") == Some("true") {
                    manager.invalidate();
                }
                let started = std::time::Instant::now();
                let task_manager = Arc::clone(manager);
                match state.runtime.block_on(task_manager.token()) {
                    Ok((token, origin)) => Response::json(
                        200,
                        &envelope(json!({
                            "server": server,
                            "success": true,
                            "source": match origin { TokenOrigin::Cache => "cache", TokenOrigin::Provider => "provider" },
                            "expires_in": token.expires_in().as_secs(),
                            "duration_ms": started.elapsed().as_millis() as u64,
                        })),
                    ),
                    Err(e) => {
                        let status = e.code().http_status();
                        Response::json(
                            status,
                            &error_body(
                                e.code(),
                                &e.to_string(),
                                json!({"server": server}),
                                status,
                            ),
                        )
                    }
                }
            } else if request.method == Method::Delete {
                manager.invalidate();
                Response::json(
                    200,
                    &envelope(json!({"server": server, "token_cached": false})),
                )
            } else {
                method_not_allowed("DELETE")
            }
        }
    }
}

fn server_json(state: &State, name: &str) -> Value {
    let config = state
        .config
        .server(name)
        .expect("managers mirror the configuration");
    let manager = state
        .engine
        .manager(name)
        .expect("every server has a manager");
    let token = manager.peek().filter(|t| t.expires_in().as_secs() > 0);
    json!({
        "name": name,
        "url": redacted_url(&config.url),
        "token_endpoint": config.token_endpoint.as_ref().map(redacted_url),
        "issuer": config.issuer.as_ref().map(redacted_url),
        "provider_type": config.provider.as_str(),
        "has_cached_token": token.is_some(),
        "token_expires_at": token.as_ref().map(|t| t.expires_at_unix),
        "token_expires_in": token.as_ref().map(|t| t.expires_in().as_secs()),
        "circuit_breaker_state": manager.circuit_state().as_str(),
        "last_error": manager.last_error().map(|e| json!({"error_code": e.code().as_str(), "message": e.to_string()})),
    })
}

/// URLs from the configuration without any user:password part.
fn redacted_url(url: &url::Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string()
}

fn servers(state: &State) -> Value {
    let list: Vec<Value> = state
        .config
        .servers
        .iter()
        .map(|s| server_json(state, &s.name))
        .collect();
    json!({"servers": list, "count": list.len()})
}

fn status(state: &State) -> Value {
    let servers: Vec<Value> = state
        .config
        .servers
        .iter()
        .map(|s| server_json(state, &s.name))
        .collect();
    let healthy = state
        .engine
        .managers()
        .iter()
        .all(|m| m.last_error().is_none());
    json!({
        "status": if healthy { "healthy" } else { "degraded" },
        "servers_configured": servers.len(),
        "servers": servers,
    })
}
