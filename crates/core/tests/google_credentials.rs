//! Google credentials (`credentials::google`) against protocol emulations.
//!
//! The Google emulator (fixtures/google-emulator, `testkit::GoogleEmulator`)
//! follows Google's "Using OAuth 2.0 for Server to Server Applications" and
//! RFC 7523 §2.1/§3 for the token endpoint — it verifies each assertion's RS256
//! signature with the service account's public key and checks every claim —
//! and Compute Engine's "Storing and retrieving instance metadata" for the
//! metadata server. Each test names the part of those documents it exercises.
//! Misbehaving servers (junk answers, outages) are testkit's `FaultServer`.
//!
//! Service-account keys are generated at run time (fixtures/idp/genkey.js);
//! every test checks that no error message, and no `Debug` output, carries
//! any part of a private key's PEM body or of an issued token.

use dicomweb_oauth_core::credentials::google::{
    default_credentials_file, healthcare_dicomweb_url, metadata_http_client, MetadataServer,
    ServiceAccount, HEALTHCARE_SCOPE, JWT_BEARER_GRANT,
};
use dicomweb_oauth_core::credentials::{FetchError, FetchedToken};
use dicomweb_oauth_core::{Error, ErrorCode};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use testkit::{Fault, FaultServer, GoogleEmulator, HttpClient, Idp};

const EMAIL: &str = "dicom-reader@emulated-project.iam.gserviceaccount.com";
const KID: &str = "7c1f3e0a9b2d4c5e8f6a1b3c5d7e9f0a1b2c3d4e";
const VM_EMAIL: &str = "vm-sa@emulated-project.iam.gserviceaccount.com";

struct Key {
    private_pem: String,
    public_pem: String,
}

fn generate(alg: &str) -> Key {
    let k = Idp::generate_key(alg, "google-sa");
    Key {
        private_pem: k["private_pem"].as_str().unwrap().to_owned(),
        public_pem: k["public_pem"].as_str().unwrap().to_owned(),
    }
}

/// The service account's key (what the emulator knows).
fn key() -> &'static Key {
    static KEY: OnceLock<Key> = OnceLock::new();
    KEY.get_or_init(|| generate("RS256"))
}

/// Another RSA key: a key file holding it has the wrong key.
fn other_key() -> &'static Key {
    static KEY: OnceLock<Key> = OnceLock::new();
    KEY.get_or_init(|| generate("RS256"))
}

fn config(extra: Value) -> Value {
    let mut config = json!({
        "port": 0,
        "serviceAccounts": [{
            "client_email": EMAIL,
            "public_key_pem": key().public_pem,
            "private_key_id": KID,
        }],
        "tokenLifetime": 3600,
        "metadataAccount": "default",
        "metadataEmail": VM_EMAIL,
    });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    config
}

fn emulator() -> GoogleEmulator {
    GoogleEmulator::start(&config(json!({})))
}

/// The client the token manager would pass (no proxy: tests run on loopback).
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Every line of base64 in the PEM bodies of the keys used here.
fn key_material() -> Vec<String> {
    let mut lines = Vec::new();
    for key in [key(), other_key()] {
        for line in key.private_pem.lines() {
            let line = line.trim();
            if !line.starts_with("-----") && line.len() >= 16 {
                lines.push(line.to_owned());
            }
        }
    }
    assert!(lines.len() > 30, "expected PEM bodies");
    lines
}

/// No key material and none of `tokens` in `text`.
fn assert_secret_free(place: &str, text: &str, tokens: &[&str]) {
    let material = key_material();
    let mut secrets: Vec<&str> = material.iter().map(String::as_str).collect();
    secrets.extend_from_slice(tokens);
    secrets.push("ya29.");
    secrets.push("PRIVATE KEY-----\n");
    testkit::assert_no_secrets(place, text, &secrets);
}

fn assert_error_secret_free(error: &Error) {
    assert_secret_free("an error message", &error.to_string(), &[]);
    assert_secret_free("an error (Debug)", &format!("{error:?}"), &[]);
}

fn expect_failure(result: Result<FetchedToken, FetchError>, code: ErrorCode) -> FetchError {
    let failure = match result {
        Ok(t) => panic!(
            "expected {code}, got a token expiring in {:?}",
            t.expires_in
        ),
        Err(f) => f,
    };
    assert_eq!(failure.error.code(), code, "{}", failure.error);
    assert_error_secret_free(&failure.error);
    failure
}

fn expect_cfg002(result: Result<ServiceAccount, Error>) -> String {
    let error = result.expect_err("expected CFG-002");
    assert_eq!(error.code(), ErrorCode::Cfg002, "{error}");
    assert_error_secret_free(&error);
    error.to_string()
}

/// A key file as Google issues it, with `token_uri` and `private_key` of our choosing.
fn write_key_file(dir: &Path, name: &str, token_uri: &str, private_pem: &str) -> PathBuf {
    let path = dir.join(name);
    let json = json!({
        "type": "service_account",
        "project_id": "emulated-project",
        "private_key_id": KID,
        "private_key": private_pem,
        "client_email": EMAIL,
        "client_id": "100000000000000000001",
        "token_uri": token_uri,
    });
    std::fs::write(&path, json.to_string()).unwrap();
    path
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("google-credentials-")
        .tempdir()
        .unwrap()
}

// ---------------------------------------------------------------------------
// Service account: the JWT-bearer grant
// ---------------------------------------------------------------------------

/// Google, "Using OAuth 2.0 for Server to Server Applications", "Preparing to
/// make an authorized API call" (the JWT: header {alg RS256, typ JWT, kid},
/// claims {iss, scope, aud, exp, iat}) and "Making the access token request";
/// RFC 7523 §2.1. The emulator verified the signature and the claims; the
/// test checks the claims again from what the emulator recorded.
#[tokio::test]
async fn service_account_key_file_gets_a_token() {
    let emu = emulator();
    let path = emu.write_service_account("sa.json", EMAIL, &key().private_pem, KID);
    let sa = ServiceAccount::from_file(&path).unwrap();
    assert_eq!(sa.client_email(), EMAIL);
    assert_eq!(sa.private_key_id(), Some(KID));
    assert_eq!(sa.project_id(), Some("emulated-project"));
    assert_eq!(sa.token_uri().as_str(), emu.token_uri());

    let before = unix_now();
    let token = sa.fetch(&http(), HEALTHCARE_SCOPE).await.unwrap();
    let after = unix_now();
    let access_token = token.access_token.expose().to_owned();
    assert!(access_token.starts_with("ya29."), "a Google-style token");
    assert_eq!(token.expires_in, Some(Duration::from_secs(3599)));

    let stats = emu.stats();
    assert_eq!(stats["token_requests"], 1);
    assert_eq!(stats["tokens_issued"], 1, "{}", emu.log());
    let header = &stats["last_assertion_header"];
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["kid"], KID);
    let claims = &stats["last_assertion_claims"];
    let mut names: Vec<&str> = claims
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["aud", "exp", "iat", "iss", "scope"]);
    assert_eq!(claims["iss"], EMAIL);
    assert_eq!(claims["aud"], emu.token_uri().as_str());
    assert_eq!(claims["scope"], HEALTHCARE_SCOPE);
    let iat = claims["iat"].as_i64().unwrap();
    let exp = claims["exp"].as_i64().unwrap();
    assert!(before <= iat && iat <= after, "iat is now");
    assert_eq!(exp - iat, 3600, "a one-hour assertion");

    // A second fetch signs a new assertion and gets a new token.
    let second = sa.fetch(&http(), HEALTHCARE_SCOPE).await.unwrap();
    assert_ne!(second.access_token.expose(), access_token);
    assert_eq!(emu.stats()["tokens_issued"], 2);

    let debug = format!("{sa:?}");
    assert!(
        debug.contains(EMAIL) && debug.contains("[REDACTED]"),
        "{debug}"
    );
    assert_secret_free("ServiceAccount's Debug", &debug, &[]);
    assert_secret_free(
        "FetchedToken's Debug",
        &format!("{token:?} {second:?}"),
        &[&access_token, second.access_token.expose()],
    );
}

/// Google's Application Default Credentials: without ServiceAccountFile, the
/// key file is the one `GOOGLE_APPLICATION_CREDENTIALS` names.
#[tokio::test]
async fn key_file_from_google_application_credentials() {
    let emu = emulator();
    let path = emu.write_service_account("adc.json", EMAIL, &key().private_pem, KID);
    let text = path.to_str().unwrap().to_owned();
    let env = move |name: &str| (name == "GOOGLE_APPLICATION_CREDENTIALS").then(|| text.clone());
    let found = default_credentials_file(&env).expect("the variable names the file");
    assert_eq!(found, path);
    assert_eq!(default_credentials_file(&|_| None), None);
    let sa = ServiceAccount::from_file(&found).unwrap();
    let token = sa.fetch(&http(), HEALTHCARE_SCOPE).await.unwrap();
    assert!(token.access_token.expose().starts_with("ya29."));
}

/// "Addressing errors" / RFC 7523 §3.1: an assertion signed with a key that is
/// not the account's is `invalid_grant` ("Invalid JWT Signature."): AUTH-001,
/// not retried. So is an unknown account ("account not found") and a `kid`
/// that is not the key's id.
#[tokio::test]
async fn invalid_grant_is_auth001() {
    let emu = emulator();
    let dir = tempdir();

    let wrong_key = write_key_file(
        dir.path(),
        "wrong-key.json",
        &emu.token_uri(),
        &other_key().private_pem,
    );
    let sa = ServiceAccount::from_file(&wrong_key).unwrap();
    let failure = expect_failure(
        sa.fetch(&http(), HEALTHCARE_SCOPE).await,
        ErrorCode::Auth001,
    );
    assert!(!failure.retryable);
    let message = failure.error.to_string();
    assert!(message.contains("invalid_grant"), "{message}");
    assert!(message.contains("Invalid JWT Signature"), "{message}");

    let mut json = emu.service_account_json(
        "someone-else@emulated-project.iam.gserviceaccount.com",
        &key().private_pem,
        KID,
    );
    let sa = ServiceAccount::from_json(&json.to_string()).unwrap();
    let failure = expect_failure(
        sa.fetch(&http(), HEALTHCARE_SCOPE).await,
        ErrorCode::Auth001,
    );
    assert!(
        failure.error.to_string().contains("account not found"),
        "{}",
        failure.error
    );

    json["client_email"] = EMAIL.into();
    json["private_key_id"] = "0000000000000000000000000000000000000000".into();
    let sa = ServiceAccount::from_json(&json.to_string()).unwrap();
    expect_failure(
        sa.fetch(&http(), HEALTHCARE_SCOPE).await,
        ErrorCode::Auth001,
    );

    let stats = emu.stats();
    assert_eq!(stats["token_requests"], 3);
    assert_eq!(stats["tokens_issued"], 0);
}

/// Google requires a scope: without one the answer is `invalid_scope`, AUTH-002.
#[tokio::test]
async fn missing_scope_is_auth002() {
    let emu = emulator();
    let path = emu.write_service_account("sa.json", EMAIL, &key().private_pem, KID);
    let sa = ServiceAccount::from_file(&path).unwrap();
    let failure = expect_failure(sa.fetch(&http(), "").await, ErrorCode::Auth002);
    assert!(!failure.retryable);
    assert!(failure.error.to_string().contains("invalid_scope"));
    assert!(emu.stats()["last_assertion_claims"].get("scope").is_none());
}

/// SPEC 3.2: a token endpoint that cannot be reached is NET-002 and worth a retry.
#[tokio::test]
async fn token_endpoint_down_is_net002() {
    let port = testkit::free_port();
    let dir = tempdir();
    let path = write_key_file(
        dir.path(),
        "sa.json",
        &format!("http://127.0.0.1:{port}/token"),
        &key().private_pem,
    );
    let sa = ServiceAccount::from_file(&path).unwrap();
    let failure = expect_failure(sa.fetch(&http(), HEALTHCARE_SCOPE).await, ErrorCode::Net002);
    assert!(failure.retryable);
}

/// SPEC 3.2 over RFC 6749 §5.1/§5.2: answers that are not token responses are
/// TOK-005 (not retried); 5xx and 429 mean the provider is unavailable, AUTH-003
/// (retried, Retry-After kept). The request itself is RFC 7523 §2.1's.
#[tokio::test]
async fn malformed_and_unavailable_token_endpoint() {
    let server = FaultServer::start(vec![
        Fault::text(200, "text/html", "<html>Sign in</html>"),
        Fault::json(200, json!({"token_type": "Bearer", "expires_in": 3599})),
        Fault::json(503, json!({"error": "backendError"})).with_header("Retry-After", "7"),
    ]);
    let dir = tempdir();
    let path = write_key_file(
        dir.path(),
        "sa.json",
        &server.url("/token"),
        &key().private_pem,
    );
    let sa = ServiceAccount::from_file(&path).unwrap();
    for _ in 0..2 {
        let failure = expect_failure(sa.fetch(&http(), HEALTHCARE_SCOPE).await, ErrorCode::Tok005);
        assert!(!failure.retryable);
    }
    let failure = expect_failure(
        sa.fetch(&http(), HEALTHCARE_SCOPE).await,
        ErrorCode::Auth003,
    );
    assert!(failure.retryable);
    assert_eq!(failure.retry_after, Some(Duration::from_secs(7)));

    // The request on the wire: RFC 7523 §2.1, form-encoded, to token_uri.
    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    let first = &requests[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.path, "/token");
    assert_eq!(
        first.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let form = first.form();
    let names: Vec<&str> = form.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["grant_type", "assertion"]);
    assert_eq!(form[0].1, JWT_BEARER_GRANT);
    assert_eq!(form[1].1.split('.').count(), 3, "a compact JWS");
}

/// The emulator itself refuses every malformed grant the way Google documents
/// ("JWT error codes"; RFC 7523 §3): hand-made assertions, one fault each.
#[test]
fn emulator_checks_every_claim() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let emu = emulator();
    let client = HttpClient::new();
    let signing_key = EncodingKey::from_rsa_pem(key().private_pem.as_bytes()).unwrap();
    let now = unix_now();
    let good = json!({
        "iss": EMAIL, "scope": HEALTHCARE_SCOPE, "aud": emu.token_uri(), "iat": now, "exp": now + 3600,
    });
    let sign = |claims: &Value, kid: &str| {
        let mut header = Header::new(Algorithm::RS256);
        header.typ = Some("JWT".into());
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, claims, &signing_key).unwrap()
    };
    let post = |grant_type: &str, assertion: Option<&str>| {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", grant_type);
        if let Some(a) = assertion {
            form.append_pair("assertion", a);
        }
        client.post(
            &emu.token_uri(),
            "application/x-www-form-urlencoded",
            form.finish().as_bytes(),
        )
    };
    let with = |name: &str, value: Value| {
        let mut claims = good.clone();
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(name);
        } else {
            claims[name] = value;
        }
        claims
    };
    let expect = |reply: testkit::Reply, error: &str, description: &str| {
        assert_eq!(reply.status, 400, "{}", reply.text());
        let body = reply.json();
        assert_eq!(body["error"], error, "{body}");
        let text = body["error_description"].as_str().unwrap_or_default();
        assert!(text.contains(description), "{body}");
    };

    let ok = post(JWT_BEARER_GRANT, Some(&sign(&good, KID)));
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["token_type"], "Bearer");

    expect(
        post("client_credentials", Some(&sign(&good, KID))),
        "unsupported_grant_type",
        "Invalid grant_type",
    );
    expect(post(JWT_BEARER_GRANT, None), "invalid_request", "assertion");
    expect(
        post(JWT_BEARER_GRANT, Some(&sign(&good, "another-kid"))),
        "invalid_grant",
        "Invalid JWT Signature.",
    );
    // A valid signature over other claims: the signature check fails.
    let forged = {
        let genuine = sign(&good, KID);
        let other = sign(
            &with(
                "scope",
                "https://www.googleapis.com/auth/cloud-platform".into(),
            ),
            KID,
        );
        let g: Vec<&str> = genuine.split('.').collect();
        let o: Vec<&str> = other.split('.').collect();
        format!("{}.{}.{}", g[0], o[1], g[2])
    };
    expect(
        post(JWT_BEARER_GRANT, Some(&forged)),
        "invalid_grant",
        "Invalid JWT Signature.",
    );
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &good,
        &EncodingKey::from_secret(key().public_pem.as_bytes()),
    )
    .unwrap();
    expect(
        post(JWT_BEARER_GRANT, Some(&hs256)),
        "invalid_grant",
        "Invalid JWT Signature.",
    );
    expect(
        post(
            JWT_BEARER_GRANT,
            Some(&sign(
                &with("iss", "x@y.iam.gserviceaccount.com".into()),
                KID,
            )),
        ),
        "invalid_grant",
        "account not found",
    );
    expect(
        post(
            JWT_BEARER_GRANT,
            Some(&sign(
                &with("aud", "https://oauth2.googleapis.com/token".into()),
                KID,
            )),
        ),
        "invalid_grant",
        "Failed audience check",
    );
    for claims in [
        with("exp", (now + 3601).into()),
        with("exp", (now - 10).into()),
        with("iat", (now - 600).into()),
        with("iat", (now + 600).into()),
        with("iat", Value::Null),
        with("exp", "soon".into()),
    ] {
        expect(
            post(JWT_BEARER_GRANT, Some(&sign(&claims, KID))),
            "invalid_grant",
            "Token must be a short-lived token (60 minutes)",
        );
    }
    expect(
        post(
            JWT_BEARER_GRANT,
            Some(&sign(&with("scope", Value::Null), KID)),
        ),
        "invalid_scope",
        "Invalid OAuth scope",
    );
    expect(
        post(JWT_BEARER_GRANT, Some("not.a-jwt")),
        "invalid_grant",
        "Invalid JWT",
    );
    let stats = emu.stats();
    assert_eq!(stats["tokens_issued"], 1);
    assert_eq!(stats["token_requests"], 16);
}

// ---------------------------------------------------------------------------
// Metadata server
// ---------------------------------------------------------------------------

/// "Storing and retrieving instance metadata": `GET
/// /computeMetadata/v1/instance/service-accounts/default/token` with
/// `Metadata-Flavor: Google`, the host overridden as `GCE_METADATA_HOST` does;
/// a named account and the `scopes` parameter.
#[tokio::test]
async fn metadata_server_gets_a_token() {
    let emu = emulator();
    let http = metadata_http_client(Duration::from_secs(20)).unwrap();

    let env_host = emu.metadata_host();
    let env = move |name: &str| (name == "GCE_METADATA_HOST").then(|| env_host.clone());
    let default = MetadataServer::with_env(None, None, None, &env);
    assert_eq!(default.host(), emu.metadata_host());
    assert_eq!(default.account(), "default");
    let token = default.fetch(&http).await.unwrap();
    assert!(token.access_token.expose().starts_with("ya29."));
    assert_eq!(token.expires_in, Some(Duration::from_secs(3599)));
    let request = &emu.stats()["last_metadata_request"];
    assert_eq!(request["method"], "GET");
    assert_eq!(
        request["path"],
        "/computeMetadata/v1/instance/service-accounts/default/token"
    );
    assert_eq!(request["metadata_flavor"], "Google");
    assert_eq!(request["x_forwarded_for"], Value::Null);
    assert_eq!(request["query"], json!({}));

    let named = MetadataServer::new(
        Some(emu.metadata_host()),
        Some(VM_EMAIL.into()),
        Some(HEALTHCARE_SCOPE.into()),
    );
    let second = named.fetch(&http).await.unwrap();
    assert_ne!(second.access_token.expose(), token.access_token.expose());
    let request = &emu.stats()["last_metadata_request"];
    assert_eq!(
        request["path"],
        format!("/computeMetadata/v1/instance/service-accounts/{VM_EMAIL}/token")
    );
    assert_eq!(request["query"]["scopes"], HEALTHCARE_SCOPE);
    assert_eq!(request["metadata_flavor"], "Google");
    assert_eq!(emu.stats()["metadata_requests"], 2);
    assert_secret_free(
        "FetchedToken's Debug",
        &format!("{token:?} {second:?} {named:?}"),
        &[token.access_token.expose(), second.access_token.expose()],
    );
}

/// A service account the instance does not have is 404: AUTH-001 naming it.
/// So is the default account of an instance without one.
#[tokio::test]
async fn metadata_unknown_account_is_auth001() {
    let emu = emulator();
    let http = metadata_http_client(Duration::from_secs(20)).unwrap();
    let other = "nobody@emulated-project.iam.gserviceaccount.com";
    let server = MetadataServer::new(Some(emu.metadata_host()), Some(other.into()), None);
    let failure = expect_failure(server.fetch(&http).await, ErrorCode::Auth001);
    assert!(!failure.retryable);
    let message = failure.error.to_string();
    assert!(
        message.contains(other) && message.contains("404"),
        "{message}"
    );

    let bare = GoogleEmulator::start(&config(json!({"metadataAccount": null})));
    let server = MetadataServer::new(Some(bare.metadata_host()), None, None);
    let failure = expect_failure(server.fetch(&http).await, ErrorCode::Auth001);
    assert!(failure.error.to_string().contains("'default'"));
}

/// The emulator refuses what the real metadata server refuses: no
/// `Metadata-Flavor: Google` header, or an `X-Forwarded-For` header (403,
/// with `Metadata-Flavor: Google` on the answer).
#[test]
fn metadata_emulator_refuses_like_google() {
    let emu = emulator();
    let client = HttpClient::new();
    let url = format!(
        "{}/computeMetadata/v1/instance/service-accounts/default/token",
        emu.url
    );
    let reply = client.request("GET", &url, &[], None);
    assert_eq!(reply.status, 403);
    assert_eq!(reply.header("metadata-flavor"), Some("Google"));
    assert!(reply
        .text()
        .contains("Missing Metadata-Flavor:Google header."));
    let reply = client.request(
        "GET",
        &url,
        &[
            ("Metadata-Flavor", "Google"),
            ("X-Forwarded-For", "10.0.0.9"),
        ],
        None,
    );
    assert_eq!(reply.status, 403);
    let reply = client.request("GET", &url, &[("Metadata-Flavor", "Google")], None);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["token_type"], "Bearer");
    let email = client.request(
        "GET",
        &format!(
            "{}/computeMetadata/v1/instance/service-accounts/default/email",
            emu.url
        ),
        &[("Metadata-Flavor", "Google")],
        None,
    );
    assert_eq!(email.text(), VM_EMAIL);
}

/// SPEC 3.2: an unreachable metadata server is NET-002, retryable.
#[tokio::test]
async fn metadata_server_down_is_net002() {
    let port = testkit::free_port();
    let http = metadata_http_client(Duration::from_secs(20)).unwrap();
    let server = MetadataServer::new(Some(format!("127.0.0.1:{port}")), None, None);
    let failure = expect_failure(server.fetch(&http).await, ErrorCode::Net002);
    assert!(failure.retryable);
}

/// "Storing and retrieving instance metadata" (every answer of the metadata
/// server carries `Metadata-Flavor: Google`) and SPEC 3.2. Junk from the
/// metadata host — a page, an answer without the `Metadata-Flavor: Google`
/// response header (not a metadata server), JSON without a token — is TOK-005;
/// 403 is AUTH-001 (its text kept); 503 AUTH-003.
#[tokio::test]
async fn metadata_server_malformed_answers() {
    let token =
        json!({"access_token": "ya29.not-from-google", "expires_in": 3599, "token_type": "Bearer"});
    let server = FaultServer::start(vec![
        Fault::text(200, "text/html", "<html>proxy login</html>").with_header("Metadata-Flavor", "Google"),
        Fault::json(200, token),
        Fault::json(200, json!({"expires_in": 3599})).with_header("Metadata-Flavor", "Google"),
        Fault::text(403, "text/plain; charset=utf-8", "GKE Metadata Server encountered an error: Missing required header \"Metadata-Flavor\": \"Google\"")
            .with_header("Metadata-Flavor", "Google"),
        Fault::text(503, "text/plain", "unavailable").with_header("Metadata-Flavor", "Google"),
    ]);
    let http = metadata_http_client(Duration::from_secs(20)).unwrap();
    let metadata = MetadataServer::new(Some(format!("127.0.0.1:{}", server.port())), None, None);
    for expected in ["not a JSON object", "Metadata-Flavor", "no access_token"] {
        let failure = expect_failure(metadata.fetch(&http).await, ErrorCode::Tok005);
        assert!(!failure.retryable);
        let message = failure.error.to_string();
        assert!(message.contains(expected), "{message}");
    }
    let failure = expect_failure(metadata.fetch(&http).await, ErrorCode::Auth001);
    assert!(failure
        .error
        .to_string()
        .contains("Missing required header"));
    let failure = expect_failure(metadata.fetch(&http).await, ErrorCode::Auth003);
    assert!(failure.retryable);
    for request in server.requests() {
        assert_eq!(request.method, "GET");
        assert_eq!(request.header("metadata-flavor"), Some("Google"));
        assert_eq!(request.header("x-forwarded-for"), None);
    }
}

// ---------------------------------------------------------------------------
// Token lifetimes
// ---------------------------------------------------------------------------

/// Google's token answer (`expires_in`, RFC 6749 §5.1): a token expiring in
/// under 60 s is returned as it is; the token manager decides whether to use it.
#[tokio::test]
async fn short_tokens_are_returned_with_their_lifetime() {
    let emu = GoogleEmulator::start(&config(json!({"tokenLifetime": 30})));
    let path = emu.write_service_account("sa.json", EMAIL, &key().private_pem, KID);
    let sa = ServiceAccount::from_file(&path).unwrap();
    let token = sa.fetch(&http(), HEALTHCARE_SCOPE).await.unwrap();
    assert_eq!(token.expires_in, Some(Duration::from_secs(29)));
    let metadata = MetadataServer::new(Some(emu.metadata_host()), None, None);
    let http = metadata_http_client(Duration::from_secs(20)).unwrap();
    let token = metadata.fetch(&http).await.unwrap();
    assert_eq!(token.expires_in, Some(Duration::from_secs(29)));
}

// ---------------------------------------------------------------------------
// Key files that cannot be used
// ---------------------------------------------------------------------------

/// Google's service-account key file format ("Creating and managing service
/// account keys"): missing or unreadable files, content that is not a
/// service-account key, a key that is not an RSA private key are CFG-002 (SPEC
/// 3.2) naming the path or the field, never quoting key material.
#[test]
fn unusable_key_files_are_cfg002() {
    let dir = tempdir();
    let valid = json!({
        "type": "service_account",
        "project_id": "emulated-project",
        "private_key_id": KID,
        "private_key": key().private_pem,
        "client_email": EMAIL,
        "token_uri": "https://oauth2.googleapis.com/token",
    });
    let with = |name: &str, value: Value| {
        let mut json = valid.clone();
        if value.is_null() {
            json.as_object_mut().unwrap().remove(name);
        } else {
            json[name] = value;
        }
        json.to_string()
    };
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    // The valid file loads, with Google's default token_uri when it has none.
    let sa =
        ServiceAccount::from_file(&write("valid.json", &with("token_uri", Value::Null))).unwrap();
    assert_eq!(
        sa.token_uri().as_str(),
        "https://oauth2.googleapis.com/token"
    );

    let missing = dir.path().join("absent.json");
    let m = expect_cfg002(ServiceAccount::from_file(&missing));
    assert!(
        m.contains("cannot read") && m.contains("absent.json"),
        "{m}"
    );
    let m = expect_cfg002(ServiceAccount::from_file(dir.path()));
    assert!(m.contains("cannot read"), "{m}");

    for (field, expected) in [
        ("private_key", "'private_key' is missing"),
        ("client_email", "'client_email' is missing"),
        ("type", "'type' is missing"),
    ] {
        let m = expect_cfg002(ServiceAccount::from_file(&write(
            "f.json",
            &with(field, Value::Null),
        )));
        assert!(m.contains(expected) && m.contains("f.json"), "{m}");
        let m = expect_cfg002(ServiceAccount::from_json(&with(field, Value::Null)));
        assert!(m.contains(expected), "{m}");
    }
    let m = expect_cfg002(ServiceAccount::from_json(&with("private_key", "".into())));
    assert!(m.contains("'private_key' is empty"), "{m}");
    let m = expect_cfg002(ServiceAccount::from_json(&with(
        "private_key",
        json!(["x"]),
    )));
    assert!(m.contains("'private_key' must be a string"), "{m}");

    // An unreadable key: PEM armour around a damaged body (half of it gone).
    let damaged: String = {
        let lines: Vec<&str> = key().private_pem.lines().collect();
        let keep = lines.len() / 2;
        let mut out: Vec<&str> = lines[..keep].to_vec();
        out.push(lines[lines.len() - 1]);
        out.join("\n")
    };
    let m = expect_cfg002(ServiceAccount::from_json(&with(
        "private_key",
        damaged.into(),
    )));
    assert!(
        m.contains("'private_key' is not a valid RSA private key"),
        "{m}"
    );
    // Base64 that is not base64.
    let garbled = key().private_pem.replacen("MII", "!!!", 1);
    let m = expect_cfg002(ServiceAccount::from_json(&with(
        "private_key",
        garbled.into(),
    )));
    assert!(m.contains("'private_key'"), "{m}");
    // An EC key is not a service-account key.
    let ec = generate("ES256");
    let m = expect_cfg002(ServiceAccount::from_json(&with(
        "private_key",
        ec.private_pem.clone().into(),
    )));
    assert!(
        m.contains("'private_key' is not a valid RSA private key"),
        "{m}"
    );
    assert!(!m.contains(ec.private_pem.lines().nth(1).unwrap()), "{m}");
    // The PEM file itself given as the key file (a common mistake).
    let m = expect_cfg002(ServiceAccount::from_file(&write(
        "key.pem",
        &key().private_pem,
    )));
    assert!(m.contains("not valid JSON"), "{m}");
    // JSON broken in the middle of the key.
    let text = valid.to_string();
    let cut = &text[..text.find("-----END").unwrap()];
    let m = expect_cfg002(ServiceAccount::from_json(cut));
    assert!(m.contains("not valid JSON"), "{m}");
    // Other credential types.
    let m = expect_cfg002(ServiceAccount::from_json(&with(
        "type",
        "authorized_user".into(),
    )));
    assert!(m.contains("authorized_user"), "{m}");
    // A token_uri that would send the assertion in clear text.
    let m = expect_cfg002(ServiceAccount::from_json(&with(
        "token_uri",
        "http://oauth2.example.com/token".into(),
    )));
    assert!(m.contains("token_uri"), "{m}");
    // Not UTF-8.
    let path = dir.path().join("binary.json");
    std::fs::write(&path, [0xff, 0xfe, 0x00, 0x7b]).unwrap();
    let m = expect_cfg002(ServiceAccount::from_file(&path));
    assert!(m.contains("UTF-8"), "{m}");
}

// ---------------------------------------------------------------------------
// The Healthcare API URL
// ---------------------------------------------------------------------------

/// As Orthanc's Google Cloud Platform plugin builds it from Project, Location,
/// Dataset and DicomStore.
#[test]
fn healthcare_dicomweb_url_from_parts() {
    let url =
        healthcare_dicomweb_url(None, "my-project", "europe-west4", "imaging", "pacs-1").unwrap();
    assert_eq!(
        url.as_str(),
        "https://healthcare.googleapis.com/v1/projects/my-project/locations/europe-west4/datasets/imaging/dicomStores/pacs-1/dicomWeb"
    );
    let url = healthcare_dicomweb_url(Some("http://127.0.0.1:9/v1/"), "p", "l", "d", "s").unwrap();
    assert_eq!(
        url.as_str(),
        "http://127.0.0.1:9/v1/projects/p/locations/l/datasets/d/dicomStores/s/dicomWeb"
    );
    for (parts, key) in [
        (["", "l", "d", "s"], "Project"),
        (["p", "us/central1", "d", "s"], "Location"),
        (["p", "l", "../x", "s"], "Dataset"),
        (["p", "l", "d", "s?x=1"], "DicomStore"),
        (["p", "l", "d", ".."], "DicomStore"),
    ] {
        let error =
            healthcare_dicomweb_url(None, parts[0], parts[1], parts[2], parts[3]).unwrap_err();
        assert_eq!(error.code(), ErrorCode::Cfg002);
        assert!(error.to_string().contains(key), "{error}");
    }
}
