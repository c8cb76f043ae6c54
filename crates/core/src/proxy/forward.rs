//! Forwarding one request upstream with the server's credentials.

use super::headers::PASSED_RESPONSE_HEADERS;
use crate::credentials::aws::{sign_request, PayloadHash};
use crate::error::{error_body, Error, ErrorCode};
use crate::http_client::transport_error;
use crate::secret::Secret;
use crate::token::TokenManager;
pub use bytes::Bytes;
pub use reqwest::Method;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use url::Url;

/// Chunks queued between Orthanc's thread and the upstream connection. The
/// plugin lends Orthanc's own buffer and waits until it has been written (see
/// [`BodySender::send_blocking`]), so one chunk per upload is in flight at most.
pub const LENT_CHUNKS: usize = 1;
/// Frames queued between the loopback listener and the upstream connection:
/// enough for hyper to gather several into one `writev` (the DICOMweb
/// plugin's 64 KiB chunks arrive as frames of that size at most).
pub const OWNED_FRAMES: usize = 4;
/// Bodies Orthanc hands over whole, up to this size, are kept for a replay
/// after a 401; larger or streamed ones are not replayable (the remote's 401 is
/// returned as AUTH-001). Small on purpose: every concurrent upload may hold
/// this much, and with tokens refreshed ahead of expiry a 401 in the middle
/// of a send is rare.
pub const REPLAY_LIMIT: usize = 4 << 20;
/// Streamed bodies (the listener's, chunked or not) are kept for a replay up to
/// this size: as much as Orthanc's route can replay of a chunked body, so that
/// each upload holds at most this much besides what is in flight.
pub const STREAMED_REPLAY_LIMIT: usize = 1 << 20;
/// The block in which Orthanc streams a chunked request body to a plugin
/// (Orthanc's HTTP server reads into a 1 MiB buffer and hands it over full).
/// A full block means more is coming: the body is too large to replay.
const ORTHANC_BLOCK: usize = 1 << 20;

/// A request to send upstream (URL already checked, headers already filtered).
#[derive(Debug, Clone)]
pub struct ForwardRequest {
    pub method: reqwest::Method,
    pub url: Url,
    pub headers: Vec<(String, String)>,
    /// `Some` for AWS: the request is signed (SigV4) instead of carrying a bearer token.
    pub signing: Option<SigV4>,
}

/// Where SigV4 signatures are scoped.
#[derive(Debug, Clone)]
pub struct SigV4 {
    pub region: String,
    pub service: String,
}

/// An answer to hand back to the caller.
#[derive(Debug, Clone)]
pub struct ProxyResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Bytes received from upstream (for metrics).
    pub upstream_bytes: u64,
}

impl ProxyResponse {
    /// A JSON error answer (SPEC 3.2 body).
    pub fn error(code: ErrorCode, status: u16, message: &str, details: serde_json::Value) -> Self {
        let body = serde_json::to_vec_pretty(&error_body(code, message, details, status))
            .unwrap_or_default();
        ProxyResponse {
            status,
            content_type: Some("application/json".into()),
            headers: Vec::new(),
            body: Bytes::from(body),
            upstream_bytes: 0,
        }
    }

    /// The answer when no token could be had: 503 with the token error's code
    /// (nothing was sent upstream).
    pub fn token_error(error: &Error) -> Self {
        ProxyResponse::error(
            error.code(),
            503,
            &error.to_string(),
            serde_json::Value::Null,
        )
    }

    /// The answer for an error that stopped the request before or while sending it.
    pub fn from_error(error: &Error) -> Self {
        let code = error.code();
        let status = match code {
            ErrorCode::Net001 => 504,
            ErrorCode::Net002 | ErrorCode::Net003 => 502,
            other => other.http_status(),
        };
        ProxyResponse::error(code, status, &error.to_string(), serde_json::Value::Null)
    }
}

/// Whether a chunk is Orthanc's lent buffer (a replay must copy it) or owned.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lent {
    Yes,
    No,
}

#[derive(Default)]
struct ReplayCopy {
    chunks: Vec<Bytes>,
    size: usize,
    overflowed: bool,
    complete: bool,
}

/// The Orthanc side of a streamed request body.
pub struct BodySender {
    tx: Option<mpsc::Sender<Result<Bytes, std::io::Error>>>,
    replay: Arc<Mutex<ReplayCopy>>,
    sent: u64,
}

/// The upstream side of a streamed request body.
pub struct BodyStream {
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
    replay: Arc<Mutex<ReplayCopy>>,
}

/// A bounded pipe (`capacity` chunks) from the caller's body to the upstream request.
pub fn body_pipe(capacity: usize) -> (BodySender, BodyStream) {
    let (tx, rx) = mpsc::channel(capacity);
    let replay = Arc::new(Mutex::new(ReplayCopy::default()));
    (
        BodySender {
            tx: Some(tx),
            replay: Arc::clone(&replay),
            sent: 0,
        },
        BodyStream { rx, replay },
    )
}

impl BodySender {
    /// Hands one chunk to the upstream request, waiting while the pipe is
    /// full. Call from a thread outside the runtime (Orthanc's HTTP thread).
    ///
    /// The sender keeps no reference to `chunk` once the upstream connection has
    /// written it (or dropped it): the plugin lends Orthanc's buffer without a
    /// copy and waits for exactly that. A replay keeps its own copy, and only of
    /// a body that can still be replayed.
    pub fn send_blocking(&mut self, chunk: Bytes) {
        self.note_chunk(&chunk, Lent::Yes);
        if let Some(tx) = &self.tx {
            if tx.blocking_send(Ok(chunk)).is_err() {
                // The upstream request ended early (e.g. a 401 before reading the body).
                self.tx = None;
            }
        }
    }

    /// Hands one chunk the caller owns (the loopback listener's) to the
    /// upstream request, waiting while the pipe is full. A replay keeps a
    /// shared reference, not a copy.
    pub async fn send(&mut self, chunk: Bytes) {
        self.note_chunk(&chunk, Lent::No);
        if let Some(tx) = &self.tx {
            if tx.send(Ok(chunk)).await.is_err() {
                self.tx = None;
            }
        }
    }

    /// Body bytes handed over so far.
    pub fn bytes_sent(&self) -> u64 {
        self.sent
    }

    fn note_chunk(&mut self, chunk: &Bytes, lent: Lent) {
        self.sent += chunk.len() as u64;
        let mut replay = self.replay.lock().unwrap_or_else(|p| p.into_inner());
        if replay.overflowed {
            return;
        }
        // A full Orthanc block means more is coming: too large to replay.
        let (more_coming, limit) = match lent {
            Lent::Yes => (chunk.len() == ORTHANC_BLOCK, REPLAY_LIMIT),
            Lent::No => (false, STREAMED_REPLAY_LIMIT),
        };
        if !more_coming && replay.size + chunk.len() <= limit {
            replay.size += chunk.len();
            replay.chunks.push(match lent {
                Lent::Yes => Bytes::copy_from_slice(chunk),
                Lent::No => chunk.clone(),
            });
        } else {
            replay.overflowed = true;
            replay.chunks = Vec::new();
        }
    }

    /// The body is complete: ends the upstream stream.
    pub fn finish(mut self) -> u64 {
        // Complete first: the stream reads the flag when it sees the sender go.
        self.replay
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .complete = true;
        self.tx = None;
        self.sent
    }
}

impl BodyStream {
    fn is_complete(&self) -> bool {
        self.replay
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .complete
    }

    /// The whole body again, if it was small enough and fully received.
    pub fn replayable(&self) -> Option<Bytes> {
        let replay = self.replay.lock().unwrap_or_else(|p| p.into_inner());
        if replay.overflowed || !replay.complete {
            return None;
        }
        let mut all = Vec::with_capacity(replay.size);
        for chunk in &replay.chunks {
            all.extend_from_slice(chunk);
        }
        Some(Bytes::from(all))
    }
}

/// The body of one attempt.
pub enum AttemptBody {
    Bytes(Bytes),
    Stream(BodyStream),
}

fn into_reqwest_body(body: AttemptBody) -> reqwest::Body {
    match body {
        AttemptBody::Bytes(b) => reqwest::Body::from(b),
        AttemptBody::Stream(stream) => {
            let stream = futures::stream::unfold(Some(stream), |state| async move {
                let mut stream = state?;
                match stream.rx.recv().await {
                    Some(item) => Some((item, Some(stream))),
                    // Every sender is gone. Unless the body was finished, the caller
                    // went away mid-upload: fail the upstream request rather than
                    // end it cleanly with a truncated body.
                    None if stream.is_complete() => None,
                    None => Some((
                        Err(std::io::Error::other(
                            "the caller's request body ended before it was complete",
                        )),
                        None,
                    )),
                }
            });
            reqwest::Body::wrap_stream(stream)
        }
    }
}

/// Sends one attempt with `token` and reads the whole answer (held once).
pub async fn send_once(
    http: &reqwest::Client,
    request: &ForwardRequest,
    token: &Secret,
    body: Option<AttemptBody>,
) -> Result<ProxyResponse, Error> {
    let mut builder = http.request(request.method.clone(), request.url.clone());
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    match &request.signing {
        None => builder = builder.bearer_auth(token.expose()),
        Some(signing) => {
            let credentials = crate::credentials::aws_credentials_from_secret(token)?;
            // Buffered bodies are hashed in place; a streamed body cannot be hashed
            // before it is sent, so its payload is declared unsigned.
            let payload = match &body {
                Some(AttemptBody::Bytes(bytes)) => PayloadHash::Bytes(bytes),
                Some(AttemptBody::Stream(_)) => PayloadHash::Unsigned,
                None => PayloadHash::Bytes(&[]),
            };
            let signed = sign_request(
                request.method.as_str(),
                &request.url,
                &request.headers,
                payload,
                &credentials,
                &signing.region,
                &signing.service,
                std::time::SystemTime::now(),
            )?;
            for (name, value) in signed {
                builder = builder.header(name, value);
            }
        }
    }
    if let Some(body) = body {
        builder = builder.body(into_reqwest_body(body));
    }
    let response = builder
        .send()
        .await
        .map_err(|e| transport_error("remote DICOMweb server", &e))?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let headers = response
        .headers()
        .iter()
        .filter(|(name, _)| PASSED_RESPONSE_HEADERS.contains(&name.as_str()))
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    let body = response
        .bytes()
        .await
        .map_err(|e| transport_error("remote DICOMweb server (reading the answer)", &e))?;
    Ok(ProxyResponse {
        status,
        content_type,
        headers,
        upstream_bytes: body.len() as u64,
        body,
    })
}

/// After a first attempt: on a 401, drop the token, fetch a new one and
/// resend once if the body can be replayed; a second 401 (or a body that
/// cannot be replayed) becomes an AUTH-001 answer.
pub async fn complete(
    http: &reqwest::Client,
    manager: &Arc<TokenManager>,
    request: &ForwardRequest,
    first: Result<ProxyResponse, Error>,
    replay: impl FnOnce() -> Option<Option<Bytes>>,
) -> ProxyResponse {
    let first = match first {
        Ok(r) => r,
        Err(e) => return ProxyResponse::from_error(&e),
    };
    if first.status != 401 {
        return first;
    }
    manager.invalidate();
    tracing::info!(server = %manager.server(), "remote answered 401: token dropped, fetching a new one");
    let Some(body) = replay() else {
        return unauthorized(
            &first,
            "the request body was too large to be replayed after the remote's 401",
        );
    };
    let token = match manager.token().await {
        Ok((token, _)) => token,
        Err(e) => return ProxyResponse::token_error(&e),
    };
    match send_once(http, request, &token.value, body.map(AttemptBody::Bytes)).await {
        Ok(second) if second.status == 401 => {
            unauthorized(&second, "the remote refused a freshly obtained token")
        }
        Ok(second) => second,
        Err(e) => ProxyResponse::from_error(&e),
    }
}

fn unauthorized(remote: &ProxyResponse, message: &str) -> ProxyResponse {
    let remote_says =
        String::from_utf8_lossy(&remote.body[..remote.body.len().min(300)]).into_owned();
    ProxyResponse::error(
        ErrorCode::Auth001,
        401,
        message,
        serde_json::json!({ "remote_status": remote.status, "remote_body": remote_says }),
    )
}

/// A whole request with a buffered body (GET, DELETE, small bodies): token,
/// attempt, 401 retry.
pub async fn forward_buffered(
    http: &reqwest::Client,
    manager: &Arc<TokenManager>,
    request: &ForwardRequest,
    body: Option<Bytes>,
) -> ProxyResponse {
    let token = match manager.token().await {
        Ok((token, _)) => token,
        Err(e) => return ProxyResponse::token_error(&e),
    };
    let first = send_once(
        http,
        request,
        &token.value,
        body.clone().map(AttemptBody::Bytes),
    )
    .await;
    complete(http, manager, request, first, || Some(body)).await
}

/// A streamed request in flight: its first attempt runs while Orthanc
/// feeds the body; [`StreamedRequest::finish`] is called once the body is complete.
pub struct StreamedRequest {
    http: reqwest::Client,
    manager: Arc<TokenManager>,
    request: ForwardRequest,
    first: tokio::task::JoinHandle<Result<ProxyResponse, Error>>,
    replay: Arc<Mutex<ReplayCopy>>,
}

impl StreamedRequest {
    /// Starts sending upstream with `token`; the body comes through `stream`.
    pub fn start(
        runtime: &tokio::runtime::Handle,
        http: reqwest::Client,
        manager: Arc<TokenManager>,
        request: ForwardRequest,
        token: Arc<crate::token::CachedToken>,
        stream: BodyStream,
    ) -> Self {
        let replay = Arc::clone(&stream.replay);
        let (task_http, task_request) = (http.clone(), request.clone());
        let first = runtime.spawn(async move {
            send_once(
                &task_http,
                &task_request,
                &token.value,
                Some(AttemptBody::Stream(stream)),
            )
            .await
        });
        StreamedRequest {
            http,
            manager,
            request,
            first,
            replay,
        }
    }

    /// Waits for the answer (the body sender must have finished), retrying once after a 401.
    pub async fn finish(self) -> ProxyResponse {
        let first = self.first.await.unwrap_or_else(|_| {
            Err(Error::coded(
                ErrorCode::Int001,
                "the upstream request task was cancelled",
            ))
        });
        let view = BodyStream {
            rx: mpsc::channel(1).1,
            replay: self.replay,
        };
        complete(&self.http, &self.manager, &self.request, first, || {
            view.replayable().map(Some)
        })
        .await
    }
}
