//! Azure credentials: managed identity (IMDS, App Service / Container Apps), workload identity
//! federation and Entra certificate credentials.
//!
//! Documents followed (Microsoft Learn), named again on each test:
//! - [IMDS] "How to use managed identities for Azure resources on an Azure VM to acquire an
//!   access token" (request, answer, error table, retry guidance);
//! - [APPSVC] "Managed identities for App Service and Azure Functions", REST endpoint reference
//!   (api-version 2019-08-01, X-IDENTITY-HEADER, expires_on);
//! - [WIF] "Workload identity federation" with the Azure SDKs' environment
//!   (AZURE_FEDERATED_TOKEN_FILE, AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_AUTHORITY_HOST);
//! - [CERT] "Microsoft identity platform application authentication certificate credentials".
//!
//! IMDS and App Service answer from fixtures/azure-emulator. Workload identity and certificate
//! assertions are verified by the real `oidc-provider` (fixtures/idp, private_key_jwt); for
//! workload identity the emulator serves Entra's `/{tenant}/oauth2/v2.0/token` path and forwards
//! the form unchanged to the provider (whose token path is `/token`).

use base64::Engine as _;
use dicomweb_oauth_core::credentials::azure::{self, CertificateCredential};
use dicomweb_oauth_core::credentials::azure_managed_identity::{ManagedIdentity, MIN_LIFETIME};
use dicomweb_oauth_core::credentials::client_credentials::sign_assertion;
use dicomweb_oauth_core::credentials::{token_response, FetchError, FetchedToken};
use dicomweb_oauth_core::ErrorCode;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use testkit::{assert_no_secrets, AzureEmulator, Idp};
use url::Url;

const IDENTITY_HEADER: &str = "emulator-identity-header-6f1c2b9d0e";
const USER_ASSIGNED: &str = "11111111-2222-4333-8444-555555555555";
const SHORT_LIVED: &str = "33333333-2222-4333-8444-555555555555";
const UNKNOWN_IDENTITY: &str = "99999999-2222-4333-8444-555555555555";
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const RESOURCE: &str = "https://dicom.healthcareapis.azure.com";

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

fn emulator() -> AzureEmulator {
    emulator_with(json!({}))
}

fn emulator_with(extra: Value) -> AzureEmulator {
    let mut config = json!({
        "port": 0,
        "identityHeader": IDENTITY_HEADER,
        "tokenLifetime": 3600,
        "systemAssigned": true,
        "knownClientIds": [USER_ASSIGNED],
        "shortLifetimeClientId": SHORT_LIVED,
        "shortLifetime": 30,
        "tenantId": TENANT,
    });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    AzureEmulator::start(&config)
}

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

fn imds(emulator: &AzureEmulator, client_id: Option<&str>) -> ManagedIdentity {
    let mi = ManagedIdentity::detect(
        &env(&[]),
        client_id.map(str::to_owned),
        Some(Url::parse(&emulator.imds_endpoint()).unwrap()),
    )
    .unwrap();
    assert!(matches!(mi, ManagedIdentity::Imds { .. }), "{mi:?}");
    mi
}

fn app_service(endpoint: &str, header: &str, client_id: Option<&str>) -> ManagedIdentity {
    let vars = env(&[("IDENTITY_ENDPOINT", endpoint), ("IDENTITY_HEADER", header)]);
    let mi = ManagedIdentity::detect(&vars, client_id.map(str::to_owned), None).unwrap();
    assert!(matches!(mi, ManagedIdentity::AppService { .. }), "{mi:?}");
    mi
}

fn claims(jwt: &str) -> Value {
    part(jwt, 1)
}

fn header(jwt: &str) -> Value {
    part(jwt, 0)
}

fn part(jwt: &str, index: usize) -> Value {
    let segment = jwt.split('.').nth(index).expect("a JWT");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(segment)
            .unwrap(),
    )
    .unwrap()
}

fn lifetime_secs(token: &FetchedToken) -> u64 {
    token.expires_in.expect("a lifetime").as_secs()
}

fn expect_error(result: Result<FetchedToken, FetchError>) -> FetchError {
    match result {
        Ok(t) => panic!(
            "expected an error, got a token expiring in {:?}",
            t.expires_in
        ),
        Err(e) => e,
    }
}

/// [IMDS] System-assigned and user-assigned identities: exact query and headers.
#[tokio::test]
async fn imds_gives_system_and_user_assigned_tokens() {
    let emu = emulator();
    let http = http();

    let token = imds(&emu, None)
        .fetch(&http, azure::DICOM_SCOPE)
        .await
        .unwrap();
    assert!((3590..=3600).contains(&lifetime_secs(&token)));
    assert_eq!(claims(token.access_token.expose())["aud"], RESOURCE);
    let stats = emu.stats();
    assert_eq!(stats["imds_requests"], 1);
    assert_eq!(stats["last_method"], "GET");
    assert_eq!(stats["last_path"], "/metadata/identity/oauth2/token");
    assert_eq!(
        stats["last_query"],
        json!({"api-version": "2018-02-01", "resource": RESOURCE})
    );
    assert_eq!(stats["last_headers"]["metadata"], "true");
    assert!(stats["last_headers"].get("x-forwarded-for").is_none());
    assert!(stats["last_headers"].get("authorization").is_none());

    let token = imds(&emu, Some(USER_ASSIGNED))
        .fetch(&http, azure::DICOM_SCOPE)
        .await
        .unwrap();
    assert_eq!(claims(token.access_token.expose())["appid"], USER_ASSIGNED);
    let stats = emu.stats();
    assert_eq!(stats["imds_requests"], 2);
    assert_eq!(
        stats["last_query"],
        json!({"api-version": "2018-02-01", "resource": RESOURCE, "client_id": USER_ASSIGNED})
    );
    assert_eq!(stats["last_headers"]["metadata"], "true");
}

/// [IMDS], [APPSVC] The emulation refuses what the services refuse, so the tests above show
/// that the client sends what they require.
#[test]
fn the_emulator_refuses_requests_the_services_refuse() {
    let emu = emulator();
    let http = testkit::HttpClient::new();
    let imds = format!(
        "{}?api-version=2018-02-01&resource={RESOURCE}",
        emu.imds_endpoint()
    );
    let reply = http.request("GET", &imds, &[], None);
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"], "bad_request_102");
    let reply = http.request("GET", &imds, &[("Metadata", "True")], None);
    assert_eq!(reply.status, 400, "the value must be lower-case true");
    let reply = http.request(
        "GET",
        &imds,
        &[("Metadata", "true"), ("X-Forwarded-For", "10.0.0.1")],
        None,
    );
    assert_eq!(reply.status, 400);
    let no_version = format!("{}?resource={RESOURCE}", emu.imds_endpoint());
    let reply = http.request("GET", &no_version, &[("Metadata", "true")], None);
    assert_eq!(reply.status, 400);
    let reply = http.request("GET", &imds, &[("Metadata", "true")], None);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["expires_in"], "3600");

    let app = format!(
        "{}?api-version=2017-09-01&resource={RESOURCE}",
        emu.identity_endpoint()
    );
    let reply = http.request("GET", &app, &[("X-IDENTITY-HEADER", IDENTITY_HEADER)], None);
    assert_eq!(reply.status, 400, "only api-version 2019-08-01");
    let app = app.replace("2017-09-01", "2019-08-01");
    assert_eq!(http.request("GET", &app, &[], None).status, 401);
    let reply = http.request("GET", &app, &[("X-IDENTITY-HEADER", IDENTITY_HEADER)], None);
    assert_eq!(reply.status, 200);
    assert!(reply.json().get("expires_in").is_none());
}

/// [IMDS] "Identity not found" (400 invalid_request) is a design-time error: not retried.
#[tokio::test]
async fn imds_unknown_identity_is_not_retryable() {
    let emu = emulator();
    let e = expect_error(
        imds(&emu, Some(UNKNOWN_IDENTITY))
            .fetch(&http(), azure::DICOM_SCOPE)
            .await,
    );
    assert_eq!(e.error.code(), ErrorCode::Tok001);
    assert!(!e.retryable);
    let text = e.error.to_string();
    assert!(
        text.contains("IMDS") && text.contains("Identity not found"),
        "{text}"
    );
}

/// [APPSVC] App Service / Container Apps: api-version 2019-08-01, X-IDENTITY-HEADER, a lifetime
/// computed from expires_on (the answer has no expires_in).
#[tokio::test]
async fn app_service_tokens_use_the_identity_header() {
    let emu = emulator();
    let http = http();

    let token = app_service(&emu.identity_endpoint(), IDENTITY_HEADER, None)
        .fetch(&http, azure::DICOM_SCOPE)
        .await
        .unwrap();
    assert!(
        (3590..=3600).contains(&lifetime_secs(&token)),
        "{:?}",
        token.expires_in
    );
    let stats = emu.stats();
    assert_eq!(stats["appservice_requests"], 1);
    assert_eq!(stats["imds_requests"], 0);
    assert_eq!(stats["last_method"], "GET");
    assert_eq!(stats["last_path"], "/msi/token");
    assert_eq!(
        stats["last_query"],
        json!({"api-version": "2019-08-01", "resource": RESOURCE})
    );
    assert_eq!(stats["last_headers"]["x-identity-header"], IDENTITY_HEADER);
    assert!(stats["last_headers"].get("metadata").is_none());

    app_service(
        &emu.identity_endpoint(),
        IDENTITY_HEADER,
        Some(USER_ASSIGNED),
    )
    .fetch(&http, azure::DICOM_SCOPE)
    .await
    .unwrap();
    assert_eq!(
        emu.stats()["last_query"],
        json!({"api-version": "2019-08-01", "resource": RESOURCE, "client_id": USER_ASSIGNED})
    );
}

/// [APPSVC] A wrong IDENTITY_HEADER is refused (401 → AUTH-001) and never echoed.
#[tokio::test]
async fn app_service_wrong_header_is_auth001_without_the_header() {
    let emu = emulator();
    let wrong = "wrong-identity-header-2c7d41";
    let e = expect_error(
        app_service(&emu.identity_endpoint(), wrong, None)
            .fetch(&http(), azure::DICOM_SCOPE)
            .await,
    );
    assert_eq!(e.error.code(), ErrorCode::Auth001);
    assert!(!e.retryable);
    let text = format!("{} {:?}", e.error, e);
    assert_no_secrets("the error", &text, &[wrong, IDENTITY_HEADER]);
}

/// Missing IDENTITY_HEADER: CFG-003 naming the variable (not a silent fall-back to IMDS).
#[test]
fn missing_identity_header_is_cfg003() {
    let e = ManagedIdentity::detect(
        &env(&[("IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi/token")]),
        None,
        None,
    )
    .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Cfg003);
    assert!(e.to_string().contains("IDENTITY_HEADER"), "{e}");
}

/// [IMDS] retry guidance: 429, 5xx, 404 and 410 are transient (with Retry-After kept);
/// retrying is the token manager's job, here they only come back retryable.
#[tokio::test]
async fn throttling_and_server_errors_are_retryable() {
    let emu = emulator();
    let http = http();
    let mi = imds(&emu, None);

    emu.inject("imds", 429, 1, None, json!({"Retry-After": "3"}));
    let e = expect_error(mi.fetch(&http, azure::DICOM_SCOPE).await);
    assert!(e.retryable);
    assert_eq!(e.error.code(), ErrorCode::Auth003);
    assert_eq!(e.retry_after, Some(Duration::from_secs(3)));

    for status in [500, 503, 404, 410] {
        emu.inject("imds", status, 1, None, json!({}));
        let e = expect_error(mi.fetch(&http, azure::DICOM_SCOPE).await);
        assert!(e.retryable, "IMDS {status}");
        assert_eq!(e.error.code(), ErrorCode::Auth003, "IMDS {status}");
    }

    let app = app_service(&emu.identity_endpoint(), IDENTITY_HEADER, None);
    for status in [429, 500] {
        emu.inject("appservice", status, 1, None, json!({}));
        let e = expect_error(app.fetch(&http, azure::DICOM_SCOPE).await);
        assert!(e.retryable, "App Service {status}");
    }
    // 404 is transient for IMDS only.
    emu.inject("appservice", 404, 1, None, json!({}));
    assert!(!expect_error(app.fetch(&http, azure::DICOM_SCOPE).await).retryable);

    // Once the injected answers are used up, tokens come again.
    mi.fetch(&http, azure::DICOM_SCOPE).await.unwrap();
    app.fetch(&http, azure::DICOM_SCOPE).await.unwrap();
    assert_eq!(emu.stats()["imds_requests"], 6);
}

/// Endpoint down: NET-002, retryable.
#[tokio::test]
async fn endpoint_down_is_net002() {
    let port = testkit::free_port();
    let down = format!("http://127.0.0.1:{port}/metadata/identity/oauth2/token");
    let mi = ManagedIdentity::detect(&env(&[]), None, Some(Url::parse(&down).unwrap())).unwrap();
    let e = expect_error(mi.fetch(&http(), azure::DICOM_SCOPE).await);
    assert_eq!(e.error.code(), ErrorCode::Net002, "{}", e.error);
    assert!(e.retryable);

    let app = app_service(
        &format!("http://127.0.0.1:{port}/msi/token"),
        IDENTITY_HEADER,
        None,
    );
    let e = expect_error(app.fetch(&http(), azure::DICOM_SCOPE).await);
    assert_eq!(e.error.code(), ErrorCode::Net002);
    assert!(e.retryable);
    assert_no_secrets("the error", &format!("{}", e.error), &[IDENTITY_HEADER]);
}

/// A 200 that is not a token answer: TOK-005, not retried.
#[tokio::test]
async fn malformed_answers_are_tok005() {
    let emu = emulator();
    let http = http();
    let mi = imds(&emu, None);
    for body in [
        json!("<html><body>proxy login</body></html>"),
        json!({"token": "x", "expires_in": "3599"}),
        json!({"access_token": "x", "token_type": "pop", "expires_in": "3599"}),
    ] {
        emu.inject("imds", 200, 1, Some(body.clone()), json!({}));
        let e = expect_error(mi.fetch(&http, azure::DICOM_SCOPE).await);
        assert_eq!(e.error.code(), ErrorCode::Tok005, "{body}");
        assert!(!e.retryable);
    }
}

/// Tokens expiring in under 60 s are refused (TOK-005), whether the lifetime comes from
/// expires_in (IMDS) or from expires_on (App Service).
#[tokio::test]
async fn tokens_expiring_within_a_minute_are_refused() {
    let emu = emulator();
    let http = http();
    assert_eq!(MIN_LIFETIME, Duration::from_secs(60));
    for mi in [
        imds(&emu, Some(SHORT_LIVED)),
        app_service(&emu.identity_endpoint(), IDENTITY_HEADER, Some(SHORT_LIVED)),
    ] {
        let e = expect_error(mi.fetch(&http, azure::DICOM_SCOPE).await);
        assert_eq!(e.error.code(), ErrorCode::Tok005, "{}", mi.kind());
        assert!(!e.retryable);
        let text = e.error.to_string();
        assert!(text.contains("under 60 s"), "{text}");
    }
    // An App Service answer whose expires_on has passed.
    emu.inject(
        "appservice",
        200,
        1,
        Some(
            json!({"access_token": "x", "expires_on": "1000000000", "token_type": "Bearer",
                    "resource": RESOURCE}),
        ),
        json!({}),
    );
    let app = app_service(&emu.identity_endpoint(), IDENTITY_HEADER, None);
    let e = expect_error(app.fetch(&http, azure::DICOM_SCOPE).await);
    assert_eq!(e.error.code(), ErrorCode::Tok005);
}

// ---------------------------------------------------------------------------------------------
// Workload identity and certificate credentials against the real oidc-provider
// ---------------------------------------------------------------------------------------------

const WI_CLIENT: &str = "wi-client";
const CERT_CLIENT: &str = "cert-client";

fn start_idp(wi_key: &Value, cert_key: &Value) -> Idp {
    Idp::start(&json!({
        "port": 0,
        "accessTokenTtl": 300,
        "defaultAudience": RESOURCE,
        "clients": [
            {"client_id": WI_CLIENT, "token_endpoint_auth_method": "private_key_jwt",
             "token_endpoint_auth_signing_alg": "RS256",
             "jwks": {"keys": [wi_key["public_jwk"]]}, "scope": azure::DICOM_SCOPE},
            {"client_id": CERT_CLIENT, "token_endpoint_auth_method": "private_key_jwt",
             "token_endpoint_auth_signing_alg": "RS256",
             "jwks": {"keys": [cert_key["public_jwk"]]}, "scope": azure::DICOM_SCOPE}
        ]
    }))
}

/// A client assertion as the federated token. In AKS it is the projected service account
/// token (iss = the cluster's OIDC issuer, aud = api://AzureADTokenExchange) that Entra maps
/// through a federated credential; oidc-provider wants iss = sub = client_id and aud = its
/// token endpoint instead, and checks signature, expiry and `jti` replay.
fn federated_token(key: &EncodingKey, idp: &Idp) -> String {
    sign_assertion(
        WI_CLIENT,
        &idp.token_endpoint(),
        key,
        Algorithm::RS256,
        &None,
        &None,
        &None,
    )
    .unwrap()
}

/// [WIF] The federated token file is the client assertion, re-read on every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_identity_rereads_the_federated_token_file() {
    let wi_key = Idp::generate_key("RS256", "wi-key");
    let cert_key = Idp::generate_key("RS256", "cert-key");
    let idp = start_idp(&wi_key, &cert_key);
    let emu = emulator_with(json!({"entraUpstream": idp.token_endpoint()}));
    let signing =
        EncodingKey::from_rsa_pem(wi_key["private_pem"].as_str().unwrap().as_bytes()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("azure-identity-token");
    let first = federated_token(&signing, &idp);
    std::fs::write(&file, format!("{first}\n")).unwrap();

    let authority = emu.authority_host();
    let file_text = file.to_str().unwrap().to_owned();
    let vars = env(&[
        ("AZURE_FEDERATED_TOKEN_FILE", &file_text),
        ("AZURE_CLIENT_ID", WI_CLIENT),
        ("AZURE_TENANT_ID", TENANT),
        ("AZURE_AUTHORITY_HOST", &authority),
        // Workload identity wins over the other sources, as in the SDKs.
        ("IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi/token"),
        ("IDENTITY_HEADER", IDENTITY_HEADER),
    ]);
    let mi = ManagedIdentity::detect(&vars, None, None).unwrap();
    assert_eq!(mi.kind(), "workloadidentity");
    assert_eq!(
        mi.endpoint().as_str(),
        format!("{authority}{TENANT}/oauth2/v2.0/token")
    );
    let http = http();

    let token = mi.fetch(&http, azure::DICOM_SCOPE).await.unwrap();
    let c = claims(token.access_token.expose());
    assert_eq!(c["client_id"], WI_CLIENT);
    assert_eq!(c["iss"], idp.issuer);
    assert!((290..=300).contains(&lifetime_secs(&token)));
    let stats = emu.stats();
    assert_eq!(stats["entra_requests"], 1);
    assert_eq!(stats["last_method"], "POST");
    assert_eq!(stats["last_tenant"], TENANT);
    assert_eq!(
        stats["last_headers"]["content-type"],
        "application/x-www-form-urlencoded"
    );
    assert_eq!(
        stats["last_form"],
        json!({
            "grant_type": "client_credentials",
            "client_id": WI_CLIENT,
            "scope": azure::DICOM_SCOPE,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": first,
        })
    );

    // The kubelet rotates the token: the next request sends the new one (oidc-provider would
    // refuse the old one anyway: its jti was used).
    let second = federated_token(&signing, &idp);
    assert_ne!(claims(&first)["jti"], claims(&second)["jti"]);
    std::fs::write(&file, &second).unwrap();
    mi.fetch(&http, azure::DICOM_SCOPE).await.unwrap();
    assert_eq!(emu.stats()["last_form"]["client_assertion"], second);
    assert_eq!(idp.stats()["token_requests_by_client"][WI_CLIENT], 2);

    // Putting the first token back proves the file is read each time: the provider now sees a
    // replayed jti and refuses it (AUTH-001), and the error does not carry the token.
    std::fs::write(&file, &first).unwrap();
    let e = expect_error(mi.fetch(&http, azure::DICOM_SCOPE).await);
    assert_eq!(e.error.code(), ErrorCode::Auth001, "{}", e.error);
    assert!(!e.retryable);
    assert_no_secrets(
        "the error",
        &format!("{} {e:?}", e.error),
        &[&first, &second],
    );
    assert_eq!(emu.stats()["last_form"]["client_assertion"], first);
}

/// [WIF] A missing or empty federated token file: TOK-001 (not retryable) naming the file and
/// the variable. Not CFG-002: the file is read at each request (the kubelet writes and rotates
/// it), so detection does not require it and its absence is a token acquisition failure.
#[tokio::test]
async fn workload_identity_without_its_token_file_is_tok001() {
    let emu = emulator();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("missing-token");
    let file_text = file.to_str().unwrap().to_owned();
    let authority = emu.authority_host();
    let vars = env(&[
        ("AZURE_FEDERATED_TOKEN_FILE", &file_text),
        ("AZURE_CLIENT_ID", WI_CLIENT),
        ("AZURE_TENANT_ID", TENANT),
        ("AZURE_AUTHORITY_HOST", &authority),
    ]);
    let mi = ManagedIdentity::detect(&vars, None, None).unwrap();
    let e = expect_error(mi.fetch(&http(), azure::DICOM_SCOPE).await);
    assert_eq!(e.error.code(), ErrorCode::Tok001);
    assert!(!e.retryable);
    let text = e.error.to_string();
    assert!(
        text.contains(&file_text) && text.contains("AZURE_FEDERATED_TOKEN_FILE"),
        "{text}"
    );

    std::fs::write(&file, " \n").unwrap();
    let e = expect_error(mi.fetch(&http(), azure::DICOM_SCOPE).await);
    assert_eq!(e.error.code(), ErrorCode::Tok001);
    assert!(e.error.to_string().contains("empty"), "{}", e.error);
    assert_eq!(emu.stats()["entra_requests"], 0, "nothing was sent");
}

/// [WIF] Missing AZURE_TENANT_ID / AZURE_CLIENT_ID: CFG-003 naming them.
#[test]
fn workload_identity_without_its_variables_is_cfg003() {
    let e = ManagedIdentity::detect(
        &env(&[
            (
                "AZURE_FEDERATED_TOKEN_FILE",
                "/var/run/secrets/azure/tokens/t",
            ),
            ("AZURE_CLIENT_ID", WI_CLIENT),
        ]),
        None,
        None,
    )
    .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Cfg003);
    let text = e.to_string();
    assert!(
        text.contains("AZURE_TENANT_ID") && !text.contains("AZURE_CLIENT_ID"),
        "{text}"
    );
}

/// The base64url thumbprint of a certificate file, computed by openssl (independently of the
/// code under test).
fn openssl_thumbprint(cert: &Path, digest: &str) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", digest, "-in"])
        .arg(cert)
        .output()
        .expect("run openssl (scripts/setup installs it)");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let hex = text.trim().split('=').nth(1).expect("Fingerprint=AA:BB:…");
    let bytes: Vec<u8> = hex
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// [CERT] A certificate credential: thumbprints as openssl computes them, an assertion with the
/// `x5t` and `x5t#S256` headers, accepted by oidc-provider as private_key_jwt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_credential_signs_assertions_the_provider_accepts() {
    let wi_key = Idp::generate_key("RS256", "wi-key");
    let cert_key = Idp::generate_key("RS256", "cert-key");
    let idp = start_idp(&wi_key, &cert_key);
    let private_pem = cert_key["private_pem"].as_str().unwrap();
    let certificate =
        testkit::self_signed_certificate(private_pem, "orthanc-dicomweb-oauth test app");
    let other = testkit::self_signed_certificate(
        wi_key["private_pem"].as_str().unwrap(),
        "an unrelated certificate",
    );
    let dir = tempfile::tempdir().unwrap();
    let cert_file = dir.path().join("cert.pem");
    std::fs::write(&cert_file, &certificate).unwrap();
    let x5t = openssl_thumbprint(&cert_file, "-sha1");
    let x5t_s256 = openssl_thumbprint(&cert_file, "-sha256");

    // Certificate then key, and the layout `openssl pkcs12 -nodes` writes (bag attributes,
    // key first, then another certificate of the chain).
    let simple = format!("{certificate}{private_pem}");
    let pkcs12_style = format!(
        "Bag Attributes\n    localKeyID: 01 00 00 00\nKey Attributes: <No Attributes>\n{private_pem}\
         Bag Attributes\n    friendlyName: other\nsubject=CN = an unrelated certificate\n{other}\
         Bag Attributes\n    localKeyID: 01 00 00 00\nsubject=CN = orthanc-dicomweb-oauth test app\n{certificate}"
    );
    let combined = dir.path().join("combined.pem");
    std::fs::write(&combined, &pkcs12_style).unwrap();
    for credential in [
        CertificateCredential::from_pem(&simple).unwrap(),
        CertificateCredential::from_file(&combined).unwrap(),
    ] {
        assert_eq!(credential.x5t, x5t);
        assert_eq!(credential.x5t_s256, x5t_s256);
        assert_eq!(credential.algorithm, "RS256");
        assert_eq!(format!("{:?}", credential.key_pem), "[REDACTED]");
    }
    // A PKCS#1 ("RSA PRIVATE KEY") key works too.
    let pkcs1 = Command::new("openssl")
        .args(["pkey", "-traditional"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(private_pem.as_bytes())?;
            child.wait_with_output()
        })
        .expect("run openssl pkey");
    let pkcs1 = String::from_utf8(pkcs1.stdout).unwrap();
    assert!(pkcs1.contains("BEGIN RSA PRIVATE KEY"), "{pkcs1}");
    let credential = CertificateCredential::from_pem(&format!("{pkcs1}{certificate}")).unwrap();
    assert_eq!(credential.x5t_s256, x5t_s256);

    let endpoint = idp.token_endpoint();
    let assertion = credential.client_assertion(CERT_CLIENT, &endpoint).unwrap();
    let h = header(&assertion);
    assert_eq!(h["alg"], "RS256");
    assert_eq!(h["typ"], "JWT");
    assert_eq!(h["x5t"], x5t.as_str());
    assert_eq!(h["x5t#S256"], x5t_s256.as_str());
    assert!(h.get("kid").is_none());
    let c = claims(&assertion);
    assert_eq!(c["iss"], CERT_CLIENT);
    assert_eq!(c["sub"], CERT_CLIENT);
    assert_eq!(c["aud"], endpoint.as_str());
    assert!(c["jti"].as_str().is_some_and(|j| !j.is_empty()));
    let (iat, exp) = (c["iat"].as_u64().unwrap(), c["exp"].as_u64().unwrap());
    assert!(exp > iat && exp - iat <= 600, "Entra: keep it short");

    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "client_credentials")
        .append_pair("client_id", CERT_CLIENT)
        .append_pair("scope", azure::DICOM_SCOPE)
        .append_pair(
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        )
        .append_pair("client_assertion", &assertion)
        .finish();
    let request = http()
        .post(&endpoint)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form);
    let token = token_response::exchange(request).await.unwrap();
    let t = claims(token.access_token.expose());
    assert_eq!(t["client_id"], CERT_CLIENT);
    assert_eq!(t["aud"], RESOURCE);
    assert_eq!(
        azure::audience_from_scope(azure::DICOM_SCOPE).as_deref(),
        Some(RESOURCE)
    );

    // An assertion signed by another key (with this certificate's thumbprints) is refused.
    let forged = CertificateCredential::from_pem(&format!(
        "{}{}",
        wi_key["private_pem"].as_str().unwrap(),
        other
    ))
    .unwrap();
    let forged = CertificateCredential {
        x5t: credential.x5t.clone(),
        x5t_s256: credential.x5t_s256.clone(),
        ..forged
    };
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "client_credentials")
        .append_pair("client_id", CERT_CLIENT)
        .append_pair(
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        )
        .append_pair(
            "client_assertion",
            &forged.client_assertion(CERT_CLIENT, &endpoint).unwrap(),
        )
        .finish();
    let request = http()
        .post(&endpoint)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form);
    let e = token_response::exchange(request).await.unwrap_err();
    assert_eq!(e.error.code(), ErrorCode::Auth001);
}

/// [CERT] Unusable certificate files: CFG-002, naming the problem, never the key.
#[test]
fn bad_certificate_pem_is_cfg002_without_key_material() {
    let rsa = Idp::generate_key("RS256", "k1");
    let rsa2 = Idp::generate_key("RS256", "k2");
    let ec = Idp::generate_key("ES256", "k3");
    let key = rsa["private_pem"].as_str().unwrap();
    let key2 = rsa2["private_pem"].as_str().unwrap();
    let ec_key = ec["private_pem"].as_str().unwrap();
    let cert = testkit::self_signed_certificate(key, "app");
    let ec_cert = testkit::self_signed_certificate(ec_key, "ec app");
    // Every base64 line of the private keys: none may appear in a message.
    let key_lines: Vec<&str> = [key, key2, ec_key]
        .iter()
        .flat_map(|k| k.lines())
        .filter(|l| !l.starts_with("-----") && l.len() > 16)
        .collect();

    let cases: Vec<(&str, String, &str)> = vec![
        ("certificate only", cert.clone(), "no private key"),
        ("key only", key.to_owned(), "no certificate"),
        ("key of another certificate", format!("{cert}{key2}"), "does not belong"),
        ("garbage", "not a PEM file at all".into(), "no PEM certificate"),
        (
            "truncated",
            format!("{cert}{}", &key[..key.len() / 2]),
            "not closed",
        ),
        (
            "corrupted key",
            format!(
                "{cert}-----BEGIN PRIVATE KEY-----\nMIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEA\n-----END PRIVATE KEY-----\n"
            ),
            "not a valid RSA private key",
        ),
        ("EC key", format!("{ec_cert}{ec_key}"), "EC key"),
        (
            "encrypted key",
            format!("{cert}-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBVQIBADANBgkqhkiG9w0BAQEFAASC\n-----END ENCRYPTED PRIVATE KEY-----\n"),
            "encrypted",
        ),
        ("two keys", format!("{cert}{key}{key2}"), "more than one private key"),
    ];
    for (what, pem, expected) in cases {
        let e = CertificateCredential::from_pem(&pem).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Cfg002, "{what}: {e}");
        let text = e.to_string();
        assert!(text.contains(expected), "{what}: {text}");
        assert_no_secrets(what, &text, &key_lines);
    }

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-cert.pem");
    let e = CertificateCredential::from_file(&missing).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Cfg002);
    assert!(e.to_string().contains("no-such-cert.pem"), "{e}");
    let binary = dir.path().join("cert.pfx");
    std::fs::write(&binary, [0x30u8, 0x82, 0xff, 0xfe, 0x00, 0xc3]).unwrap();
    let e = CertificateCredential::from_file(&binary).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Cfg002);
    assert!(e.to_string().contains("not PEM text"), "{e}");
    let key_only = dir.path().join("key.pem");
    std::fs::write(&key_only, key).unwrap();
    let e = CertificateCredential::from_file(&key_only).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Cfg002);
    let text = e.to_string();
    assert!(
        text.contains("key.pem") && text.contains("no certificate"),
        "{text}"
    );
    assert_no_secrets("from_file", &text, &key_lines);
}
