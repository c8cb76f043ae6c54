//! The proxy route inside a real Orthanc, against a scripted upstream
//! (testkit's FaultServer) and the real identity provider: faithful
//! pass-through, header hygiene, the 401 retry, failures, safety rules.

use serde_json::{json, Value};
use testkit::{Fault, FaultServer, Idp, Orthanc, OrthancBuilder};

const SECRET: &str = "proxy-client-secret-5b7e";

fn idp() -> Idp {
    Idp::start(&json!({
        "accessTokenTtl": 300,
        "clients": [{"client_id": "orthanc", "client_secret": SECRET,
                     "token_endpoint_auth_method": "client_secret_post", "scope": "dicom.read dicom.write"}]
    }))
}

fn orthanc(idp: &Idp, upstream: &FaultServer, extra: Value) -> Orthanc {
    let mut section = json!({
        "Servers": {"remote": {
            "Url": upstream.url("/dicom-web"),
            "TokenEndpoint": idp.token_endpoint(),
            "ClientId": "orthanc",
            "ClientSecret": SECRET,
            "Scope": "dicom.read dicom.write"
        }}
    });
    for (k, v) in extra.as_object().unwrap() {
        section[k] = v.clone();
    }
    OrthancBuilder::new().oauth(section).start()
}

fn bearer(request: &testkit::RecordedRequest) -> String {
    request
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_else(|| panic!("no bearer token upstream: {:?}", request.headers))
        .to_owned()
}

#[test]
fn get_passes_status_content_type_and_body_through_with_a_bearer_token() {
    let idp = idp();
    let multipart = "--b1\r\nContent-Type: application/dicom+json\r\n\r\n{}\r\n--b1--\r\n";
    let upstream = FaultServer::start(vec![Fault::text(
        200,
        "multipart/related; type=\"application/dicom+json\"; boundary=b1",
        multipart,
    )
    .with_header("Warning", "299 remote: partial")]);
    let orthanc = orthanc(&idp, &upstream, json!({}));
    let reply = orthanc.http().request(
        "GET",
        &orthanc.url("/oauth-dicom-web/servers/remote/studies/1.2.3/metadata?includefield=all&PatientName=Doe%5EJohn"),
        &[("Accept", "multipart/related; type=\"application/dicom+json\""), ("Authorization", "Basic b3J0aGFuYzpvcnRoYW5j"), ("Cookie", "session=abc")],
        None,
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.content_type.as_deref(),
        Some("multipart/related; type=\"application/dicom+json\"; boundary=b1")
    );
    assert_eq!(reply.text(), multipart);

    let seen = &upstream.requests()[0];
    assert_eq!(seen.method, "GET");
    let (path, query) = seen.path.split_once('?').unwrap();
    assert_eq!(path, "/dicom-web/studies/1.2.3/metadata");
    let mut params: Vec<(String, String)> = form_urlencoded_pairs(query);
    params.sort();
    assert_eq!(
        params,
        vec![
            ("PatientName".into(), "Doe^John".into()),
            ("includefield".into(), "all".into())
        ]
    );
    assert_eq!(
        seen.header("accept"),
        Some("multipart/related; type=\"application/dicom+json\"")
    );
    assert!(
        seen.header("cookie").is_none(),
        "the caller's cookie was forwarded"
    );
    let token = bearer(seen);
    assert_eq!(
        token.split('.').count(),
        3,
        "a JWT from the identity provider"
    );
    assert_eq!(idp.token_requests(), 1);

    let log = orthanc.log();
    testkit::assert_no_secrets("the Orthanc log", &log, &[SECRET, &token]);
}

fn form_urlencoded_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                let s = s.replace('+', " ");
                let mut out = Vec::new();
                let bytes = s.as_bytes();
                let mut i = 0;
                while i < bytes.len() {
                    if bytes[i] == b'%' && i + 2 < bytes.len() + 1 {
                        out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                        i += 3;
                    } else {
                        out.push(bytes[i]);
                        i += 1;
                    }
                }
                String::from_utf8(out).unwrap()
            };
            (decode(k), decode(v))
        })
        .collect()
}

#[test]
fn remote_statuses_are_passed_through() {
    let idp = idp();
    let upstream = FaultServer::start(vec![Fault::json(200, json!({}))]);
    let orthanc = orthanc(&idp, &upstream, json!({}));
    let url = orthanc.url("/oauth-dicom-web/servers/remote/studies");
    for (status, body) in [
        (409, "conflict: already stored"),
        (404, "no such study"),
        (503, "remote down"),
        (202, "accepted with warnings"),
        (204, ""),
    ] {
        upstream.set_script(vec![Fault::text(status, "application/dicom+json", body)]);
        let reply = orthanc.http().request(
            "POST",
            &url,
            &[(
                "Content-Type",
                "multipart/related; type=\"application/dicom\"; boundary=x",
            )],
            Some(b"--x--\r\n"),
        );
        assert_eq!(
            reply.status,
            status,
            "remote {status} became {}: {}",
            reply.status,
            reply.text()
        );
        if !body.is_empty() {
            assert_eq!(reply.text(), body, "body of {status}");
        }
        let get = orthanc.http().get(&url);
        assert_eq!(get.status, status);
    }
}

#[test]
fn streamed_post_body_arrives_intact() {
    let idp = idp();
    let upstream = FaultServer::start(vec![Fault::json(200, json!({"stored": true}))]);
    let orthanc = orthanc(&idp, &upstream, json!({}));
    let body = patterned(3_000_000);
    let reply = orthanc.http().request(
        "POST",
        &orthanc.url("/oauth-dicom-web/servers/remote/studies"),
        &[(
            "Content-Type",
            "multipart/related; type=\"application/dicom\"; boundary=x",
        )],
        Some(&body),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = &upstream.requests()[0];
    assert_eq!(seen.path, "/dicom-web/studies");
    assert_eq!(seen.body.len(), body.len());
    assert!(seen.body == body, "body changed in transit");
    assert_eq!(
        seen.header("content-type"),
        Some("multipart/related; type=\"application/dicom\"; boundary=x")
    );
}

#[test]
fn a_401_drops_the_token_and_retries_once() {
    let idp = idp();
    let upstream = FaultServer::start(vec![
        Fault::text(401, "application/json", "{\"error\":\"invalid_token\"}"),
        Fault::json(200, json!({"ok": 1})),
    ]);
    let orthanc = orthanc(&idp, &upstream, json!({}));
    let reply = orthanc.http().request(
        "POST",
        &orthanc.url("/oauth-dicom-web/servers/remote/studies"),
        &[("Content-Type", "application/dicom")],
        Some(b"dicom-bytes"),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let requests = upstream.requests();
    assert_eq!(requests.len(), 2);
    assert_ne!(
        bearer(&requests[0]),
        bearer(&requests[1]),
        "a new token after the 401"
    );
    assert_eq!(requests[1].body, b"dicom-bytes", "the body was replayed");
    assert_eq!(idp.token_requests(), 2);

    // Twice 401: the caller gets 401 with AUTH-001, after exactly one retry.
    upstream.set_script(vec![Fault::text(
        401,
        "application/json",
        "{\"error\":\"invalid_token\"}",
    )]);
    let before = upstream.request_count();
    let reply = orthanc
        .http()
        .get(&orthanc.url("/oauth-dicom-web/servers/remote/studies"));
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json()["error_code"], "AUTH-001");
    assert_eq!(upstream.request_count() - before, 2);
}

/// Bytes that differ from one position to the next (a shifted block would show).
fn patterned(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn chunked_bodies_small_ones_replayed_after_a_401_large_ones_streamed_and_never_replayed() {
    let idp = idp();
    let upstream = FaultServer::start(vec![
        Fault::text(401, "application/json", "{\"error\":\"invalid_token\"}"),
        Fault::json(200, json!({"ok": 1})),
    ]);
    let orthanc = orthanc(&idp, &upstream, json!({}));
    let url = orthanc.url("/oauth-dicom-web/servers/remote/studies");
    let headers = [("Content-Type", "application/dicom")];

    // Small: Orthanc hands it over in one block, kept for the replay.
    let small = patterned(200_000);
    let reply = orthanc.http().post_chunked(&url, &headers, &small);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let requests = upstream.requests();
    assert_eq!(requests.len(), 2);
    assert!(
        requests[1].body == small,
        "the small body was replayed intact"
    );

    // Large: streamed in Orthanc's 1 MiB blocks (lent, not copied); the remote answers
    // 401 before reading any of it. Not replayable: AUTH-001, one request, no hang.
    let large = patterned((3 << 20) + 12_345);
    upstream.set_script(vec![Fault::AnswerBeforeBody(Box::new(Fault::text(
        401,
        "application/json",
        "{\"error\":\"invalid_token\"}",
    )))]);
    let before = upstream.request_count();
    let reply = orthanc.http().post_chunked(&url, &headers, &large);
    assert_eq!(reply.status, 401, "{}", reply.text());
    let error = reply.json();
    assert_eq!(error["error_code"], "AUTH-001");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("too large to be replayed")),
        "{error}"
    );
    assert_eq!(upstream.request_count() - before, 1, "no retry");

    // The same large body, accepted: it arrives byte for byte, and every Orthanc
    // thread that lent a block got it back (the request completes at all).
    upstream.set_script(vec![Fault::json(200, json!({"stored": true}))]);
    let reply = orthanc.http().post_chunked(&url, &headers, &large);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = upstream.requests().pop().unwrap();
    assert_eq!(seen.body.len(), large.len());
    assert!(seen.body == large, "body changed in transit");
}

#[test]
fn a_remote_that_drops_the_connection_mid_upload_is_a_502_and_orthanc_carries_on() {
    let idp = idp();
    // Reads the request head, then closes without reading the body or answering.
    let upstream = FaultServer::start(vec![Fault::AnswerBeforeBody(Box::new(
        Fault::CloseConnection,
    ))]);
    let orthanc = orthanc(&idp, &upstream, json!({}));
    let url = orthanc.url("/oauth-dicom-web/servers/remote/studies");
    let headers = [("Content-Type", "application/dicom")];
    let large = patterned(5 << 20);
    let reply = orthanc.http().post_chunked(&url, &headers, &large);
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert_eq!(reply.json()["error_code"], "NET-002");

    // Every block Orthanc lent came back: the next upload goes through whole.
    upstream.set_script(vec![Fault::json(200, json!({"stored": true}))]);
    let reply = orthanc.http().post_chunked(&url, &headers, &large);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(upstream.requests().pop().unwrap().body == large);
}

#[test]
fn a_caller_that_breaks_off_mid_upload_never_yields_a_complete_request_upstream() {
    use std::io::Write;
    let idp = idp();
    let upstream = FaultServer::start(vec![Fault::json(200, json!({"stored": true}))]);
    let orthanc = orthanc(&idp, &upstream, json!({}));
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", orthanc.port())).unwrap();
    write!(
        stream,
        "POST /oauth-dicom-web/servers/remote/studies HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/dicom\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    // 3 MiB in 64 KiB chunks (Orthanc hands the plugin full 1 MiB blocks), then the
    // caller goes away without the terminating chunk.
    let chunk = vec![9u8; 64 << 10];
    for _ in 0..48 {
        write!(stream, "{:x}\r\n", chunk.len()).unwrap();
        stream.write_all(&chunk).unwrap();
        stream.write_all(b"\r\n").unwrap();
    }
    stream.shutdown(std::net::Shutdown::Both).unwrap();
    drop(stream);
    testkit::wait_for(
        "the remote to see the upload break off",
        std::time::Duration::from_secs(30),
        || (upstream.broken_body_count() == 1).then_some(()),
    );
    assert_eq!(
        upstream.request_count(),
        0,
        "a truncated body reached the remote as a complete request"
    );
    // Orthanc carries on.
    let reply = orthanc.http().post_chunked(
        &orthanc.url("/oauth-dicom-web/servers/remote/studies"),
        &[("Content-Type", "application/dicom")],
        &patterned(2 << 20),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[test]
fn identity_provider_down_is_503_and_nothing_is_sent() {
    let upstream = FaultServer::start(vec![Fault::json(200, json!({}))]);
    let closed_port = testkit::free_port();
    let orthanc = OrthancBuilder::new()
        .oauth(json!({"Servers": {"remote": {
            "Url": upstream.url("/dicom-web"),
            "TokenEndpoint": format!("http://127.0.0.1:{closed_port}/token"),
            "ClientId": "orthanc", "ClientSecret": SECRET,
            "ResilienceConfig": {"RetryMaxAttempts": 1}
        }}}))
        .start();
    for method in ["GET", "POST"] {
        let reply = orthanc.http().request(
            method,
            &orthanc.url("/oauth-dicom-web/servers/remote/studies"),
            &[("Content-Type", "application/dicom")],
            (method == "POST").then_some(&b"data"[..]),
        );
        assert_eq!(reply.status, 503, "{method}: {}", reply.text());
        let body = reply.json();
        assert_eq!(body["error_code"], "NET-002", "{body}");
        assert_eq!(body["category"], "network");
        assert!(!reply.text().contains(SECRET));
    }
    assert_eq!(
        upstream.request_count(),
        0,
        "nothing may reach the remote without a token"
    );
}

#[test]
fn unknown_server_is_404_json() {
    let idp = idp();
    let upstream = FaultServer::start(vec![Fault::json(200, json!({}))]);
    let orthanc = orthanc(&idp, &upstream, json!({}));
    for method in ["GET", "POST"] {
        let reply = orthanc.http().request(
            method,
            &orthanc.url("/oauth-dicom-web/servers/nope/studies"),
            &[],
            Some(b"x"),
        );
        assert_eq!(reply.status, 404, "{method}");
        assert!(
            reply.json()["message"]
                .as_str()
                .unwrap()
                .contains("unknown"),
            "{}",
            reply.text()
        );
    }
    assert_eq!(upstream.request_count(), 0);
}

#[test]
fn path_tricks_are_refused_and_never_reach_the_remote() {
    let idp = idp();
    let upstream = FaultServer::start(vec![Fault::json(200, json!({}))]);
    let orthanc = orthanc(&idp, &upstream, json!({}));
    // What Orthanc itself refuses or resolves out of the route before the plugin.
    for path in [
        "studies/..%2F..%2Fadmin",
        "..",
        "studies/../../x",
        "%2E%2E%2F%2E%2E%2Fx",
    ] {
        for method in ["GET", "POST"] {
            let reply = orthanc.http().request(
                method,
                &orthanc.url(&format!("/oauth-dicom-web/servers/remote/{path}")),
                &[],
                Some(b"x"),
            );
            assert!(
                reply.status == 400 || reply.status == 404,
                "{method} {path}: {} {}",
                reply.status,
                reply.text()
            );
        }
    }
    assert_eq!(upstream.request_count(), 0, "{:?}", upstream.requests());

    // Orthanc decodes %2F, resolves dot segments and stops at a decoded NUL
    // before any plugin sees the URL: whatever arrives stays below the base path
    // of the configured host.
    for (path, arrives_as) in [
        ("studies%2F1.2.3", "/dicom-web/studies/1.2.3"),
        ("studies/%2e%2e/x", "/dicom-web/x"),
        ("studies/a%00b", "/dicom-web/studies/a"),
    ] {
        let before = upstream.request_count();
        let reply = orthanc.get(&format!("/oauth-dicom-web/servers/remote/{path}"));
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(upstream.requests()[before].path, arrives_as, "{path}");
    }
}

#[test]
fn the_proxy_route_refuses_clients_outside_proxy_allowed_clients() {
    let idp = idp();
    let upstream = FaultServer::start(vec![Fault::json(200, json!({}))]);
    // Only 127.0.0.2 is allowed: this test's loopback calls from 127.0.0.1 must get 403.
    let orthanc = orthanc(
        &idp,
        &upstream,
        json!({"ProxyAllowedClients": ["127.0.0.2"]}),
    );
    let reply = orthanc.get("/oauth-dicom-web/servers/remote/studies");
    assert_eq!(reply.status, 403);
    assert_eq!(upstream.request_count(), 0);
    // Other routes are not affected.
    assert_eq!(orthanc.get("/system").status, 200);
}

#[test]
fn eight_concurrent_transfers_run_in_parallel() {
    let idp = idp();
    // Each upstream answer takes 1.5 s: eight in a row would take 12 s.
    let upstream = FaultServer::start(vec![Fault::Delay {
        delay: std::time::Duration::from_millis(1500),
        then: Box::new(Fault::json(200, json!({"stored": true}))),
    }]);
    let orthanc = orthanc(&idp, &upstream, json!({}));
    // Warm the token cache so the measurement is about transfers only.
    assert_eq!(
        orthanc
            .post_json("/dicomweb-oauth/servers/remote/test", &json!({}))
            .status,
        200
    );
    let started = std::time::Instant::now();
    let results: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let orthanc = &orthanc;
                scope.spawn(move || {
                    let body = vec![i as u8; 200_000];
                    if i % 2 == 0 {
                        orthanc
                            .http()
                            .request(
                                "POST",
                                &orthanc.url("/oauth-dicom-web/servers/remote/studies"),
                                &[("Content-Type", "application/dicom")],
                                Some(&body),
                            )
                            .status
                    } else {
                        orthanc
                            .get("/oauth-dicom-web/servers/remote/studies")
                            .status
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = started.elapsed();
    assert_eq!(results, vec![200; 8]);
    assert_eq!(upstream.request_count(), 8);
    assert!(
        elapsed < std::time::Duration::from_secs(6),
        "8 transfers took {elapsed:?}: they did not overlap"
    );
}
