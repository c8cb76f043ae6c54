//! Gateway: the OAuth2-protected DICOMweb reverse proxy (fixtures/gateway),
//! with the real identity provider and a FaultServer as its upstream.

use serde_json::{json, Value};
use testkit::{Fault, FaultServer, Gateway, HttpClient, Idp};

const AUDIENCE: &str = "https://dicom.example";

fn idp() -> Idp {
    Idp::start(&json!({
        "port": 0,
        "defaultAudience": AUDIENCE,
        "clients": [{"client_id": "c1", "client_secret": "s1",
                     "token_endpoint_auth_method": "client_secret_post",
                     "scope": "dicom.read dicom.write"}]
    }))
}

fn gateway(idp: &Idp, upstream: &FaultServer) -> Gateway {
    Gateway::start(&json!({
        "port": 0,
        "upstream": upstream.url(""),
        "jwksUri": format!("{}/jwks", idp.issuer),
        "issuer": idp.issuer,
        "audience": AUDIENCE,
        "requiredScope": "dicom.read",
        "writeScope": "dicom.write",
        "mode": "jwt"
    }))
}

fn token(idp: &Idp, scope: &str) -> String {
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "client_credentials")
        .append_pair("client_id", "c1")
        .append_pair("client_secret", "s1")
        .append_pair("scope", scope)
        .finish();
    let reply = HttpClient::new().post(
        &idp.token_endpoint(),
        "application/x-www-form-urlencoded",
        form.as_bytes(),
    );
    assert_eq!(reply.status, 200, "token request: {}", reply.text());
    reply.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

/// A GET with an optional bearer token: (status, WWW-Authenticate, body).
fn get(url: &str, bearer: Option<&str>) -> (u16, Option<String>, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .build()
        .into();
    let mut request = agent.get(url).header("x-request-id", "test-req-1");
    if let Some(token) = bearer {
        request = request.header("authorization", &format!("Bearer {token}"));
    }
    let mut response = request.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.body_mut().read_to_string().expect("body");
    (response.status().as_u16(), challenge, body)
}

#[test]
fn rejects_without_a_token_and_forwards_without_the_authorization_header() {
    let idp = idp();
    let upstream = FaultServer::start(vec![Fault::text(200, "application/dicom+json", "[]")]);
    let gateway = gateway(&idp, &upstream);
    let url = format!("{}/dicom-web/studies?limit=1", gateway.url);

    let (status, challenge, body) = get(&url, None);
    assert_eq!(status, 401, "{body}");
    assert!(
        challenge
            .as_deref()
            .is_some_and(|c| c.starts_with(r#"Bearer error="invalid_token""#)),
        "{challenge:?}"
    );
    assert_eq!(
        upstream.request_count(),
        0,
        "a rejected request reached the upstream"
    );
    let stats = gateway.stats();
    assert_eq!(stats["rejected_by_status"]["401"], json!(1), "{stats}");
    assert_eq!(stats["accepted"], json!(0), "{stats}");

    let token = token(&idp, "dicom.read");
    let (status, _, body) = get(&url, Some(&token));
    assert_eq!(status, 200, "{body}\n{}", gateway.log());
    assert_eq!(body, "[]");
    let requests = upstream.requests();
    assert_eq!(requests.len(), 1);
    let seen = &requests[0];
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.path, "/dicom-web/studies?limit=1");
    assert_eq!(seen.header("authorization"), None, "{:?}", seen.headers);
    assert_eq!(seen.header("x-request-id"), Some("test-req-1"));
    assert_eq!(
        seen.header("host"),
        Some(format!("127.0.0.1:{}", upstream.port()).as_str())
    );

    let stats: Value = gateway.stats();
    assert_eq!(stats["accepted"], json!(1), "{stats}");
    assert_eq!(stats["last_authorization_present"], json!(true), "{stats}");
    assert_eq!(stats["last_request_id"], json!("test-req-1"), "{stats}");
}

#[test]
fn test_controls() {
    let idp = idp();
    let upstream = FaultServer::start(vec![Fault::text(200, "text/plain", "ok")]);
    let gateway = gateway(&idp, &upstream);
    let url = format!("{}/dicom-web/studies", gateway.url);
    let old = token(&idp, "dicom.read");
    assert_eq!(get(&url, Some(&old)).0, 200);

    gateway.fail_next(503, 1);
    assert_eq!(get(&url, Some(&old)).0, 503);
    assert_eq!(get(&url, Some(&old)).0, 200);

    gateway.reject_all(true);
    assert_eq!(get(&url, Some(&old)).0, 401);
    gateway.reject_all(false);
    assert_eq!(get(&url, Some(&old)).0, 200);

    gateway.revoke_tokens_before_now();
    let (status, _, body) = get(&url, Some(&old));
    assert_eq!(status, 401);
    assert!(body.contains("token revoked"), "{body}");
    assert_eq!(get(&url, Some(&token(&idp, "dicom.read"))).0, 200);

    assert_eq!(upstream.request_count(), 4);
    let stats = gateway.stats();
    assert_eq!(stats["injected"], json!(1), "{stats}");
    gateway.reset_stats();
    assert_eq!(gateway.stats()["requests"], json!(0));
    assert!(gateway.log().contains("listening on"));
}
