//! The token engine against a real OpenID provider (`oidc-provider`, fixtures/idp).

mod common;

use common::{engine, logs};
use dicomweb_oauth_core::token::TokenOrigin;
use dicomweb_oauth_core::ErrorCode;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::{wait_for, Idp};

const POST_SECRET: &str = "post-secret-9d3f2a";
const BASIC_SECRET: &str = "basic secret+with/odd=chars";

struct Keys {
    rsa: Value,
    ec: Value,
}

fn keys() -> Keys {
    Keys {
        rsa: Idp::generate_key("RS256", "rsa-client-key"),
        ec: Idp::generate_key("ES256", "ec-client-key"),
    }
}

fn start_idp(keys: &Keys, ttl: u64) -> Idp {
    Idp::start(&json!({
        "port": 0,
        "accessTokenTtl": ttl,
        "defaultAudience": "https://dicom.example",
        "clients": [
            {"client_id": "c-post", "client_secret": POST_SECRET, "token_endpoint_auth_method": "client_secret_post", "scope": "dicom.read dicom.write"},
            {"client_id": "c-basic", "client_secret": BASIC_SECRET, "token_endpoint_auth_method": "client_secret_basic", "scope": "dicom.read"},
            {"client_id": "c-rs", "token_endpoint_auth_method": "private_key_jwt", "token_endpoint_auth_signing_alg": "RS256",
             "jwks": {"keys": [keys.rsa["public_jwk"]]}, "scope": "dicom.read"},
            {"client_id": "c-es", "token_endpoint_auth_method": "private_key_jwt", "token_endpoint_auth_signing_alg": "ES256",
             "jwks": {"keys": [keys.ec["public_jwk"]]}, "scope": "dicom.read"}
        ]
    }))
}

fn post_server(idp: &Idp) -> Value {
    json!({
        "Url": "https://pacs.invalid/dicom-web",
        "TokenEndpoint": idp.token_endpoint(),
        "ClientId": "c-post",
        "ClientSecret": POST_SECRET,
        "Scope": "dicom.read dicom.write",
    })
}

fn claims(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

fn assert_secret_free(extra: &[&str]) {
    let logs = logs();
    let mut secrets = vec![POST_SECRET, BASIC_SECRET];
    secrets.extend_from_slice(extra);
    testkit::assert_no_secrets("the core's logs", &logs, &secrets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_authentication_method_gets_a_token() {
    let keys = keys();
    let idp = start_idp(&keys, 300);
    let servers = [
        post_server(&idp),
        json!({"Url": "https://p.invalid/x", "TokenEndpoint": idp.token_endpoint(), "ClientId": "c-basic",
               "ClientSecret": BASIC_SECRET, "ClientAuthMethod": "client_secret_basic", "Scope": "dicom.read"}),
        json!({"Url": "https://p.invalid/x", "TokenEndpoint": idp.token_endpoint(), "ClientId": "c-rs",
               "ClientAuthMethod": "private_key_jwt", "ClientAssertionKey": keys.rsa["private_pem"],
               "ClientAssertionKeyId": "rsa-client-key", "Scope": "dicom.read"}),
        json!({"Url": "https://p.invalid/x", "TokenEndpoint": idp.token_endpoint(), "ClientId": "c-es",
               "ClientAuthMethod": "private_key_jwt", "ClientAssertionKey": keys.ec["private_pem"],
               "ClientAssertionAlgorithm": "ES256", "ClientAssertionKeyId": "ec-client-key", "Scope": "dicom.read"}),
    ];
    let mut tokens = Vec::new();
    for server in servers {
        let client = server["ClientId"].as_str().unwrap().to_owned();
        let engine = engine(server);
        let manager = engine.manager("s").unwrap();
        let (token, origin) = manager
            .token()
            .await
            .unwrap_or_else(|e| panic!("{client}: {e}\n{}", idp.log()));
        assert_eq!(origin, TokenOrigin::Provider);
        let c = claims(token.value.expose());
        assert_eq!(c["client_id"], client.as_str());
        assert_eq!(c["iss"], idp.issuer.as_str());
        assert_eq!(c["aud"], "https://dicom.example");
        assert!(c["scope"].as_str().unwrap().contains("dicom.read"));
        tokens.push(token.value.expose().to_owned());
    }
    let by_client = &idp.stats()["token_requests_by_client"];
    for client in ["c-post", "c-basic", "c-rs", "c-es"] {
        assert_eq!(by_client[client], 1, "{client}: {by_client}");
    }
    let private_keys = [
        keys.rsa["private_pem"].as_str().unwrap(),
        keys.ec["private_pem"].as_str().unwrap(),
    ];
    let token_refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    assert_secret_free(&[&token_refs[..], &private_keys[..]].concat());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_discovery_finds_the_token_endpoint_and_jwks() {
    let keys = keys();
    let idp = start_idp(&keys, 300);
    let engine = engine(json!({
        "Url": "https://p.invalid/x", "Issuer": idp.issuer, "ClientId": "c-post", "ClientSecret": POST_SECRET,
        "Scope": "dicom.read", "JWTAudience": "https://dicom.example"
    }));
    let manager = engine.manager("s").unwrap();
    manager.token().await.unwrap();
    let stats = idp.stats();
    assert_eq!(stats["discovery_requests"], 1, "{stats}");
    assert_eq!(
        stats["jwks_requests"], 1,
        "validated against the JWKS: {stats}"
    );
    assert_eq!(stats["token_requests"], 1, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_hit_makes_no_request() {
    let keys = keys();
    let idp = start_idp(&keys, 300);
    let engine = engine(post_server(&idp));
    let manager = engine.manager("s").unwrap();
    let (first, _) = manager.token().await.unwrap();
    for _ in 0..100 {
        let (again, origin) = manager.token().await.unwrap();
        assert_eq!(origin, TokenOrigin::Cache);
        assert!(Arc::ptr_eq(&first, &again));
    }
    assert!(manager.cached().is_some());
    assert_eq!(idp.token_requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_callers_on_a_cold_cache_make_one_request() {
    let keys = keys();
    let idp = start_idp(&keys, 300);
    let engine = engine(post_server(&idp));
    let manager = engine.manager("s").unwrap().clone();
    let barrier = Arc::new(tokio::sync::Barrier::new(64));
    let callers: Vec<_> = (0..64)
        .map(|_| {
            let (manager, barrier) = (manager.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                manager
                    .token()
                    .await
                    .map(|(t, _)| t.value.expose().to_owned())
            })
        })
        .collect();
    let mut values = Vec::new();
    for caller in callers {
        values.push(caller.await.unwrap().unwrap());
    }
    values.dedup();
    assert_eq!(values.len(), 1, "all callers got the same token");
    assert_eq!(idp.token_requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_failure_too() {
    let keys = keys();
    let idp = start_idp(&keys, 300);
    let mut server = post_server(&idp);
    server["ClientSecret"] = json!("wrong-secret-for-the-test");
    let engine = engine(server);
    let manager = engine.manager("s").unwrap().clone();
    let callers: Vec<_> = (0..16)
        .map(|_| {
            let manager = manager.clone();
            tokio::spawn(async move { manager.token().await.map(|_| ()) })
        })
        .collect();
    for caller in callers {
        assert_eq!(
            caller.await.unwrap().unwrap_err().code(),
            ErrorCode::Auth001
        );
    }
    assert_eq!(idp.token_requests(), 1, "one request, its error shared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_credentials_are_auth001_and_never_retried() {
    let keys = keys();
    let idp = start_idp(&keys, 300);
    let mut server = post_server(&idp);
    server["ClientSecret"] = json!("not-the-secret-4411");
    server["ResilienceConfig"] = json!({"RetryMaxAttempts": 3, "RetryInitialDelay": 0.01});
    let engine = engine(server);
    let error = engine.manager("s").unwrap().token().await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::Auth001);
    assert!(error.to_string().contains("invalid_client"), "{error}");
    assert_eq!(idp.token_requests(), 1);
    let error = common::engine(
        json!({"Url": "https://p.invalid/x", "TokenEndpoint": idp.token_endpoint(),
        "ClientId": "c-post", "ClientSecret": POST_SECRET, "Scope": "admin"}),
    )
    .manager("s")
    .unwrap()
    .token()
    .await
    .unwrap_err();
    assert_eq!(error.code(), ErrorCode::Auth002, "{error}");
    assert_secret_free(&["not-the-secret-4411"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_refresh_replaces_the_token_before_expiry_and_callers_never_wait() {
    let keys = keys();
    let idp = start_idp(&keys, 4);
    let mut server = post_server(&idp);
    server["TokenRefreshBufferSeconds"] = json!(2);
    let engine = engine(server);
    let manager = engine.manager("s").unwrap().clone();
    engine.start_refreshers();
    let first = wait_for("the first token", Duration::from_secs(10), || {
        manager.cached()
    });
    // For two token lifetimes, every call is answered from memory, quickly,
    // while the refresher replaces the token ahead of its expiry.
    let deadline = Instant::now() + Duration::from_secs(9);
    let mut seen = vec![first.value.expose().to_owned()];
    let mut slowest = Duration::ZERO;
    while Instant::now() < deadline {
        let started = Instant::now();
        let (token, origin) = manager.token().await.unwrap();
        slowest = slowest.max(started.elapsed());
        assert_eq!(
            origin,
            TokenOrigin::Cache,
            "a caller had to wait for the provider"
        );
        assert!(token.expires_in() > Duration::ZERO);
        if seen.last().map(String::as_str) != Some(token.value.expose()) {
            seen.push(token.value.expose().to_owned());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        seen.len() >= 3,
        "expected at least two refreshes, saw {} tokens",
        seen.len()
    );
    assert!(
        slowest < Duration::from_millis(50),
        "slowest cached call {slowest:?}"
    );
    let requests = idp.token_requests() as usize;
    assert!(
        requests >= seen.len() && requests <= seen.len() + 1,
        "{requests} requests for {} tokens",
        seen.len()
    );
    engine.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_drops_the_token() {
    let keys = keys();
    let idp = start_idp(&keys, 300);
    let engine = engine(post_server(&idp));
    let manager = engine.manager("s").unwrap();
    let (first, _) = manager.token().await.unwrap();
    manager.invalidate();
    assert!(manager.cached().is_none());
    let (second, origin) = manager.token().await.unwrap();
    assert_eq!(origin, TokenOrigin::Provider);
    assert_ne!(first.value.expose(), second.value.expose());
    assert_eq!(idp.token_requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_key_rotation_is_followed() {
    let keys = keys();
    let idp = start_idp(&keys, 300);
    let engine = engine(json!({
        "Url": "https://p.invalid/x", "Issuer": idp.issuer, "ClientId": "c-post", "ClientSecret": POST_SECRET,
        "Scope": "dicom.read", "JWTAudience": "https://dicom.example"
    }));
    let manager = engine.manager("s").unwrap();
    manager.token().await.unwrap();
    let new_kid = idp.rotate_keys();
    manager.invalidate();
    let (token, _) = manager.token().await.unwrap();
    let header = jsonwebtoken::decode_header(token.value.expose()).unwrap();
    assert_eq!(header.kid.as_deref(), Some(new_kid.as_str()));
    assert_eq!(
        idp.stats()["jwks_requests"],
        2,
        "refetched once for the unknown kid"
    );

    // A second unknown kid within a minute does not refetch: the token is refused.
    idp.rotate_keys();
    manager.invalidate();
    let error = manager.token().await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::Tok004, "{error}");
    assert_eq!(
        idp.stats()["jwks_requests"],
        2,
        "no second refetch within the interval"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_signed_by_another_key_is_refused_and_not_cached() {
    let keys = keys();
    let idp = start_idp(&keys, 300);
    let mut server = post_server(&idp);
    // A key that did not sign the provider's tokens.
    server["JWTPublicKey"] = keys.rsa["public_pem"].clone();
    let engine = engine(server);
    let manager = engine.manager("s").unwrap();
    let error = manager.token().await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::Tok004, "{error}");
    assert!(manager.cached().is_none());
    assert!(manager.peek().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_another_audience_is_refused() {
    let keys = keys();
    let idp = start_idp(&keys, 300);
    let engine = engine(json!({
        "Url": "https://p.invalid/x", "Issuer": idp.issuer, "ClientId": "c-post", "ClientSecret": POST_SECRET,
        "JWTAudience": "https://somebody-else.example"
    }));
    let error = engine.manager("s").unwrap().token().await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::Tok004);
    assert!(error.to_string().contains("audience"), "{error}");
}
