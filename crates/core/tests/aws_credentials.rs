//! The AWS credential chain against fixtures/aws-emulator: every source, the cache's refresh
//! before expiry, and the failure modes with their SPEC 3.2 codes and no secret in any message.
//!
//! Documents followed (named again on each test):
//! - [CHAIN] AWS SDKs and Tools Reference Guide, "Standardized credential providers":
//!   environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), "Assume
//!   role credential provider" with web identity (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN,
//!   AWS_ROLE_SESSION_NAME), "Container credential provider" (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI,
//!   _FULL_URI, AWS_CONTAINER_AUTHORIZATION_TOKEN, _TOKEN_FILE), "IMDS credential provider";
//! - [IMDS] Amazon EC2 User Guide, "Use the Instance Metadata Service to access instance
//!   metadata" (IMDSv2 session tokens) and "Retrieve security credentials from instance metadata";
//! - [ECS] Amazon ECS Developer Guide, "Amazon ECS task IAM role";
//! - [STS] AWS STS API Reference, "AssumeRoleWithWebIdentity" and "Common Errors".
//!
//! Token files are documented as read on every fetch: a missing file is TOK-001 at fetch time
//! (not CFG-002 at start), as for Azure's workload identity, since the kubelet may rotate or
//! re-project the file while Orthanc runs.

use dicomweb_oauth_core::credentials::aws::{
    AwsCredentialProvider, AwsCredentials, CredentialSource, EcsAuthorization, EndpointOverrides,
};
use dicomweb_oauth_core::credentials::FetchError;
use dicomweb_oauth_core::secret::Secret;
use dicomweb_oauth_core::{Error, ErrorCode};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use testkit::{assert_no_secrets, AwsEmulator, Fault, FaultServer};
use url::Url;

const REGION: &str = "us-east-1";
const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/orthanc-healthimaging";
const RELATIVE: &str = "/v2/credentials/3c8c4a8f-7f4e-4d6b-9f3a-0d5f6a0e2b71";
const FULL: &str = "/v1/credentials";
const ECS_AUTH: &str = "eks-pod-identity-authorization-token-7d41";
const STATIC_SECRET: &str = "static-secret-access-key-3b9e";
const ENV_SECRET: &str = "env-secret-access-key-81c2";
const ENV_TOKEN: &str = "env-session-token-55aa";

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

fn emulator(extra: Value) -> AwsEmulator {
    let mut config = json!({
        "credentialLifetime": 3600,
        "imds": {"role": "orthanc-healthimaging"},
        "ecs": {"relativePath": RELATIVE, "fullPath": FULL, "authorization": ECS_AUTH},
        "sts": {"roleArn": ROLE_ARN},
    });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    AwsEmulator::start(&config)
}

/// A mutable environment shared with a provider.
#[derive(Clone, Default)]
struct Env(Arc<Mutex<HashMap<String, String>>>);

impl Env {
    fn new(vars: &[(&str, &str)]) -> Env {
        let env = Env::default();
        for (k, v) in vars {
            env.set(k, v);
        }
        env
    }
    fn set(&self, k: &str, v: &str) {
        self.0.lock().unwrap().insert(k.into(), v.into());
    }
    fn remove(&self, k: &str) {
        self.0.lock().unwrap().remove(k);
    }
    fn get(&self, k: &str) -> Option<String> {
        self.0.lock().unwrap().get(k).cloned()
    }
    fn func(&self) -> impl Fn(&str) -> Option<String> + Send + Sync + 'static {
        let env = self.clone();
        move |k| env.get(k)
    }
}

fn overrides(emulator: &AwsEmulator) -> EndpointOverrides {
    EndpointOverrides {
        imds: Some(Url::parse(&emulator.imds_endpoint()).unwrap()),
        sts: Some(Url::parse(&emulator.sts_endpoint()).unwrap()),
        ecs_base: Some(Url::parse(&emulator.ecs_base()).unwrap()),
    }
}

fn detect(env: &Env, emulator: &AwsEmulator) -> CredentialSource {
    CredentialSource::detect(&env.func(), None, REGION, &overrides(emulator)).unwrap()
}

async fn fetch(source: &CredentialSource, env: &Env) -> Result<AwsCredentials, FetchError> {
    source.fetch(&http(), &env.func()).await
}

/// The last credentials the emulator issued: (access key id, secret, session token, expiration).
fn last_issued(emulator: &AwsEmulator) -> (String, String, String, String) {
    let stats = emulator.stats();
    let last = stats["issued"]
        .as_array()
        .and_then(|a| a.last())
        .cloned()
        .expect("credentials issued");
    let s = |k: &str| last[k].as_str().unwrap().to_owned();
    (
        s("AccessKeyId"),
        s("SecretAccessKey"),
        s("Token"),
        s("Expiration"),
    )
}

/// Every secret the emulator issued, for leak checks.
fn issued_secrets(emulator: &AwsEmulator) -> Vec<String> {
    emulator.stats()["issued"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| {
            [
                c["SecretAccessKey"].as_str().unwrap().to_owned(),
                c["Token"].as_str().unwrap().to_owned(),
            ]
        })
        .collect()
}

fn assert_matches_issued(credentials: &AwsCredentials, emulator: &AwsEmulator) {
    let (key, secret, token, expiration) = last_issued(emulator);
    assert_eq!(credentials.access_key_id, key);
    assert_eq!(credentials.secret_access_key.expose(), secret);
    assert_eq!(credentials.session_token.as_ref().unwrap().expose(), token);
    let expected = humantime::parse_rfc3339(&expiration)
        .unwrap()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(credentials.expires_at_unix, Some(expected));
    let debug = format!("{credentials:?}");
    assert_no_secrets("Debug of AwsCredentials", &debug, &[&secret, &token]);
    assert!(debug.contains(&key), "the access key id is shown: {debug}");
}

fn assert_error(e: &Error, code: ErrorCode, secrets: &[&str]) {
    assert_eq!(e.code(), code, "{e}");
    assert_no_secrets("an error message", &format!("{e} {e:?}"), secrets);
}

/// A JWT-shaped web identity token (as the kubelet projects one), expiring at `exp`.
fn web_identity_token(exp: u64, nonce: &str) -> String {
    use base64::Engine as _;
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.{}",
        b64(json!({"alg": "RS256", "kid": "k1"})),
        b64(json!({
            "iss": "https://oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE",
            "sub": "system:serviceaccount:pacs:orthanc",
            "aud": ["sts.amazonaws.com"],
            "exp": exp,
            "jti": nonce,
        })),
        "c2lnbmF0dXJlLW5vdC1jaGVja2VkLWJ5LXRoZS1lbXVsYXRvcg"
    )
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A loopback port with nothing listening (bound, then released).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    port
}

// ---------------------------------------------------------------------------------------------
// Static keys and the environment
// ---------------------------------------------------------------------------------------------

/// [CHAIN] Keys from the configuration are used as they are and win over everything else.
#[tokio::test]
async fn static_keys() {
    let keys = AwsCredentials {
        access_key_id: "AKIDSTATICEXAMPLE".into(),
        secret_access_key: Secret::new(STATIC_SECRET),
        session_token: None,
        expires_at_unix: None,
    };
    let env = Env::new(&[
        ("AWS_ACCESS_KEY_ID", "AKIDENV"),
        ("AWS_SECRET_ACCESS_KEY", ENV_SECRET),
    ]);
    let source = CredentialSource::detect(
        &env.func(),
        Some(keys),
        REGION,
        &EndpointOverrides::default(),
    )
    .unwrap();
    assert_eq!(source.kind(), "static");
    assert_no_secrets(
        "Debug of the source",
        &format!("{source:?}"),
        &[STATIC_SECRET],
    );
    let provider = AwsCredentialProvider::new(source, http());
    let c = provider.credentials().await.unwrap();
    assert_eq!(c.access_key_id, "AKIDSTATICEXAMPLE");
    assert_eq!(c.secret_access_key.expose(), STATIC_SECRET);
    assert_no_secrets(
        "Debug of the provider",
        &format!("{provider:?}"),
        &[STATIC_SECRET],
    );
}

/// [CHAIN] Environment variables, read again on every fetch (a rotated session token is seen).
#[tokio::test]
async fn environment_variables() {
    let env = Env::new(&[
        ("AWS_ACCESS_KEY_ID", "ASIAENVEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", ENV_SECRET),
        ("AWS_SESSION_TOKEN", ENV_TOKEN),
    ]);
    let source =
        CredentialSource::detect(&env.func(), None, REGION, &EndpointOverrides::default()).unwrap();
    assert_eq!(source.kind(), "environment");
    let c = fetch(&source, &env).await.unwrap();
    assert_eq!(c.access_key_id, "ASIAENVEXAMPLE");
    assert_eq!(c.secret_access_key.expose(), ENV_SECRET);
    assert_eq!(c.session_token.as_ref().unwrap().expose(), ENV_TOKEN);
    assert_eq!(c.expires_at_unix, None);

    env.set("AWS_SESSION_TOKEN", "rotated-token");
    let c = fetch(&source, &env).await.unwrap();
    assert_eq!(c.session_token.as_ref().unwrap().expose(), "rotated-token");
    env.remove("AWS_SESSION_TOKEN");
    assert!(fetch(&source, &env).await.unwrap().session_token.is_none());

    env.remove("AWS_SECRET_ACCESS_KEY");
    let e = fetch(&source, &env).await.unwrap_err();
    assert!(!e.retryable);
    assert_error(&e.error, ErrorCode::Cfg003, &[ENV_SECRET, ENV_TOKEN]);
    assert!(e.error.to_string().contains("AWS_SECRET_ACCESS_KEY"));
}

// ---------------------------------------------------------------------------------------------
// Container credential provider
// ---------------------------------------------------------------------------------------------

/// [ECS] AWS_CONTAINER_CREDENTIALS_RELATIVE_URI, relative to the ECS base (the emulator here).
#[tokio::test]
async fn ecs_relative_uri() {
    let emulator = emulator(json!({}));
    let env = Env::new(&[("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", RELATIVE)]);
    let source = detect(&env, &emulator);
    let CredentialSource::Ecs { uri, authorization } = &source else {
        panic!("{source:?}")
    };
    assert_eq!(uri.as_str(), format!("{}{RELATIVE}", emulator.url));
    assert!(authorization.is_none());
    let c = fetch(&source, &env).await.unwrap();
    assert_matches_issued(&c, &emulator);
    let stats = emulator.stats();
    assert_eq!(stats["ecs_requests"], 1);
    assert_eq!(stats["last_method"], "GET");
    assert_eq!(stats["last_path"], RELATIVE);
    assert!(stats["last_headers"].get("authorization").is_none());
}

/// [ECS][CHAIN] AWS_CONTAINER_CREDENTIALS_FULL_URI with AWS_CONTAINER_AUTHORIZATION_TOKEN (EKS
/// Pod Identity); a wrong token is AUTH-001 and the token is never printed.
#[tokio::test]
async fn ecs_full_uri_with_authorization_token() {
    let emulator = emulator(json!({}));
    let full = format!("{}{FULL}", emulator.url);
    let env = Env::new(&[
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &full),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN", ECS_AUTH),
    ]);
    let source = detect(&env, &emulator);
    assert!(matches!(
        &source,
        CredentialSource::Ecs {
            authorization: Some(EcsAuthorization::Token(_)),
            ..
        }
    ));
    assert_no_secrets("Debug of the source", &format!("{source:?}"), &[ECS_AUTH]);
    let c = fetch(&source, &env).await.unwrap();
    assert_matches_issued(&c, &emulator);
    assert_eq!(emulator.stats()["last_headers"]["authorization"], ECS_AUTH);

    let wrong = Env::new(&[
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &full),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN",
            "wrong-authorization-token",
        ),
    ]);
    let e = fetch(&detect(&wrong, &emulator), &wrong).await.unwrap_err();
    assert!(!e.retryable);
    assert_error(
        &e.error,
        ErrorCode::Auth001,
        &["wrong-authorization-token", ECS_AUTH],
    );

    // Without any token.
    let none = Env::new(&[("AWS_CONTAINER_CREDENTIALS_FULL_URI", &full)]);
    let e = fetch(&detect(&none, &emulator), &none).await.unwrap_err();
    assert_eq!(e.error.code(), ErrorCode::Auth001);
}

/// [ECS][CHAIN] AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE wins over the variable and is re-read
/// on every fetch (EKS rotates it); a missing file is TOK-001.
#[tokio::test]
async fn ecs_authorization_token_file_is_reread() {
    let emulator = emulator(json!({}));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("eks-pod-identity-token");
    std::fs::write(&file, format!("{ECS_AUTH}\n")).unwrap();
    let env = Env::new(&[
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            &format!("{}{FULL}", emulator.url),
        ),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "ignored-token"),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            file.to_str().unwrap(),
        ),
    ]);
    let source = detect(&env, &emulator);
    fetch(&source, &env).await.unwrap();
    assert_eq!(emulator.stats()["last_headers"]["authorization"], ECS_AUTH);

    std::fs::write(&file, "rotated-pod-identity-token").unwrap();
    emulator.configure(json!({"ecsAuthorization": "rotated-pod-identity-token"}));
    fetch(&source, &env).await.unwrap();
    assert_eq!(
        emulator.stats()["last_headers"]["authorization"],
        "rotated-pod-identity-token"
    );

    std::fs::remove_file(&file).unwrap();
    let e = fetch(&source, &env).await.unwrap_err();
    assert!(!e.retryable);
    assert_error(&e.error, ErrorCode::Tok001, &["rotated-pod-identity-token"]);
    assert!(
        e.error.to_string().contains("eks-pod-identity-token"),
        "{}",
        e.error
    );
}

// ---------------------------------------------------------------------------------------------
// IMDSv2
// ---------------------------------------------------------------------------------------------

/// [IMDS] A session token first (PUT with the TTL header), then the role, then its
/// credentials, each GET carrying X-aws-ec2-metadata-token.
#[tokio::test]
async fn imds_v2() {
    let emulator = emulator(json!({}));
    let env = Env::default();
    let source = detect(&env, &emulator);
    assert_eq!(source.kind(), "imds");
    let c = fetch(&source, &env).await.unwrap();
    assert_matches_issued(&c, &emulator);
    let stats = emulator.stats();
    assert_eq!(stats["imds_token_requests"], 1);
    assert_eq!(stats["imds_requests"], 3);
    assert_eq!(stats["imds_credential_requests"], 1);
    assert_eq!(
        stats["last_path"],
        "/latest/meta-data/iam/security-credentials/orthanc-healthimaging"
    );
    assert!(stats["last_headers"]["x-aws-ec2-metadata-token"].is_string());

    // AWS_EC2_METADATA_SERVICE_ENDPOINT moves it too.
    let env = Env::new(&[(
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        &emulator.imds_endpoint(),
    )]);
    let source =
        CredentialSource::detect(&env.func(), None, REGION, &EndpointOverrides::default()).unwrap();
    fetch(&source, &env).await.unwrap();
}

/// [IMDS] IMDSv2 required: a GET without a session token, or with a bad one, is 401; a 401
/// after a token was obtained is a retryable TOK-001 (the next attempt gets a new token).
#[tokio::test]
async fn imds_requires_a_session_token() {
    let emulator = emulator(json!({}));
    let client = http();
    let roles = format!(
        "{}/latest/meta-data/iam/security-credentials/",
        emulator.url
    );
    assert_eq!(
        client.get(&roles).send().await.unwrap().status().as_u16(),
        401
    );
    let bad = client
        .get(&roles)
        .header("X-aws-ec2-metadata-token", "not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 401);
    // The token request needs its TTL header, and is refused through a proxy.
    let token_url = format!("{}/latest/api/token", emulator.url);
    assert_eq!(
        client
            .put(&token_url)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        400
    );
    let proxied = client
        .put(&token_url)
        .header("X-aws-ec2-metadata-token-ttl-seconds", "60")
        .header("X-Forwarded-For", "10.0.0.1")
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status().as_u16(), 403);

    let server = FaultServer::start(vec![
        Fault::text(200, "text/plain", "AQAEAmaybe-a-session-token=="),
        Fault::text(401, "text/plain", "401 - Unauthorized"),
    ]);
    let source = CredentialSource::Imds {
        endpoint: Url::parse(&server.url("/")).unwrap(),
    };
    let e = fetch(&source, &Env::default()).await.unwrap_err();
    assert!(e.retryable);
    assert_error(
        &e.error,
        ErrorCode::Tok001,
        &["AQAEAmaybe-a-session-token=="],
    );
    let requests = server.requests();
    assert_eq!(requests[0].method, "PUT");
    assert_eq!(requests[0].path, "/latest/api/token");
    assert_eq!(
        requests[0].header("x-aws-ec2-metadata-token-ttl-seconds"),
        Some("21600")
    );
    assert_eq!(requests[1].method, "GET");
    assert_eq!(
        requests[1].header("x-aws-ec2-metadata-token"),
        Some("AQAEAmaybe-a-session-token==")
    );
}

/// [IMDS] No instance profile (404 on the role list) is TOK-001 naming the cause; an answer
/// whose Code is not Success is TOK-001; one that is not JSON is TOK-005.
#[tokio::test]
async fn imds_without_role_or_with_bad_answers() {
    let emulator = emulator(json!({"imds": {"role": null}}));
    let env = Env::default();
    let source = detect(&env, &emulator);
    let e = fetch(&source, &env).await.unwrap_err();
    assert!(!e.retryable);
    assert_eq!(e.error.code(), ErrorCode::Tok001);
    assert!(e.error.to_string().contains("IAM role"), "{}", e.error);

    let server = FaultServer::start(vec![
        Fault::text(200, "text/plain", "t0ken"),
        Fault::text(200, "text/plain", "orthanc-role\n"),
        Fault::json(
            200,
            json!({"Code": "AssumeRoleUnauthorizedAccess", "Message": "denied", "LastUpdated": "2024-01-01T00:00:00Z"}),
        ),
    ]);
    let source = CredentialSource::Imds {
        endpoint: Url::parse(&server.url("/")).unwrap(),
    };
    let e = fetch(&source, &env).await.unwrap_err();
    assert_eq!(e.error.code(), ErrorCode::Tok001);
    assert!(e.error.to_string().contains("AssumeRoleUnauthorizedAccess"));
    assert_eq!(
        server.requests()[2].path,
        "/latest/meta-data/iam/security-credentials/orthanc-role"
    );

    server.set_script(vec![
        Fault::text(200, "text/plain", "t0ken"),
        Fault::text(200, "text/plain", "orthanc-role"),
        Fault::text(200, "text/html", "<html>captive portal</html>"),
    ]);
    let e = fetch(&source, &env).await.unwrap_err();
    assert_eq!(e.error.code(), ErrorCode::Tok005);
}

// ---------------------------------------------------------------------------------------------
// Web identity (STS AssumeRoleWithWebIdentity)
// ---------------------------------------------------------------------------------------------

fn web_identity_env(emulator: &AwsEmulator, file: &Path) -> (Env, CredentialSource) {
    let env = Env::new(&[
        ("AWS_WEB_IDENTITY_TOKEN_FILE", file.to_str().unwrap()),
        ("AWS_ROLE_ARN", ROLE_ARN),
        ("AWS_ROLE_SESSION_NAME", "orthanc-pod-1"),
        // Web identity comes before the container and IMDS sources.
        ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", RELATIVE),
    ]);
    let source = detect(&env, emulator);
    (env, source)
}

/// [STS][CHAIN] The token file's content is sent as WebIdentityToken, re-read on every fetch;
/// the XML answer's credentials are used.
#[tokio::test]
async fn web_identity_via_sts() {
    let first = web_identity_token(now_unix() + 3600, "first");
    let second = web_identity_token(now_unix() + 3600, "second");
    let emulator = emulator(json!({
        "sts": {"roleArn": ROLE_ARN, "webIdentityTokens": [first, second]},
    }));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, &first).unwrap();
    let (env, source) = web_identity_env(&emulator, &file);
    let CredentialSource::WebIdentity {
        role_arn,
        session_name,
        sts_endpoint,
        ..
    } = &source
    else {
        panic!("{source:?}")
    };
    assert_eq!(role_arn, ROLE_ARN);
    assert_eq!(session_name, "orthanc-pod-1");
    assert_eq!(sts_endpoint.as_str(), emulator.sts_endpoint());

    let c = fetch(&source, &env).await.unwrap();
    assert_matches_issued(&c, &emulator);
    let stats = emulator.stats();
    assert_eq!(stats["sts_requests"], 1);
    assert_eq!(stats["last_method"], "POST");
    let params = &stats["last_sts_params"];
    assert_eq!(params["Action"], "AssumeRoleWithWebIdentity");
    assert_eq!(params["Version"], "2011-06-15");
    assert_eq!(params["RoleArn"], ROLE_ARN);
    assert_eq!(params["RoleSessionName"], "orthanc-pod-1");
    assert_eq!(params["WebIdentityToken"], first.as_str());
    assert!(
        stats["last_headers"].get("authorization").is_none(),
        "the call is not signed"
    );

    // The kubelet rotates the token: the next fetch sends the new one.
    std::fs::write(&file, format!("{second}\n")).unwrap();
    let c2 = fetch(&source, &env).await.unwrap();
    assert_eq!(
        emulator.stats()["last_sts_params"]["WebIdentityToken"],
        second.as_str()
    );
    assert_ne!(c.access_key_id, c2.access_key_id);
}

/// [STS] Refusals: AccessDenied (a role the identity may not assume) and InvalidIdentityToken
/// are AUTH-001, ExpiredTokenException is TOK-002, none retryable, the token never printed; a
/// missing token file is TOK-001 at fetch time; a malformed answer is TOK-005; 5xx is AUTH-003
/// and retryable.
#[tokio::test]
async fn web_identity_failures() {
    let good = web_identity_token(now_unix() + 3600, "good");
    let emulator = emulator(json!({
        "sts": {"roleArn": ROLE_ARN, "webIdentityTokens": [good]},
    }));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, &good).unwrap();

    // AccessDenied: another role.
    let env = Env::new(&[
        ("AWS_WEB_IDENTITY_TOKEN_FILE", file.to_str().unwrap()),
        (
            "AWS_ROLE_ARN",
            "arn:aws:iam::123456789012:role/someone-else",
        ),
    ]);
    let source = detect(&env, &emulator);
    let e = fetch(&source, &env).await.unwrap_err();
    assert!(!e.retryable);
    assert_error(&e.error, ErrorCode::Auth001, &[&good]);
    assert!(e.error.to_string().contains("AccessDenied"), "{}", e.error);

    let (env, source) = web_identity_env(&emulator, &file);

    // InvalidIdentityToken: a token the provider does not know.
    let unknown = web_identity_token(now_unix() + 3600, "unknown");
    std::fs::write(&file, &unknown).unwrap();
    let e = fetch(&source, &env).await.unwrap_err();
    assert_error(&e.error, ErrorCode::Auth001, &[&unknown]);
    assert!(e.error.to_string().contains("InvalidIdentityToken"));

    // ExpiredTokenException.
    let expired = web_identity_token(now_unix() - 60, "expired");
    std::fs::write(&file, &expired).unwrap();
    let e = fetch(&source, &env).await.unwrap_err();
    assert!(!e.retryable);
    assert_error(&e.error, ErrorCode::Tok002, &[&expired]);

    // Missing and empty token files.
    std::fs::remove_file(&file).unwrap();
    let e = fetch(&source, &env).await.unwrap_err();
    assert!(!e.retryable);
    assert_eq!(e.error.code(), ErrorCode::Tok001);
    assert!(
        e.error.to_string().contains("AWS_WEB_IDENTITY_TOKEN_FILE"),
        "{}",
        e.error
    );
    std::fs::write(&file, "  \n").unwrap();
    assert_eq!(
        fetch(&source, &env).await.unwrap_err().error.code(),
        ErrorCode::Tok001
    );

    // Malformed answers.
    std::fs::write(&file, &good).unwrap();
    emulator.inject(
        "sts",
        200,
        1,
        Some(json!("<AssumeRoleWithWebIdentityResponse><unclosed>")),
        json!({"Content-Type": "text/xml"}),
    );
    let e = fetch(&source, &env).await.unwrap_err();
    assert_error(&e.error, ErrorCode::Tok005, &[&good]);
    emulator.inject("sts", 200, 1, Some(json!({"Credentials": {}})), json!({}));
    assert_eq!(
        fetch(&source, &env).await.unwrap_err().error.code(),
        ErrorCode::Tok005
    );
    emulator.inject(
        "sts",
        200,
        1,
        Some(json!("<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>ASIA</AccessKeyId></Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>")),
        json!({"Content-Type": "text/xml"}),
    );
    assert_eq!(
        fetch(&source, &env).await.unwrap_err().error.code(),
        ErrorCode::Tok005
    );

    // STS unavailable.
    emulator.inject(
        "sts",
        503,
        1,
        Some(json!(
            "<ErrorResponse><Error><Code>ServiceUnavailable</Code></Error></ErrorResponse>"
        )),
        json!({"Retry-After": "3"}),
    );
    let e = fetch(&source, &env).await.unwrap_err();
    assert!(e.retryable);
    assert_eq!(e.error.code(), ErrorCode::Auth003);
    assert_eq!(e.retry_after, Some(Duration::from_secs(3)));

    // And it works again.
    fetch(&source, &env).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// The cache: refresh before expiry, one fetch at a time
// ---------------------------------------------------------------------------------------------

fn ecs_provider(emulator: &AwsEmulator) -> AwsCredentialProvider {
    let env = Env::new(&[("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", RELATIVE)]);
    AwsCredentialProvider::new(detect(&env, emulator), http()).with_env(Arc::new(env.func()))
}

/// [CHAIN] Credentials are reused until 5 minutes before their Expiration, then refreshed.
#[tokio::test]
async fn refresh_before_expiry() {
    let emulator = emulator(json!({"credentialLifetime": 3600}));
    let provider = ecs_provider(&emulator);
    let a = provider.credentials().await.unwrap();
    let b = provider.credentials().await.unwrap();
    assert_eq!(a.access_key_id, b.access_key_id);
    assert_eq!(emulator.stats()["ecs_requests"], 1);

    // Credentials valid for 200 s are inside the 300 s refresh window: each call (with no pause
    // between refreshes) fetches new ones, before they expire.
    emulator.configure(json!({"credentialLifetime": 200}));
    let provider = ecs_provider(&emulator).with_retry_interval(Duration::ZERO);
    let a = provider.credentials().await.unwrap();
    let b = provider.credentials().await.unwrap();
    assert_ne!(a.access_key_id, b.access_key_id);
    assert_eq!(emulator.stats()["ecs_requests"], 3);
    assert!(b.expires_at_unix.unwrap() > now_unix() + 100);

    // With the default pause, a refresh just done is not repeated at once.
    let provider = ecs_provider(&emulator);
    provider.credentials().await.unwrap();
    provider.credentials().await.unwrap();
    assert_eq!(emulator.stats()["ecs_requests"], 4);

    // A smaller window keeps them.
    let provider = ecs_provider(&emulator)
        .with_refresh_before(Duration::from_secs(60))
        .with_retry_interval(Duration::ZERO);
    let a = provider.credentials().await.unwrap();
    let b = provider.credentials().await.unwrap();
    assert_eq!(a.access_key_id, b.access_key_id);
    assert_eq!(emulator.stats()["ecs_requests"], 5);

    // A failed refresh inside the window keeps the credentials still valid.
    let provider = ecs_provider(&emulator).with_retry_interval(Duration::ZERO);
    let a = provider.credentials().await.unwrap();
    emulator.inject("ecs", 500, 1, None, json!({}));
    let b = provider.credentials().await.unwrap();
    assert_eq!(a.access_key_id, b.access_key_id);
    assert_eq!(emulator.stats()["ecs_requests"], 7);

    // invalidate() drops them.
    provider.invalidate().await;
    let c = provider.credentials().await.unwrap();
    assert_ne!(c.access_key_id, a.access_key_id);
}

/// [CHAIN] Callers arriving together share one fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_callers_share_one_fetch() {
    let emulator = emulator(json!({}));
    let provider = Arc::new(ecs_provider(&emulator));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let provider = Arc::clone(&provider);
            tokio::spawn(async move { provider.credentials().await.unwrap().access_key_id })
        })
        .collect();
    let mut keys = Vec::new();
    for task in tasks {
        keys.push(task.await.unwrap());
    }
    keys.dedup();
    assert_eq!(keys.len(), 1);
    assert_eq!(emulator.stats()["ecs_requests"], 1);
}

// ---------------------------------------------------------------------------------------------
// Failure modes
// ---------------------------------------------------------------------------------------------

/// [ECS][IMDS][STS] An endpoint that does not answer is NET-002 and retryable, for every
/// network source and through the provider.
#[tokio::test]
async fn endpoint_down_is_net002() {
    let port = closed_port();
    let base = Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "a-web-identity-token").unwrap();
    let sources = [
        CredentialSource::Ecs {
            uri: base.join(RELATIVE).unwrap(),
            authorization: Some(EcsAuthorization::Token(Secret::new(ECS_AUTH))),
        },
        CredentialSource::Imds {
            endpoint: base.clone(),
        },
        CredentialSource::WebIdentity {
            token_file: file.clone(),
            role_arn: ROLE_ARN.into(),
            session_name: "s1".into(),
            sts_endpoint: base.clone(),
        },
    ];
    for source in sources {
        let e = fetch(&source, &Env::default()).await.unwrap_err();
        assert!(e.retryable, "{}", source.kind());
        assert_error(
            &e.error,
            ErrorCode::Net002,
            &[ECS_AUTH, "a-web-identity-token"],
        );
        let provider = AwsCredentialProvider::new(source, http());
        assert_eq!(
            provider.credentials().await.unwrap_err().code(),
            ErrorCode::Net002
        );
    }
}

/// [ECS][IMDS] Answers that are not credentials are TOK-005; 5xx is AUTH-003 (retryable);
/// other refusals are TOK-001.
#[tokio::test]
async fn malformed_and_refused_answers() {
    let emulator = emulator(json!({}));
    let env = Env::new(&[("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", RELATIVE)]);
    let ecs = detect(&env, &emulator);
    let cases = [
        (
            200,
            json!("<html>not json</html>"),
            ErrorCode::Tok005,
            false,
        ),
        (
            200,
            json!({"AccessKeyId": "ASIA"}),
            ErrorCode::Tok005,
            false,
        ),
        (
            200,
            json!({"AccessKeyId": "ASIA", "SecretAccessKey": "leak-me-not", "Token": "t", "Expiration": "tomorrow"}),
            ErrorCode::Tok005,
            false,
        ),
        (500, json!({"message": "boom"}), ErrorCode::Auth003, true),
        (
            429,
            json!({"message": "slow down"}),
            ErrorCode::Auth003,
            true,
        ),
        (
            404,
            json!({"code": "InvalidIdInRequest"}),
            ErrorCode::Tok001,
            false,
        ),
    ];
    for (status, body, code, retryable) in cases {
        emulator.inject("ecs", status, 1, Some(body.clone()), json!({}));
        let e = fetch(&ecs, &env).await.unwrap_err();
        assert_eq!(e.retryable, retryable, "{status} {body}");
        assert_error(&e.error, code, &["leak-me-not"]);
    }

    let imds = detect(&Env::default(), &emulator);
    emulator.inject("imds", 200, 1, Some(json!("")), json!({}));
    assert_eq!(
        fetch(&imds, &env).await.unwrap_err().error.code(),
        ErrorCode::Tok005
    );
    emulator.inject("imds", 503, 1, None, json!({}));
    let e = fetch(&imds, &env).await.unwrap_err();
    assert!(e.retryable);
    assert_eq!(e.error.code(), ErrorCode::Auth003);
}

/// [CHAIN] Credentials that have already expired are TOK-002, from the source and the provider.
#[tokio::test]
async fn expired_credentials_are_tok002() {
    let emulator = emulator(json!({"credentialLifetime": -60}));
    let env = Env::new(&[("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", RELATIVE)]);
    let source = detect(&env, &emulator);
    let e = fetch(&source, &env).await.unwrap_err();
    assert!(!e.retryable);
    let secrets = issued_secrets(&emulator);
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    assert_error(&e.error, ErrorCode::Tok002, &secrets);
    let imds = detect(&Env::default(), &emulator);
    assert_eq!(
        fetch(&imds, &env).await.unwrap_err().error.code(),
        ErrorCode::Tok002
    );
    let provider = ecs_provider(&emulator);
    assert_eq!(
        provider.credentials().await.unwrap_err().code(),
        ErrorCode::Tok002
    );
}

/// Debug of every type shows no secret: credentials, each source, the provider, overrides.
#[tokio::test]
async fn debug_never_shows_a_secret() {
    let emulator = emulator(json!({}));
    let env = Env::default();
    let imds = detect(&env, &emulator);
    let c = fetch(&imds, &env).await.unwrap();
    let secret = c.secret_access_key.expose().to_owned();
    let token = c.session_token.as_ref().unwrap().expose().to_owned();
    let sources = vec![
        CredentialSource::Static(c.clone()),
        CredentialSource::Environment,
        CredentialSource::Ecs {
            uri: Url::parse("http://169.254.170.2/v2/credentials/x").unwrap(),
            authorization: Some(EcsAuthorization::Token(Secret::new(ECS_AUTH))),
        },
        imds,
        CredentialSource::WebIdentity {
            token_file: "/var/run/secrets/eks.amazonaws.com/serviceaccount/token".into(),
            role_arn: ROLE_ARN.into(),
            session_name: "s1".into(),
            sts_endpoint: Url::parse("https://sts.us-east-1.amazonaws.com/").unwrap(),
        },
    ];
    let mut text = format!("{c:?} {c:#?} {:?}", overrides(&emulator));
    for source in sources {
        text.push_str(&format!("{source:?} {source:#?}"));
        let provider = AwsCredentialProvider::new(source, http());
        text.push_str(&format!("{provider:?}"));
    }
    assert_no_secrets("Debug output", &text, &[&secret, &token, ECS_AUTH]);
    assert!(text.contains("[REDACTED]"));
}
