//! The real tinyproxy forwards plain requests and CONNECT tunnels (HTTP and
//! HTTPS) to FaultServers, and its log shows each request it handled.

mod common;

use common::{connect, https_get_on, read_head, read_response};
use serde_json::json;
use std::io::{BufReader, Write};
use std::time::Duration;
use testkit::{Fault, FaultServer, TestCa, Tinyproxy};

#[test]
fn forwards_a_plain_get_and_logs_it() {
    let proxy = Tinyproxy::start();
    assert_eq!(proxy.url(), format!("http://127.0.0.1:{}", proxy.port()));
    let server = FaultServer::start(vec![Fault::json(200, json!({"via": "proxy"}))]);
    let target = server.url("/x?y=1");
    let mut stream = connect(proxy.port());
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
        server.port()
    )
    .unwrap();
    let reply = read_response(&mut BufReader::new(stream));
    assert_eq!(reply.status, 200, "{}", proxy.log());
    assert_eq!(reply.text(), r#"{"via":"proxy"}"#);

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    // The proxy turns the absolute URL back into a path, and says it was there.
    assert_eq!(requests[0].path, "/x?y=1");
    assert!(
        requests[0]
            .header("via")
            .is_some_and(|v| v.contains("tinyproxy")),
        "{:?}",
        requests[0].headers
    );
    assert!(
        proxy.saw(&format!("GET {target} HTTP/1.1")),
        "not in the log:\n{}",
        proxy.log()
    );
}

#[test]
fn tunnels_a_client_configured_with_the_proxy() {
    let proxy = Tinyproxy::start();
    let server = FaultServer::start(vec![Fault::text(200, "text/plain", "tunnelled")]);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .proxy(Some(ureq::Proxy::new(&proxy.url()).unwrap()))
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let mut response = agent.get(&server.url("/via-ureq")).call().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.body_mut().read_to_string().unwrap(), "tunnelled");
    assert_eq!(server.requests()[0].path, "/via-ureq");
    // ureq 3 sends every proxied request, http:// ones too, through CONNECT.
    assert!(
        proxy.saw(&format!("CONNECT 127.0.0.1:{} HTTP/1.1", server.port())),
        "not in the log:\n{}",
        proxy.log()
    );
}

#[test]
fn tunnels_https_to_a_tls_fault_server() {
    let proxy = Tinyproxy::start();
    let ca = TestCa::new();
    let server = FaultServer::start_tls(
        vec![Fault::json(200, json!({"access_token": "t"}))],
        &ca.issue_server_cert(),
    );
    let authority = format!("127.0.0.1:{}", server.port());
    let mut stream = connect(proxy.port());
    write!(
        stream,
        "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let (status, _) = read_head(&mut reader);
    assert_eq!(status, 200, "{}", proxy.log());
    // Nothing comes before the TLS server hello, so nothing is left buffered.
    assert!(reader.buffer().is_empty());
    let reply = https_get_on(
        reader.into_inner(),
        ca.rustls_client_config(),
        "127.0.0.1",
        &authority,
        "/token",
    )
    .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(server.requests()[0].path, "/token");
    assert!(proxy.saw(&format!("CONNECT {authority} HTTP/1.1")));
}
