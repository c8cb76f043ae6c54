//! The token engine against a misbehaving token endpoint (testkit's
//! `FaultServer`), a real forward proxy (tinyproxy) and a private CA: error
//! codes, exact request counts, retries and backoff, `Retry-After`, the
//! circuit breaker, the wire format of the token request, token lifetimes,
//! egress settings, and that no secret reaches a log line or an error.

mod common;

use common::{config_with, engine, engine_with, fast_resilience, logs};
use dicomweb_oauth_core::resilience::CircuitState;
use dicomweb_oauth_core::token::{Engine, TokenManager, TokenOrigin};
use dicomweb_oauth_core::{Error, ErrorCode};
use serde_json::{json, Value};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use testkit::{wait_for, Fault, FaultServer, TestCa, Tinyproxy};

// Every secret and token of this file carries a marker, so that the secret
// checks catch any of them, in full or in part, whichever test leaked it.
/// Marker in every client secret and password.
const SECRET_MARK: &str = "S3CRET-faults";
/// Marker in every access token (for JWTs: in the signature part).
const TOKEN_MARK: &str = "AT-faults-";

const SECRET: &str = "S3CRET-faults-generic-5be1";
/// Needs form-urlencoding in HTTP Basic: space, '+' and ':'.
const BASIC_SECRET: &str = "S3CRET-faults basic+with:colon";
/// The same encoded per RFC 6749 §2.3.1, written out by hand.
const BASIC_SECRET_ENCODED: &str = "S3CRET-faults+basic%2Bwith%3Acolon";
const BASIC_CLIENT: &str = "basic client:1";
const BASIC_CLIENT_ENCODED: &str = "basic+client%3A1";
const POST_SECRET: &str = "S3CRET-faults post+with:colon&and=equals %";
const PROXY_PASSWORD: &str = "S3CRET-faults-proxy-pass";

fn basic_credentials_b64() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .encode(format!("{BASIC_CLIENT_ENCODED}:{BASIC_SECRET_ENCODED}"))
}

/// Asserts that the core's logs so far, and `errors` (Display and Debug),
/// hold no secret or token of this file. Every test calls it last, so that
/// together they check every line any of them logged.
fn assert_secret_free(errors: &[&Error]) {
    let basic = basic_credentials_b64();
    let secrets = [
        SECRET_MARK,
        TOKEN_MARK,
        SECRET,
        BASIC_SECRET,
        BASIC_SECRET_ENCODED,
        POST_SECRET,
        PROXY_PASSWORD,
        basic.as_str(),
    ];
    testkit::assert_no_secrets("the core's logs", &logs(), &secrets);
    for error in errors {
        testkit::assert_no_secrets("an error message", &error.to_string(), &secrets);
        testkit::assert_no_secrets("an error (Debug)", &format!("{error:?}"), &secrets);
    }
}

/// A server `s` with client_secret_post credentials.
fn server(endpoint: &str, resilience: Value) -> Value {
    json!({
        "Url": "https://pacs.invalid/dicom-web",
        "TokenEndpoint": endpoint,
        "ClientId": "faults-client",
        "ClientSecret": SECRET,
        "Scope": "dicom.read",
        "ResilienceConfig": resilience,
    })
}

fn token_answer(token: &str) -> Fault {
    Fault::json(
        200,
        json!({"access_token": token, "token_type": "Bearer", "expires_in": 300}),
    )
}

fn manager(engine: &Engine) -> &Arc<TokenManager> {
    engine.manager("s").expect("server s")
}

async fn fetch_error(engine: &Engine) -> Error {
    match manager(engine).token().await {
        Ok(_) => panic!("expected the token request to fail"),
        Err(error) => error,
    }
}

async fn fetch_token(engine: &Engine) -> String {
    let (token, origin) = manager(engine)
        .token()
        .await
        .unwrap_or_else(|e| panic!("expected a token: {e}"));
    assert_eq!(origin, TokenOrigin::Provider);
    token.value.expose().to_owned()
}

/// A loopback port with nothing listening (bound, then released).
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("listener address").port()
}

fn stat(counter: &prometheus_client::metrics::counter::Counter) -> u64 {
    counter.get()
}

/// A temporary directory removed on drop (the core has no tempfile dev-dependency).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "token-engine-faults-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create a temp dir");
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// 1. Provider down.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_down_is_net002_after_backed_off_retries() {
    let port = closed_port();
    let endpoint = format!("http://127.0.0.1:{port}/token");
    // Fixed 0.2 s, jitter ±20 % capped at RetryMaxDelay 0.2: each delay is in [0.16, 0.2].
    let engine = engine(server(
        &endpoint,
        json!({"RetryMaxAttempts": 3, "RetryInitialDelay": 0.2, "RetryMaxDelay": 0.2, "RetryStrategy": "fixed"}),
    ));
    let started = Instant::now();
    let error = fetch_error(&engine).await;
    let elapsed = started.elapsed();
    assert_eq!(error.code(), ErrorCode::Net002, "{error}");
    assert!(
        elapsed >= Duration::from_millis(320),
        "three attempts wait two backoff delays (>= 2 x 0.16 s), took {elapsed:?}"
    );
    assert_eq!(stat(&manager(&engine).stats.retries), 2);
    assert_eq!(stat(&manager(&engine).stats.acquisitions_failed), 1);
    assert!(manager(&engine).cached().is_none());

    // Control: one attempt, no delay (the time above is the retries').
    let single = common::engine(server(
        &endpoint,
        json!({"RetryMaxAttempts": 1, "RetryInitialDelay": 0.2, "RetryMaxDelay": 0.2, "RetryStrategy": "fixed"}),
    ));
    let started = Instant::now();
    let single_error = fetch_error(&single).await;
    assert_eq!(single_error.code(), ErrorCode::Net002, "{single_error}");
    assert!(
        started.elapsed() < Duration::from_millis(150),
        "a refused connection fails at once, took {:?}",
        started.elapsed()
    );
    assert_eq!(stat(&manager(&single).stats.retries), 0);
    assert_secret_free(&[&error, &single_error]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_is_net002_and_retried_each_attempt() {
    let fault = FaultServer::start(vec![Fault::CloseConnection]);
    let engine = engine(server(&fault.url("/token"), fast_resilience(3)));
    let error = fetch_error(&engine).await;
    assert_eq!(error.code(), ErrorCode::Net002, "{error}");
    assert_eq!(fault.request_count(), 3, "one request per attempt");
    assert_eq!(stat(&manager(&engine).stats.retries), 2);
    assert_secret_free(&[&error]);
}

// 2. Slow provider.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_slower_than_timeout_is_net001() {
    let fault = FaultServer::start(vec![Fault::Delay {
        delay: Duration::from_secs(3),
        then: Box::new(token_answer("AT-faults-too-late")),
    }]);
    let mut config = server(&fault.url("/token"), fast_resilience(2));
    config["Timeout"] = json!(0.3);
    let engine = engine(config);
    let started = Instant::now();
    let error = fetch_error(&engine).await;
    let elapsed = started.elapsed();
    assert_eq!(error.code(), ErrorCode::Net001, "{error}");
    assert_eq!(fault.request_count(), 2, "RetryMaxAttempts 2");
    assert!(
        elapsed >= Duration::from_millis(600) && elapsed < Duration::from_secs(3),
        "two attempts cut at 0.3 s each, took {elapsed:?}"
    );
    assert_secret_free(&[&error]);
}

// 3. HTTP 500.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_500_is_retried_every_attempt_then_auth003() {
    let fault = FaultServer::start(vec![Fault::json(
        500,
        json!({"error": "server_error", "error_description": "database down"}),
    )]);
    let engine = engine(server(&fault.url("/token"), fast_resilience(4)));
    let error = fetch_error(&engine).await;
    assert_eq!(error.code(), ErrorCode::Auth003, "{error}");
    assert!(error.to_string().contains("HTTP 500"), "{error}");
    assert_eq!(fault.request_count(), 4, "RetryMaxAttempts 4");
    assert_eq!(stat(&manager(&engine).stats.retries), 3);
    assert_eq!(
        manager(&engine).last_error().map(|e| e.code()),
        Some(ErrorCode::Auth003)
    );
    assert_secret_free(&[&error]);
}

// 4. HTTP 429 with Retry-After.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_429_retry_after_is_honoured_over_the_backoff() {
    let fault = FaultServer::start(vec![
        Fault::json(429, json!({"error": "slow_down"})).with_header("Retry-After", "1"),
        token_answer("AT-faults-after-429"),
    ]);
    let engine = engine(server(&fault.url("/token"), fast_resilience(3)));
    let started = Instant::now();
    let token = fetch_token(&engine).await;
    let elapsed = started.elapsed();
    assert_eq!(token, "AT-faults-after-429");
    assert_eq!(fault.request_count(), 2);
    assert!(
        elapsed >= Duration::from_secs(1),
        "Retry-After: 1 waited although RetryInitialDelay is 0.01 s; took {elapsed:?}"
    );

    // Control: without Retry-After the same retry takes the short backoff.
    let quick = FaultServer::start(vec![
        Fault::json(429, json!({"error": "slow_down"})),
        token_answer("AT-faults-after-429-quick"),
    ]);
    let engine = common::engine(server(&quick.url("/token"), fast_resilience(3)));
    let started = Instant::now();
    assert_eq!(fetch_token(&engine).await, "AT-faults-after-429-quick");
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(quick.request_count(), 2);
    assert_secret_free(&[]);
}

// 5. Junk answers.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_that_is_not_a_token_response_is_tok005_and_not_retried() {
    let html = FaultServer::start(vec![Fault::text(
        200,
        "text/html",
        "<html><body><form action=\"/login\">Sign in</form></body></html>",
    )]);
    let engine = engine(server(&html.url("/token"), fast_resilience(3)));
    let html_error = fetch_error(&engine).await;
    assert_eq!(html_error.code(), ErrorCode::Tok005, "{html_error}");
    assert_eq!(html.request_count(), 1, "no retry");

    let no_token = FaultServer::start(vec![Fault::json(
        200,
        json!({"token_type": "Bearer", "expires_in": 300}),
    )]);
    let engine = common::engine(server(&no_token.url("/token"), fast_resilience(3)));
    let json_error = fetch_error(&engine).await;
    assert_eq!(json_error.code(), ErrorCode::Tok005, "{json_error}");
    assert!(
        json_error.to_string().contains("access_token"),
        "{json_error}"
    );
    assert_eq!(no_token.request_count(), 1, "no retry");
    assert!(manager(&engine).cached().is_none());
    assert_secret_free(&[&html_error, &json_error]);
}

// 6. OAuth errors.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_400_errors_are_classified_and_never_retried() {
    let fault = FaultServer::start(vec![Fault::json(
        400,
        json!({"error": "invalid_client", "error_description": "client authentication failed"}),
    )]);
    let engine = engine(server(&fault.url("/token"), fast_resilience(3)));
    let client_error = fetch_error(&engine).await;
    assert_eq!(client_error.code(), ErrorCode::Auth001, "{client_error}");
    assert!(
        client_error.to_string().contains("invalid_client"),
        "{client_error}"
    );
    assert_eq!(fault.request_count(), 1, "even with RetryMaxAttempts 3");
    assert_eq!(stat(&manager(&engine).stats.retries), 0);

    let scope = FaultServer::start(vec![Fault::json(400, json!({"error": "invalid_scope"}))]);
    let engine = common::engine(server(&scope.url("/token"), fast_resilience(3)));
    let scope_error = fetch_error(&engine).await;
    assert_eq!(scope_error.code(), ErrorCode::Auth002, "{scope_error}");
    assert_eq!(scope.request_count(), 1);
    assert_secret_free(&[&client_error, &scope_error]);
}

// 7. Circuit breaker.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_breaker_opens_fails_fast_half_opens_and_closes() {
    let fault = FaultServer::start(vec![Fault::json(500, json!({"error": "server_error"}))]);
    let engine = engine(server(
        &fault.url("/token"),
        json!({"CircuitBreakerEnabled": true, "CircuitBreakerFailureThreshold": 2,
               "CircuitBreakerTimeout": 0.3, "RetryMaxAttempts": 1}),
    ));
    let m = manager(&engine);
    let mut errors = Vec::new();

    let e = fetch_error(&engine).await;
    assert_eq!(e.code(), ErrorCode::Auth003, "{e}");
    assert_eq!(fault.request_count(), 1);
    assert_eq!(
        m.circuit_state(),
        CircuitState::Closed,
        "one failure of two"
    );
    errors.push(e);

    let e = fetch_error(&engine).await;
    assert_eq!(e.code(), ErrorCode::Auth003, "{e}");
    assert_eq!(fault.request_count(), 2);
    assert_eq!(m.circuit_state(), CircuitState::Open, "threshold 2 reached");
    errors.push(e);

    // Open: fails fast, the provider is not called.
    let e = fetch_error(&engine).await;
    assert_eq!(e.code(), ErrorCode::Auth003, "{e}");
    assert!(e.to_string().contains("circuit breaker open"), "{e}");
    assert_eq!(fault.request_count(), 2, "no request while open");
    assert_eq!(stat(&m.stats.circuit_rejections), 1);
    errors.push(e);

    // After the timeout: half-open; a failing trial re-opens it.
    wait_for("the circuit to half-open", Duration::from_secs(5), || {
        (m.circuit_state() == CircuitState::HalfOpen).then_some(())
    });
    let e = fetch_error(&engine).await;
    assert_eq!(e.code(), ErrorCode::Auth003, "{e}");
    assert!(
        e.to_string().contains("HTTP 500"),
        "the trial went out: {e}"
    );
    assert_eq!(fault.request_count(), 3, "exactly one trial request");
    assert_eq!(
        m.circuit_state(),
        CircuitState::Open,
        "a failed trial re-opens"
    );
    errors.push(e);
    let e = fetch_error(&engine).await;
    assert!(e.to_string().contains("circuit breaker open"), "{e}");
    assert_eq!(fault.request_count(), 3, "no request while re-opened");
    assert_eq!(stat(&m.stats.circuit_rejections), 2);
    errors.push(e);

    // The provider recovers: the next trial succeeds and closes the circuit.
    fault.set_script(vec![token_answer("AT-faults-after-circuit")]);
    wait_for(
        "the circuit to half-open again",
        Duration::from_secs(5),
        || (m.circuit_state() == CircuitState::HalfOpen).then_some(()),
    );
    assert_eq!(fetch_token(&engine).await, "AT-faults-after-circuit");
    assert_eq!(fault.request_count(), 4, "exactly one more request");
    assert_eq!(m.circuit_state(), CircuitState::Closed);
    let (_, origin) = m.token().await.unwrap();
    assert_eq!(origin, TokenOrigin::Cache);
    assert_eq!(fault.request_count(), 4);
    let refs: Vec<&Error> = errors.iter().collect();
    assert_secret_free(&refs);
}

// 8. Request format.

fn sorted(mut pairs: Vec<(String, String)>) -> Vec<(String, String)> {
    pairs.sort();
    pairs
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    sorted(
        items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_secret_post_request_format() {
    let fault = FaultServer::start(vec![token_answer("AT-faults-post-format")]);
    let engine = engine(json!({
        "Url": "https://pacs.invalid/dicom-web",
        "TokenEndpoint": fault.url("/oauth2/token"),
        "ClientId": "faults-client",
        "ClientSecret": POST_SECRET,
        "Scope": "dicom.read dicom.write",
        "Audience": "https://dicom.example/api",
        "Resource": "https://dicom.example/",
    }));
    assert_eq!(fetch_token(&engine).await, "AT-faults-post-format");
    let requests = fault.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/oauth2/token");
    assert_eq!(
        r.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(r.header("accept"), Some("application/json"));
    assert_eq!(
        r.header("authorization"),
        None,
        "post sends no Basic header"
    );
    assert_eq!(
        sorted(r.form()),
        pairs(&[
            ("grant_type", "client_credentials"),
            ("scope", "dicom.read dicom.write"),
            ("audience", "https://dicom.example/api"),
            ("resource", "https://dicom.example/"),
            ("client_id", "faults-client"),
            ("client_secret", POST_SECRET),
        ]),
        "body {}",
        r.body_text()
    );
    assert_secret_free(&[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_secret_basic_request_format() {
    let fault = FaultServer::start(vec![token_answer("AT-faults-basic-format")]);
    let engine = engine(json!({
        "Url": "https://pacs.invalid/dicom-web",
        "TokenEndpoint": fault.url("/token"),
        "ClientId": BASIC_CLIENT,
        "ClientSecret": BASIC_SECRET,
        "ClientAuthMethod": "client_secret_basic",
        "Scope": "dicom.read",
    }));
    assert_eq!(fetch_token(&engine).await, "AT-faults-basic-format");
    let requests = fault.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/token");
    assert_eq!(
        r.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    // RFC 6749 §2.3.1: id and secret form-urlencoded, joined by ':', then Base64.
    let expected = format!("Basic {}", basic_credentials_b64());
    assert_eq!(r.header("authorization"), Some(expected.as_str()));
    let form = r.form();
    assert!(
        !form.iter().any(|(k, _)| k == "client_secret"),
        "no client_secret in the form: {}",
        r.body_text()
    );
    assert!(!r.body_text().contains(SECRET_MARK), "{}", r.body_text());
    assert!(
        form.contains(&("grant_type".into(), "client_credentials".into())),
        "{form:?}"
    );
    assert!(
        form.contains(&("scope".into(), "dicom.read".into())),
        "{form:?}"
    );
    assert!(
        !form.iter().any(|(k, _)| k == "audience" || k == "resource"),
        "audience and resource only when configured: {form:?}"
    );
    assert_secret_free(&[]);
}

// 9. Token lifetime from a JWT's exp.

fn unsigned_jwt(claims: Value) -> String {
    use base64::Engine as _;
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.{TOKEN_MARK}jwt-signature",
        b64(json!({"alg": "RS256", "typ": "JWT"})),
        b64(claims)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_expires_in_the_lifetime_comes_from_the_jwt_exp() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let exp = now + 1234;
    let jwt = unsigned_jwt(json!({"sub": "faults", "exp": exp}));
    let fault = FaultServer::start(vec![Fault::json(
        200,
        json!({"access_token": jwt, "token_type": "Bearer"}),
    )]);
    let engine = engine(server(&fault.url("/token"), fast_resilience(1)));
    assert_eq!(fetch_token(&engine).await, jwt);
    let cached = manager(&engine).cached().expect("cached");
    let left = cached.expires_in().as_secs_f64();
    assert!(
        (1229.0..=1234.5).contains(&left),
        "expires in {left} s, the JWT's exp is 1234 s away"
    );
    assert!(
        cached.expires_at_unix.abs_diff(exp) <= 2,
        "{} vs exp {exp}",
        cached.expires_at_unix
    );

    // Neither expires_in nor a JWT: the 300 s default.
    let opaque = FaultServer::start(vec![Fault::json(
        200,
        json!({"access_token": "AT-faults-opaque", "token_type": "Bearer"}),
    )]);
    let engine = common::engine(server(&opaque.url("/token"), fast_resilience(1)));
    fetch_token(&engine).await;
    let left = manager(&engine)
        .cached()
        .unwrap()
        .expires_in()
        .as_secs_f64();
    assert!((295.0..=300.5).contains(&left), "expires in {left} s");
    assert_secret_free(&[]);
}

// 10. Forward proxy.

/// Whether a `NO_PROXY` list (as reqwest/hyper-util read it) exempts 127.0.0.1.
fn exempts_loopback(list: &str) -> bool {
    let host = Ipv4Addr::LOCALHOST;
    list.split(',').map(str::trim).any(|entry| {
        if entry == "*" {
            return true;
        }
        let (ip, bits) = match entry.split_once('/') {
            Some((ip, bits)) => (ip, bits.parse::<u32>().unwrap_or(32)),
            None => (entry, 32),
        };
        if let Ok(ip) = ip.parse::<Ipv4Addr>() {
            let mask = u32::MAX.checked_shl(32 - bits.min(32)).unwrap_or(0);
            return u32::from(ip) & mask == u32::from(host) & mask;
        }
        let domain = entry.trim_start_matches('.');
        !domain.is_empty()
            && (domain == "127.0.0.1" || "127.0.0.1".ends_with(&format!(".{domain}")))
    })
}

/// The proxy settings apply `NO_PROXY` (http_client.rs: `NoProxy::from_env()`);
/// an exemption for 127.0.0.1 would send the requests around the proxy, and
/// the FaultServer only listens on 127.0.0.1. Fail loudly rather than test nothing.
fn assert_loopback_not_exempted_from_proxies() {
    for var in ["NO_PROXY", "no_proxy"] {
        if let Ok(list) = std::env::var(var) {
            assert!(
                !exempts_loopback(&list),
                "{var}={list} exempts 127.0.0.1 from proxies: unset it to run the proxy tests"
            );
        }
    }
}

#[test]
fn the_no_proxy_check_recognises_loopback_exemptions() {
    for list in [
        "*",
        "127.0.0.1",
        "localhost, 127.0.0.0/8",
        "0.0.0.0/0",
        ".0.0.1",
    ] {
        assert!(exempts_loopback(list), "{list}");
    }
    for list in ["", "localhost", "example.com,10.0.0.0/8", "127.0.0.2"] {
        assert!(!exempts_loopback(list), "{list}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_requests_go_through_the_configured_forward_proxy() {
    assert_loopback_not_exempted_from_proxies();
    let proxy = Tinyproxy::start();
    let fault = FaultServer::start(vec![token_answer("AT-faults-via-proxy")]);
    let port = fault.port();
    let dead_proxy = format!("127.0.0.1:{}", closed_port());

    // Orthanc's global HttpProxy, in its host:port form.
    let engine = engine_with(
        server(&fault.url("/token-global"), fast_resilience(1)),
        json!({"HttpProxy": format!("127.0.0.1:{}", proxy.port())}),
    );
    assert_eq!(fetch_token(&engine).await, "AT-faults-via-proxy");
    assert!(
        proxy.saw(&format!("127.0.0.1:{port}")),
        "tinyproxy log:\n{}",
        proxy.log()
    );
    assert!(
        proxy.saw(&format!("POST http://127.0.0.1:{port}/token-global")),
        "tinyproxy log:\n{}",
        proxy.log()
    );
    let via = fault.requests()[0].header("via").map(str::to_owned);
    assert!(
        via.as_deref().is_some_and(|v| v.contains("tinyproxy")),
        "the provider got the request from tinyproxy: Via {via:?}"
    );

    // The per-server HttpProxy overrides the global one (which is dead here).
    let engine = common::engine_with(
        {
            let mut s = server(&fault.url("/token-server"), fast_resilience(1));
            s["HttpProxy"] = json!(proxy.url());
            s
        },
        json!({"HttpProxy": dead_proxy}),
    );
    assert_eq!(fetch_token(&engine).await, "AT-faults-via-proxy");
    assert!(
        proxy.saw(&format!("POST http://127.0.0.1:{port}/token-server")),
        "tinyproxy log:\n{}",
        proxy.log()
    );

    // ...also when it is the dead one: then nothing reaches tinyproxy or the provider.
    let before = fault.request_count();
    let engine = common::engine_with(
        {
            let mut s = server(&fault.url("/token-dead"), fast_resilience(1));
            s["HttpProxy"] = json!(dead_proxy);
            s
        },
        json!({"HttpProxy": format!("127.0.0.1:{}", proxy.port())}),
    );
    let error = fetch_error(&engine).await;
    assert_eq!(error.code(), ErrorCode::Net002, "{error}");
    assert_eq!(fault.request_count(), before);
    assert!(!proxy.saw("/token-dead"), "tinyproxy log:\n{}", proxy.log());

    // HTTPS through the proxy: a CONNECT tunnel.
    let ca = TestCa::new();
    let tls = FaultServer::start_tls(
        vec![token_answer("AT-faults-via-tunnel")],
        &ca.issue_server_cert(),
    );
    let dir = TempDir::new();
    let ca_pem = ca.write_ca_pem(dir.path());
    let engine = common::engine_with(
        server(&tls.url("/token"), fast_resilience(1)),
        json!({"HttpProxy": format!("127.0.0.1:{}", proxy.port()), "HttpsCACertificates": ca_pem}),
    );
    assert_eq!(fetch_token(&engine).await, "AT-faults-via-tunnel");
    assert!(
        proxy.saw(&format!("CONNECT 127.0.0.1:{}", tls.port())),
        "tinyproxy log:\n{}",
        proxy.log()
    );
    assert_secret_free(&[&error]);
}

// 11. Private CA.

/// A TLS FaultServer with a certificate from a fresh private CA, and that CA's PEM file.
struct TlsProvider {
    fault: FaultServer,
    endpoint: String,
    ca_pem: PathBuf,
    _dir: TempDir,
}

fn tls_provider(token: &str) -> TlsProvider {
    let ca = TestCa::new();
    let fault = FaultServer::start_tls(vec![token_answer(token)], &ca.issue_server_cert());
    let endpoint = format!("https://127.0.0.1:{}/token", fault.port());
    let dir = TempDir::new();
    let ca_pem = ca.write_ca_pem(dir.path());
    TlsProvider {
        fault,
        endpoint,
        ca_pem,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_is_trusted_when_configured() {
    let tls = tls_provider("AT-faults-over-tls");
    let (fault, endpoint) = (&tls.fault, tls.endpoint.as_str());

    // Orthanc's HttpsCACertificates.
    let engine = engine_with(
        server(endpoint, fast_resilience(1)),
        json!({"HttpsCACertificates": tls.ca_pem}),
    );
    assert_eq!(fetch_token(&engine).await, "AT-faults-over-tls");
    assert_eq!(fault.request_count(), 1);

    // The per-server CaBundle.
    let mut with_bundle = server(endpoint, fast_resilience(1));
    with_bundle["CaBundle"] = json!(tls.ca_pem);
    let engine = common::engine(with_bundle);
    assert_eq!(fetch_token(&engine).await, "AT-faults-over-tls");
    assert_eq!(fault.request_count(), 2);

    // VerifySSL as the path of a CA bundle.
    let mut verify_path = server(endpoint, fast_resilience(1));
    verify_path["VerifySSL"] = json!(tls.ca_pem);
    let engine = common::engine(verify_path);
    assert_eq!(fetch_token(&engine).await, "AT-faults-over-tls");
    assert_eq!(fault.request_count(), 3);

    // VerifySSL false: insecure (warned), but it works.
    let mut insecure = server(endpoint, fast_resilience(1));
    insecure["VerifySSL"] = json!(false);
    let config = config_with(insecure.clone(), Value::Null);
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.contains("TLS CERTIFICATE VERIFICATION IS DISABLED")),
        "{:?}",
        config.warnings
    );
    let engine = common::engine(insecure);
    assert_eq!(fetch_token(&engine).await, "AT-faults-over-tls");
    assert_eq!(fault.request_count(), 4);
    assert_secret_free(&[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_net003() {
    let tls = tls_provider("AT-faults-untrusted");
    let other_dir = TempDir::new();
    let other_ca_pem = TestCa::new().write_ca_pem(other_dir.path());

    // No CA configured: the system roots do not know the private CA.
    let engine = engine(server(&tls.endpoint, fast_resilience(1)));
    let untrusted = fetch_error(&engine).await;
    // Another CA's bundle does not help either.
    let engine = common::engine_with(
        server(&tls.endpoint, fast_resilience(1)),
        json!({"HttpsCACertificates": other_ca_pem}),
    );
    let wrong_ca = fetch_error(&engine).await;
    assert_eq!(
        tls.fault.request_count(),
        0,
        "nothing got past the handshake"
    );
    assert_secret_free(&[&untrusted, &wrong_ca]);
    assert_eq!(untrusted.code(), ErrorCode::Net003, "{untrusted}");
    assert_eq!(wrong_ca.code(), ErrorCode::Net003, "{wrong_ca}");
}

// 12. Secrets.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_neither_logs_nor_errors() {
    let mut errors = Vec::new();

    // Proxy credentials, with the proxy down.
    let proxy_with_password = format!("http://faults:{PROXY_PASSWORD}@127.0.0.1:{}", closed_port());
    let fault = FaultServer::start(vec![token_answer("AT-faults-unreached")]);
    let engine = engine_with(
        server(&fault.url("/token"), fast_resilience(2)),
        json!({"HttpProxy": proxy_with_password}),
    );
    let e = fetch_error(&engine).await;
    assert_eq!(e.code(), ErrorCode::Net002, "{e}");
    assert_eq!(fault.request_count(), 0);
    errors.push(e);

    // A proxy address that does not parse, holding a password.
    let config = config_with(
        {
            let mut s = server(&fault.url("/token"), fast_resilience(1));
            s["HttpProxy"] = json!(format!("http://faults:{PROXY_PASSWORD}@[::1"));
            s
        },
        Value::Null,
    );
    match Engine::new(&config, tokio::runtime::Handle::current()) {
        Ok(_) => panic!("an unparsable HttpProxy must be refused"),
        Err(e) => {
            assert_eq!(e.code(), ErrorCode::Cfg002, "{e}");
            errors.push(e);
        }
    }

    // Every failure path of a token request with a secret configured: post and basic.
    let scripts: Vec<Vec<Fault>> = vec![
        vec![Fault::CloseConnection],
        vec![Fault::json(
            503,
            json!({"error": "temporarily_unavailable"}),
        )],
        vec![Fault::json(401, json!({"error": "invalid_client"}))],
        vec![Fault::json(
            200,
            json!({"access_token": "AT-faults-mac", "token_type": "mac"}),
        )],
        vec![Fault::text(
            200,
            "text/plain",
            "AT-faults-plain-text-answer",
        )],
    ];
    for script in scripts {
        let fault = FaultServer::start(script);
        let engine = common::engine(server(&fault.url("/token"), fast_resilience(2)));
        errors.push(fetch_error(&engine).await);
        let engine = common::engine(json!({
            "Url": "https://pacs.invalid/dicom-web",
            "TokenEndpoint": fault.url("/token"),
            "ClientId": BASIC_CLIENT,
            "ClientSecret": BASIC_SECRET,
            "ClientAuthMethod": "client_secret_basic",
            "ResilienceConfig": fast_resilience(2),
        }));
        errors.push(fetch_error(&engine).await);
    }
    // A success too (the "token acquired" line).
    let fault = FaultServer::start(vec![token_answer("AT-faults-acquired")]);
    let engine = common::engine(server(&fault.url("/token"), fast_resilience(1)));
    assert_eq!(fetch_token(&engine).await, "AT-faults-acquired");

    // The check is not vacuous: the capture holds the core's lines of this test.
    let logged = logs();
    assert!(logged.contains("token acquisition failed"), "{logged}");
    assert!(logged.contains("token acquired"), "{logged}");
    assert!(logged.contains("retrying"), "{logged}");
    let refs: Vec<&Error> = errors.iter().collect();
    assert_secret_free(&refs);
}

/// private_key_jwt (RFC 7523 §2.2): the assertion's header and claims as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_key_jwt_assertions_are_well_formed_and_unique() {
    use base64::Engine as _;
    let key = testkit::Idp::generate_key("RS256", "unused");
    let endpoint = FaultServer::start(vec![token_answer("AT-faults-pkjwt-1")]);
    let token_url = endpoint.url("/oauth2/token");
    let engine = engine(json!({
        "Url": "https://pacs.invalid/dicom-web",
        "TokenEndpoint": token_url,
        "ClientId": "jwt-client",
        "ClientAuthMethod": "private_key_jwt",
        "ClientAssertionKey": key["private_pem"],
        "ClientAssertionKeyId": "my-kid",
        "ClientAssertionX5t": "bXktdGh1bWJwcmludA",
    }));
    let m = manager(&engine);
    m.token().await.unwrap();
    m.invalidate();
    m.token().await.unwrap();
    let decode = |part: &str| -> Value {
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part)
                .unwrap(),
        )
        .unwrap()
    };
    let mut jtis = Vec::new();
    for request in endpoint.requests() {
        let form: std::collections::HashMap<String, String> = request.form().into_iter().collect();
        assert_eq!(
            form["client_assertion_type"],
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        );
        assert!(!form.contains_key("client_secret"));
        assert!(request.header("authorization").is_none());
        let assertion = &form["client_assertion"];
        let parts: Vec<&str> = assertion.split('.').collect();
        assert_eq!(parts.len(), 3);
        let (header, claims) = (decode(parts[0]), decode(parts[1]));
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["kid"], "my-kid");
        assert_eq!(header["x5t"], "bXktdGh1bWJwcmludA");
        assert_eq!(claims["iss"], "jwt-client");
        assert_eq!(claims["sub"], "jwt-client");
        assert_eq!(claims["aud"], token_url.as_str());
        let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
        assert!(
            (1..=300).contains(&lifetime),
            "short expiry, got {lifetime}s"
        );
        // The signature verifies with the client's public key.
        let public =
            jsonwebtoken::DecodingKey::from_rsa_pem(key["public_pem"].as_str().unwrap().as_bytes())
                .unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_audience(&[token_url.as_str()]);
        jsonwebtoken::decode::<Value>(assertion, &public, &validation)
            .expect("assertion signature");
        jtis.push(claims["jti"].as_str().unwrap().to_owned());
    }
    assert_eq!(jtis.len(), 2);
    assert_ne!(jtis[0], jtis[1], "each assertion has its own jti");
}
