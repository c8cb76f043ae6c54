//! The private CA and FaultServer over TLS: a client that trusts the CA gets
//! answers, one that does not fails the handshake.

mod common;

use common::{connect, https_get_on, RawResponse};
use serde_json::json;
use std::process::Command;
use std::sync::Arc;
use testkit::{Fault, FaultServer, TestCa};

fn https_get(
    port: u16,
    config: Arc<rustls::ClientConfig>,
    server_name: &str,
    path: &str,
) -> std::io::Result<RawResponse> {
    let host = format!("{server_name}:{port}");
    https_get_on(connect(port), config, server_name, &host, path)
}

#[test]
fn a_client_trusting_the_ca_gets_answers() {
    let ca = TestCa::new();
    let server = FaultServer::start_tls(
        vec![Fault::json(200, json!({"access_token": "tls"}))],
        &ca.issue_server_cert(),
    );
    assert_eq!(
        server.url("/token"),
        format!("https://127.0.0.1:{}/token", server.port())
    );
    for name in ["127.0.0.1", "localhost"] {
        let reply = https_get(server.port(), ca.rustls_client_config(), name, "/token")
            .unwrap_or_else(|e| panic!("HTTPS to {name}: {e}"));
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), r#"{"access_token":"tls"}"#);
    }
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].path, "/token");
}

#[test]
fn a_client_trusting_another_ca_fails_the_handshake() {
    let ca = TestCa::new();
    let server = FaultServer::start_tls(vec![Fault::json(200, json!({}))], &ca.issue_server_cert());
    let other = TestCa::new();
    let error = https_get(
        server.port(),
        other.rustls_client_config(),
        "127.0.0.1",
        "/",
    )
    .expect_err("handshake with an untrusted certificate");
    assert!(
        error.to_string().contains("UnknownIssuer"),
        "unexpected error: {error}"
    );
    assert_eq!(server.request_count(), 0);
    // The server goes on serving clients that trust it.
    let reply = https_get(server.port(), ca.rustls_client_config(), "127.0.0.1", "/").unwrap();
    assert_eq!(reply.status, 200);
}

#[test]
fn the_certificate_is_only_valid_for_loopback_names() {
    let ca = TestCa::new();
    let server = FaultServer::start_tls(vec![Fault::json(200, json!({}))], &ca.issue_server_cert());
    let error = https_get(server.port(), ca.rustls_client_config(), "example.com", "/")
        .expect_err("a name the certificate does not cover");
    assert!(
        error.to_string().contains("not valid for name"),
        "unexpected error: {error}"
    );
}

#[test]
fn a_plain_http_client_gets_no_answer_from_a_tls_server() {
    let ca = TestCa::new();
    let server = FaultServer::start_tls(vec![Fault::json(200, json!({}))], &ca.issue_server_cert());
    let http = testkit::HttpClient::new();
    let url = format!("http://127.0.0.1:{}/", server.port());
    assert!(http.try_get(&url).is_err());
    assert_eq!(server.request_count(), 0);
}

/// Orthanc's HTTP client is libcurl with OpenSSL: check that OpenSSL accepts
/// the CA file and the server certificate, not only rustls.
#[test]
fn openssl_verifies_the_server_certificate_against_the_ca_file() {
    let ca = TestCa::new();
    let cert = ca.issue_server_cert();
    let dir = tempfile::tempdir().unwrap();
    let ca_path = ca.write_ca_pem(dir.path());
    let ca_text = std::fs::read_to_string(&ca_path).unwrap();
    assert!(ca_text.starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(ca_text.matches("BEGIN CERTIFICATE").count(), 1);
    assert_eq!(cert.cert_pem.matches("BEGIN CERTIFICATE").count(), 2);
    assert!(
        cert.cert_pem.ends_with(&ca_text),
        "the chain ends with the CA"
    );
    assert!(cert.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let leaf_path = dir.path().join("server.pem");
    std::fs::write(&leaf_path, &cert.cert_pem).unwrap();
    for check in [
        ["-verify_ip", "127.0.0.1"],
        ["-verify_hostname", "localhost"],
    ] {
        let output = Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(&ca_path)
            .args(["-purpose", "sslserver"])
            .args(check)
            .arg(&leaf_path)
            .output()
            .expect("run openssl: install openssl (scripts/test does)");
        assert!(
            output.status.success(),
            "openssl verify {check:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // The CA certificate is a CA (basicConstraints CA:TRUE, critical or not).
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&ca_path)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains("CA:TRUE"));
}
