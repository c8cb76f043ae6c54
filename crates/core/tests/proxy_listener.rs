//! The proxy's loopback listener (ADR 0012), driven over raw TCP so that each
//! test controls exactly the bytes the caller sends (undecoded paths, broken
//! chunked bodies). The upstream and the token endpoint are `FaultServer`s.

mod common;

use dicomweb_oauth_core::config::Config;
use dicomweb_oauth_core::proxy::forward::STREAMED_REPLAY_LIMIT;
use dicomweb_oauth_core::proxy::listener::{
    LoopbackEndpoint, ProxyHost, ProxyListener, KEY_HEADER,
};
use dicomweb_oauth_core::rate_limit::RateLimiter;
use dicomweb_oauth_core::token::Engine;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;
use testkit::{Fault, FaultServer};

const SECRET: &str = "listener-client-secret-7d21";

struct Host {
    config: Config,
    engine: Engine,
    limiter: Option<RateLimiter>,
}

impl ProxyHost for Host {
    fn config(&self) -> &Config {
        &self.config
    }
    fn engine(&self) -> &Engine {
        &self.engine
    }
    fn proxy_limiter(&self) -> Option<&RateLimiter> {
        self.limiter.as_ref()
    }
}

struct Setup {
    host: Arc<Host>,
    endpoint: LoopbackEndpoint,
    upstream: FaultServer,
    idp: FaultServer,
}

fn token_answer(token: &str) -> Fault {
    Fault::json(
        200,
        json!({"access_token": token, "token_type": "Bearer", "expires_in": 300}),
    )
}

/// A listener for server "s" at `upstream`'s `/dicom-web`, tokens from `idp`.
fn start(upstream: FaultServer, idp: FaultServer, section: Value) -> Setup {
    let server = json!({
        "Url": upstream.url("/dicom-web"), "TokenEndpoint": idp.url("/token"),
        "ClientId": "listener", "ClientSecret": SECRET,
        "ResilienceConfig": common::fast_resilience(1),
    });
    let config = common::config_with(server, json!({ "DicomWebOAuth": section }));
    common::capture_logs();
    let engine = Engine::new(&config, tokio::runtime::Handle::current()).unwrap();
    let limiter = RateLimiter::new(config.proxy_rate_limit_requests, config.rate_limit_window);
    let host = Arc::new(Host {
        config,
        engine,
        limiter,
    });
    let listener = ProxyListener::bind().unwrap();
    let endpoint = listener.endpoint().clone();
    listener.serve(&tokio::runtime::Handle::current(), Arc::downgrade(&host));
    Setup {
        host,
        endpoint,
        upstream,
        idp,
    }
}

fn default_setup() -> Setup {
    start(
        FaultServer::start(vec![Fault::text(200, "application/dicom+json", "[]")]),
        FaultServer::start(vec![token_answer("AT-listener-1")]),
        json!({}),
    )
}

struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// Sends `head` (request line and headers, without the blank line), then `body`
/// pieces, over one connection closed after the answer.
fn exchange(port: u16, head: &str, body: &[&[u8]]) -> Answer {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .write_all(format!("{head}\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    for piece in body {
        stream.write_all(piece).unwrap();
    }
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

async fn send(port: u16, head: String, body: Vec<Vec<u8>>) -> Answer {
    tokio::task::spawn_blocking(move || {
        let pieces: Vec<&[u8]> = body.iter().map(Vec::as_slice).collect();
        exchange(port, &head, &pieces)
    })
    .await
    .unwrap()
}

fn key_line(s: &Setup) -> String {
    format!("{KEY_HEADER}: {}", s.endpoint.key.expose())
}

fn chunked(data: &[u8], chunk: usize) -> Vec<Vec<u8>> {
    let mut pieces: Vec<Vec<u8>> = data
        .chunks(chunk)
        .map(|c| {
            let mut piece = format!("{:x}\r\n", c.len()).into_bytes();
            piece.extend_from_slice(c);
            piece.extend_from_slice(b"\r\n");
            piece
        })
        .collect();
    pieces.push(b"0\r\n\r\n".to_vec());
    pieces
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_the_key_are_refused_and_reach_nobody() {
    let s = default_setup();
    let port = s.endpoint.port;
    let none = send(
        port,
        "GET /oauth-dicom-web/servers/s/studies HTTP/1.1".into(),
        vec![],
    )
    .await;
    assert_eq!(none.status, 403, "{}", none.body);
    assert!(none.body.contains("\"forbidden\""), "{}", none.body);
    let wrong = format!(
        "GET /oauth-dicom-web/servers/s/studies HTTP/1.1\r\n{KEY_HEADER}: 00{}",
        &s.endpoint.key.expose()[2..]
    );
    assert_eq!(send(port, wrong, vec![]).await.status, 403);
    assert_eq!(s.upstream.request_count(), 0);
    assert_eq!(
        s.idp.request_count(),
        0,
        "no token is fetched for a refused request"
    );
    assert!(common::logs().contains("proxy listener refused a request without the proxy key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_goes_upstream_with_the_token_and_without_the_key() {
    let s = default_setup();
    let head = format!(
        "GET /oauth-dicom-web/servers/s/studies?PatientID=P%201&limit=2 HTTP/1.1\r\n{}\r\nAccept: application/dicom+json\r\nAuthorization: Basic b3J0aGFuYzpvcnRoYW5j\r\nCookie: session=1\r\nX-Request-ID: corr-listener-1",
        key_line(&s)
    );
    let answer = send(s.endpoint.port, head, vec![]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer
            .head
            .to_ascii_lowercase()
            .contains("content-type: application/dicom+json"),
        "{}",
        answer.head
    );
    assert_eq!(answer.body, "[]");
    let seen = &s.upstream.requests()[0];
    assert_eq!(seen.path, "/dicom-web/studies?PatientID=P%201&limit=2");
    assert_eq!(seen.header("authorization"), Some("Bearer AT-listener-1"));
    assert_eq!(seen.header("accept"), Some("application/dicom+json"));
    assert_eq!(seen.header("x-request-id"), Some("corr-listener-1"));
    assert_eq!(
        seen.header(KEY_HEADER),
        None,
        "the key stays on this machine"
    );
    assert_eq!(seen.header("cookie"), None);
    let logs = common::logs();
    testkit::assert_no_secrets(
        "the core's log",
        &logs,
        &[s.endpoint.key.expose(), "AT-listener-1", SECRET],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_slashes_nul_bytes_and_dot_segments_are_refused_with_400() {
    let s = default_setup();
    for path in [
        "/oauth-dicom-web/servers/s/studies%2F..%2Fadmin",
        "/oauth-dicom-web/servers/s/studies%2fx",
        "/oauth-dicom-web/servers/s/studies/%00x",
        "/oauth-dicom-web/servers/s/studies/../../admin",
        "/oauth-dicom-web/servers/s/%2e%2e/admin",
        "/oauth-dicom-web/servers/s/studies/x%5Cy",
        "/oauth-dicom-web/servers/s%2F..%2Fother/studies",
    ] {
        let answer = send(
            s.endpoint.port,
            format!("GET {path} HTTP/1.1\r\n{}", key_line(&s)),
            vec![],
        )
        .await;
        assert_eq!(answer.status, 400, "{path}: {}", answer.body);
        assert!(
            answer.body.contains("bad_request"),
            "{path}: {}",
            answer.body
        );
    }
    let unknown = send(
        s.endpoint.port,
        format!(
            "GET /oauth-dicom-web/servers/nope/studies HTTP/1.1\r\n{}",
            key_line(&s)
        ),
        vec![],
    )
    .await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    assert_eq!(
        s.upstream.request_count(),
        0,
        "nothing refused went upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_upload_streams_through_byte_for_byte() {
    let s = default_setup();
    let data: Vec<u8> = (0..6 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let head = format!(
        "POST /oauth-dicom-web/servers/s/studies HTTP/1.1\r\n{}\r\nContent-Type: multipart/related; type=\"application/dicom\"; boundary=b\r\nTransfer-Encoding: chunked",
        key_line(&s)
    );
    let answer = send(s.endpoint.port, head, chunked(&data, 64 * 1024)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let seen = &s.upstream.requests()[0];
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.body.len(), data.len());
    assert!(seen.body == data, "the body arrived changed");
    assert_eq!(
        seen.header("content-type"),
        Some("multipart/related; type=\"application/dicom\"; boundary=b")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_breaks_off_mid_upload_never_yields_a_complete_request_upstream() {
    let s = default_setup();
    let port = s.endpoint.port;
    let head = format!(
        "POST /oauth-dicom-web/servers/s/studies HTTP/1.1\r\n{}\r\nContent-Type: application/dicom\r\nTransfer-Encoding: chunked\r\nHost: 127.0.0.1\r\n\r\n",
        key_line(&s)
    );
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.write_all(head.as_bytes()).unwrap();
        let mut pieces = chunked(&vec![7u8; 300 * 1024], 64 * 1024);
        pieces.pop(); // no terminating chunk: the caller goes away mid-body
        for piece in pieces {
            stream.write_all(&piece).unwrap();
        }
        stream.shutdown(std::net::Shutdown::Both).unwrap();
    })
    .await
    .unwrap();
    // The listener records the outcome once the upstream attempt has ended.
    let metrics = Arc::clone(s.host.engine.metrics());
    let status = testkit::wait_for(
        "the broken upload to be recorded",
        Duration::from_secs(20),
        || {
            let text = metrics.encode();
            text.lines()
                .find(|l| {
                    l.starts_with("dicomweb_oauth_proxy_requests_total{")
                        && l.contains("method=\"POST\"")
                })
                .map(str::to_owned)
        },
    );
    assert!(status.contains("status=\"502\""), "{status}");
    testkit::wait_for(
        "the remote to see the body break off",
        Duration::from_secs(20),
        || (s.upstream.broken_body_count() == 1).then_some(()),
    );
    assert!(
        s.upstream.requests().iter().all(|r| r.method != "POST"),
        "a truncated body reached the remote as a complete request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_chunked_body_is_replayed_after_a_401() {
    let s = start(
        FaultServer::start(vec![
            Fault::json(401, json!({"error": "invalid_token"})),
            Fault::text(200, "application/dicom+json", "{\"ok\":1}"),
        ]),
        FaultServer::start(vec![token_answer("AT-old"), token_answer("AT-new")]),
        json!({}),
    );
    let data = vec![42u8; 100 * 1024];
    let head = format!(
        "POST /oauth-dicom-web/servers/s/studies HTTP/1.1\r\n{}\r\nContent-Type: application/dicom\r\nTransfer-Encoding: chunked",
        key_line(&s)
    );
    let answer = send(s.endpoint.port, head, chunked(&data, 16 * 1024)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let seen = s.upstream.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].header("authorization"), Some("Bearer AT-new"));
    assert!(seen[1].body == data, "the replayed body differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_replay_limit_is_streamed_once_and_a_401_is_auth_001() {
    let s = start(
        FaultServer::start(vec![Fault::json(401, json!({"error": "invalid_token"}))]),
        FaultServer::start(vec![token_answer("AT-refused")]),
        json!({}),
    );
    let data = vec![5u8; STREAMED_REPLAY_LIMIT + 64 * 1024];
    let head = format!(
        "POST /oauth-dicom-web/servers/s/studies HTTP/1.1\r\n{}\r\nContent-Type: application/dicom\r\nTransfer-Encoding: chunked",
        key_line(&s)
    );
    let answer = send(s.endpoint.port, head, chunked(&data, 64 * 1024)).await;
    assert_eq!(answer.status, 401, "{}", answer.body);
    assert!(answer.body.contains("AUTH-001"), "{}", answer.body);
    assert!(
        answer.body.contains("too large to be replayed"),
        "{}",
        answer.body
    );
    assert_eq!(s.upstream.request_count(), 1, "not sent twice");
    assert!(s.upstream.requests()[0].body == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_rate_limit_answers_429_with_retry_after() {
    let s = start(
        FaultServer::start(vec![Fault::text(200, "application/dicom+json", "[]")]),
        FaultServer::start(vec![token_answer("AT-limited")]),
        json!({"ProxyRateLimitRequests": 1, "RateLimitWindowSeconds": 3600}),
    );
    let head = || {
        format!(
            "GET /oauth-dicom-web/servers/s/studies HTTP/1.1\r\n{}",
            key_line(&s)
        )
    };
    assert_eq!(send(s.endpoint.port, head(), vec![]).await.status, 200);
    let refused = send(s.endpoint.port, head(), vec![]).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert!(
        refused.head.to_ascii_lowercase().contains("retry-after:"),
        "{}",
        refused.head
    );
    assert_eq!(s.upstream.request_count(), 1);
}
