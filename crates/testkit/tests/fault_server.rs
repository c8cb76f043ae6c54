//! FaultServer: scripted answers, request parsing and recording, keep-alive,
//! and stopping promptly.

mod common;

use common::{assert_closed, connect, exchange, read_head, read_response};
use serde_json::json;
use std::io::{BufReader, Read, Write};
use std::time::{Duration, Instant};
use testkit::{wait_for, Fault, FaultServer, HttpClient};

#[test]
fn answers_in_script_order_then_repeats_the_last_entry() {
    let server = FaultServer::start(vec![
        Fault::json(500, json!({"error": "server_error"})),
        Fault::json(200, json!({"access_token": "t1"})),
        Fault::text(503, "text/plain", "busy").with_header("Retry-After", "7"),
    ]);
    let http = HttpClient::new();
    let first = http.get(&server.url("/token?a=1"));
    assert_eq!(first.status, 500);
    assert_eq!(first.json()["error"], "server_error");
    assert_eq!(first.content_type.as_deref(), Some("application/json"));
    let second = http.get(&server.url("/token"));
    assert_eq!(
        (second.status, second.json()["access_token"].clone()),
        (200, json!("t1"))
    );
    for _ in 0..3 {
        let reply = http.get(&server.url("/token"));
        assert_eq!((reply.status, reply.text().as_str()), (503, "busy"));
        assert_eq!(reply.content_type.as_deref(), Some("text/plain"));
    }
    let requests = server.requests();
    assert_eq!(server.request_count(), 5);
    assert_eq!(requests[0].method, "GET");
    assert_eq!(requests[0].path, "/token?a=1");
    assert_eq!(requests[1].path, "/token");
    assert_eq!(
        requests[0].header("Host"),
        Some(format!("127.0.0.1:{}", server.port()).as_str())
    );
}

#[test]
fn response_headers_are_sent() {
    let server = FaultServer::start(vec![Fault::text(429, "text/plain", "slow down")
        .with_header("Retry-After", "3")
        .with_header("X-Test", "yes")]);
    let reply = exchange(
        server.port(),
        "GET /t HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(reply.status, 429);
    assert_eq!(reply.header("retry-after"), Some("3"));
    assert_eq!(reply.header("x-test"), Some("yes"));
    assert_eq!(reply.header("content-length"), Some("9"));
    assert_eq!(reply.text(), "slow down");
}

#[test]
fn set_script_replaces_the_script_and_starts_it_again() {
    let server = FaultServer::start(vec![Fault::text(200, "text/plain", "old")]);
    let http = HttpClient::new();
    assert_eq!(http.get(&server.url("/")).text(), "old");
    assert_eq!(http.get(&server.url("/")).text(), "old");
    server.set_script(vec![
        Fault::text(200, "text/plain", "new 1"),
        Fault::text(200, "text/plain", "new 2"),
    ]);
    assert_eq!(http.get(&server.url("/")).text(), "new 1");
    assert_eq!(http.get(&server.url("/")).text(), "new 2");
    assert_eq!(http.get(&server.url("/")).text(), "new 2");
    assert_eq!(server.request_count(), 5, "recorded requests are kept");
}

#[test]
fn delay_answers_after_the_delay() {
    let delay = Duration::from_millis(300);
    let server = FaultServer::start(vec![Fault::Delay {
        delay,
        then: Box::new(Fault::json(200, json!({"ok": true}))),
    }
    .with_header("X-Delayed", "1")]);
    let started = Instant::now();
    let reply = exchange(
        server.port(),
        "GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(started.elapsed() >= delay, "answered before the delay");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-delayed"), Some("1"));
}

#[test]
fn drop_ends_a_delay_at_once_and_closes_the_connection() {
    let server = FaultServer::start(vec![Fault::Delay {
        delay: Duration::from_secs(600),
        then: Box::new(Fault::json(200, json!({}))),
    }]);
    let port = server.port();
    let client = std::thread::spawn(move || {
        let mut stream = connect(port);
        stream
            .write_all(b"GET /never HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).map(|_| rest)
    });
    wait_for("the request to arrive", Duration::from_secs(10), || {
        (server.request_count() == 1).then_some(())
    });
    let started = Instant::now();
    drop(server);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "drop waited for the delay: {:?}",
        started.elapsed()
    );
    let received = client.join().unwrap();
    match received {
        Ok(bytes) => assert!(bytes.is_empty(), "got an answer: {bytes:?}"),
        Err(e) => assert_ne!(e.kind(), std::io::ErrorKind::WouldBlock, "client timed out"),
    }
}

#[test]
fn close_connection_reads_and_records_the_request_then_closes() {
    let server = FaultServer::start(vec![
        Fault::CloseConnection,
        Fault::json(200, json!({"access_token": "t"})),
    ]);
    let mut stream = connect(server.port());
    stream
        .write_all(
            b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
              Content-Length: 29\r\n\r\ngrant_type=client_credentials",
        )
        .unwrap();
    assert_closed(&mut stream);
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].body_text(), "grant_type=client_credentials");

    // A real client sees a transport error, and the next request gets the next entry.
    let http = HttpClient::new();
    server.set_script(vec![Fault::CloseConnection]);
    assert!(http.try_get(&server.url("/token")).is_err());
    server.set_script(vec![Fault::json(200, json!({"access_token": "t"}))]);
    assert_eq!(http.get(&server.url("/token")).status, 200);
}

#[test]
fn records_a_chunked_body() {
    let server = FaultServer::start(vec![Fault::json(200, json!({}))]);
    let mut stream = connect(server.port());
    stream
        .write_all(
            b"POST /token HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\
              Content-Type: application/x-www-form-urlencoded\r\n\r\n\
              5\r\ngrant\r\n\
              1A;ext=1\r\n_type=client_credentials&s\r\n\
              8\r\ncope=a+b\r\n\
              0\r\nX-Trailer: t\r\n\r\n",
        )
        .unwrap();
    let reply = read_response(&mut BufReader::new(&stream));
    assert_eq!(reply.status, 200);
    let request = &server.requests()[0];
    assert_eq!(
        request.body_text(),
        "grant_type=client_credentials&scope=a+b"
    );
    assert_eq!(request.header("transfer-encoding"), Some("chunked"));
    assert_eq!(
        request.form(),
        vec![
            ("grant_type".to_owned(), "client_credentials".to_owned()),
            ("scope".to_owned(), "a b".to_owned()),
        ]
    );
}

#[test]
fn serves_several_requests_on_one_kept_alive_connection() {
    let server = FaultServer::start(vec![
        Fault::text(200, "text/plain", "one"),
        Fault::text(200, "text/plain", "two"),
        Fault::text(200, "text/plain", "three"),
        Fault::text(200, "text/plain", "four"),
    ]);
    let stream = connect(server.port());
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    // One after the other…
    writer
        .write_all(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut reader).text(), "one");
    writer
        .write_all(b"POST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        .unwrap();
    assert_eq!(read_response(&mut reader).text(), "two");
    // …and pipelined, the last one asking to close.
    writer
        .write_all(
            b"GET /3 HTTP/1.1\r\nHost: x\r\n\r\nGET /4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
    assert_eq!(read_response(&mut reader).text(), "three");
    let last = read_response(&mut reader);
    assert_eq!(last.text(), "four");
    assert_eq!(last.header("connection"), Some("close"));
    assert_closed(&mut reader);

    let requests = server.requests();
    let paths: Vec<_> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/1", "/2", "/3", "/4"]);
    assert_eq!(requests[1].body, b"abc");
    assert!(requests
        .iter()
        .all(|r| r.connection == requests[0].connection));
}

#[test]
fn a_pooling_client_reuses_its_connection() {
    let server = FaultServer::start(vec![Fault::json(200, json!({}))]);
    let http = HttpClient::new();
    http.get(&server.url("/a"));
    http.get(&server.url("/b"));
    let requests = server.requests();
    assert_eq!(requests[0].connection, requests[1].connection);
}

#[test]
fn clients_that_close_get_connection_close() {
    let server = FaultServer::start(vec![Fault::text(200, "text/plain", "bye")]);
    for request in [
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.0\r\n\r\n",
    ] {
        let mut reader = BufReader::new(connect(server.port()));
        reader.get_mut().write_all(request.as_bytes()).unwrap();
        let reply = read_response(&mut reader);
        assert_eq!(reply.text(), "bye");
        assert_eq!(reply.header("connection"), Some("close"));
        assert_closed(&mut reader);
    }
    // A client that closes its side after sending still gets its answer.
    let mut stream = connect(server.port());
    stream
        .write_all(b"GET /half HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reader = BufReader::new(stream);
    assert_eq!(read_response(&mut reader).text(), "bye");
    assert_closed(&mut reader);
    // And one that connects and leaves without a request is no request.
    drop(connect(server.port()));
    assert_eq!(server.request_count(), 3);
}

#[test]
fn answers_expect_100_continue_before_reading_the_body() {
    let server = FaultServer::start(vec![Fault::json(200, json!({}))]);
    let stream = connect(server.port());
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    writer
        .write_all(
            b"POST /t HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
        )
        .unwrap();
    let (status, _) = read_head(&mut reader);
    assert_eq!(status, 100);
    writer.write_all(b"body").unwrap();
    assert_eq!(read_response(&mut reader).status, 200);
    assert_eq!(server.requests()[0].body, b"body");
}

#[test]
fn head_gets_headers_only() {
    let server = FaultServer::start(vec![Fault::text(200, "text/plain", "12345")]);
    let mut reader = BufReader::new(connect(server.port()));
    reader
        .get_mut()
        .write_all(b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (status, headers) = read_head(&mut reader);
    assert_eq!(status, 200);
    assert!(headers.contains(&("Content-Length".to_owned(), "5".to_owned())));
    assert_closed(&mut reader);
}

#[test]
fn parses_a_form_body_and_headers() {
    let server = FaultServer::start(vec![Fault::json(200, json!({"access_token": "t"}))]);
    let http = HttpClient::new();
    http.post(
        &server.url("/oauth2/token"),
        "application/x-www-form-urlencoded",
        b"grant_type=client_credentials&scope=read+write%20all&client_id=a%2Bb%26c&empty=&flag",
    );
    let request = &server.requests()[0];
    assert_eq!(request.method, "POST");
    assert_eq!(
        request.header("CONTENT-TYPE"),
        Some("application/x-www-form-urlencoded")
    );
    assert!(request.headers.iter().all(|(k, _)| *k == k.to_lowercase()));
    let form = request.form();
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        pairs,
        [
            ("grant_type", "client_credentials"),
            ("scope", "read write all"),
            ("client_id", "a+b&c"),
            ("empty", ""),
            ("flag", ""),
        ]
    );
}

#[test]
#[should_panic(expected = "no response")]
fn with_header_on_close_connection_is_a_test_mistake() {
    let _ = Fault::CloseConnection.with_header("X", "y");
}
