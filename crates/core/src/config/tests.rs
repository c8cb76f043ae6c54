use super::*;
use serde_json::json;

fn env(name: &str) -> Option<String> {
    match name {
        "PACS_SECRET" => Some("env-secret-value-42".into()),
        "PACS_HOST" => Some("pacs.example.org".into()),
        _ => None,
    }
}

fn load_section(section: Value) -> Result<Config, ConfigError> {
    load(&json!({ "DicomWebOAuth": section }), &env).map(|c| c.expect("section present"))
}

fn minimal_server() -> Value {
    json!({
        "Url": "https://pacs.example.org/dicom-web",
        "TokenEndpoint": "https://idp.example.org/oauth2/token",
        "ClientId": "orthanc",
        "ClientSecret": "s3cret-value-never-printed",
        "Scope": "dicom.read dicom.write"
    })
}

fn with_server(server: Value) -> Value {
    json!({ "ConfigVersion": "2.0", "Servers": { "pacs": server } })
}

fn err(section: Value) -> ConfigError {
    load_section(section).expect_err("configuration must be refused")
}

fn patched(patch: Value) -> Value {
    let mut server = minimal_server();
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            server.as_object_mut().unwrap().remove(k);
        } else {
            server[k] = v.clone();
        }
    }
    with_server(server)
}

#[test]
fn no_section_means_idle() {
    assert_eq!(load(&json!({"HttpPort": 8042}), &env).unwrap(), None);
}

#[test]
fn minimal_server_gets_defaults() {
    let c = load_section(with_server(minimal_server())).unwrap();
    assert_eq!(c.log_level, LogLevel::Info);
    assert_eq!(c.rate_limit_window, Duration::from_secs(60));
    assert_eq!(c.cache, CacheConfig::Memory);
    let s = &c.servers[0];
    assert_eq!(s.name, "pacs");
    assert_eq!(s.provider, ProviderType::Generic);
    assert_eq!(s.refresh_buffer, Duration::from_secs(300));
    assert!(matches!(s.client_auth, ClientAuth::SecretPost(_)));
    assert!(s.tls.verify);
    assert_eq!(s.jwt_validation, None);
    assert_eq!(s.resilience.retry_max_attempts, 3);
    assert_eq!(
        s.resilience.retry_strategy,
        RetryStrategy::Exponential { multiplier: 2.0 }
    );
    assert!(!s.resilience.circuit_breaker_enabled);
    assert_eq!(s.resilience.circuit_breaker_failure_threshold, 5);
    assert_eq!(
        s.resilience.circuit_breaker_timeout,
        Duration::from_secs(60)
    );
    assert_eq!(c.orthanc.http_timeout, Some(Duration::from_secs(60)));
    assert!(c.migration.from_version.is_none());
}

#[test]
fn env_substitution_applies_before_validation() {
    let c = load_section(patched(json!({
        "Url": "https://${PACS_HOST}/dicom-web",
        "ClientSecret": "${PACS_SECRET}"
    })))
    .unwrap();
    let s = &c.servers[0];
    assert_eq!(s.url.as_str(), "https://pacs.example.org/dicom-web");
    match &s.client_auth {
        ClientAuth::SecretPost(secret) => assert_eq!(secret.expose(), "env-secret-value-42"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn unset_variable_is_cfg003() {
    let e = err(patched(json!({"ClientSecret": "${MISSING_VAR}"})));
    assert_eq!(e.code, ErrorCode::Cfg003);
    assert_eq!(e.server.as_deref(), Some("pacs"));
    assert_eq!(e.key, "DicomWebOAuth.Servers.pacs.ClientSecret");
    assert!(e.to_string().contains("MISSING_VAR"));
}

#[test]
fn version_1_file_is_migrated() {
    let mut server = minimal_server();
    server.as_object_mut().unwrap().remove("Scope");
    let c = load_section(json!({"Servers": {"pacs": server}})).unwrap();
    assert_eq!(c.migration.from_version.as_deref(), Some("1.0"));
    assert_eq!(c.servers[0].refresh_buffer, Duration::from_secs(300));
    assert_eq!(c.servers[0].provider, ProviderType::Generic);
}

#[test]
fn missing_keys_are_cfg001() {
    for key in ["Url", "TokenEndpoint", "ClientId", "ClientSecret"] {
        let e = err(patched(json!({ key: null })));
        assert_eq!(e.code, ErrorCode::Cfg001, "{key}: {e}");
        assert_eq!(e.key, format!("DicomWebOAuth.Servers.pacs.{key}"));
        assert_eq!(e.server.as_deref(), Some("pacs"));
    }
    let e = err(json!({"ConfigVersion": "2.0"}));
    assert_eq!(
        (e.code, e.key.as_str()),
        (ErrorCode::Cfg001, "DicomWebOAuth.Servers")
    );
    let e = err(json!({"Servers": {}}));
    assert_eq!(e.code, ErrorCode::Cfg001);
}

#[test]
fn wrong_types_are_cfg002() {
    for (key, value) in [
        ("Url", json!(42)),
        ("TokenRefreshBufferSeconds", json!("300")),
        ("VerifySSL", json!(1)),
        ("DisableJWTValidation", json!("yes")),
        ("JWTAlgorithms", json!({"a": 1})),
        ("ResilienceConfig", json!([])),
    ] {
        let e = err(patched(json!({ key: value })));
        assert_eq!(e.code, ErrorCode::Cfg002, "{key}: {e}");
        assert_eq!(e.key, format!("DicomWebOAuth.Servers.pacs.{key}"));
    }
}

#[test]
fn out_of_range_numbers_are_cfg002() {
    let e = err(patched(json!({"TokenRefreshBufferSeconds": 3601})));
    assert_eq!(e.code, ErrorCode::Cfg002);
    assert!(e.message.contains("out of range 0..=3600"), "{e}");
    let e = err(patched(
        json!({"ResilienceConfig": {"RetryMaxAttempts": 0}}),
    ));
    assert_eq!(
        e.key,
        "DicomWebOAuth.Servers.pacs.ResilienceConfig.RetryMaxAttempts"
    );
    let e = err(json!({"RateLimitWindowSeconds": 0, "Servers": {"pacs": minimal_server()}}));
    assert_eq!((e.code, e.server), (ErrorCode::Cfg002, None));
}

#[test]
fn unknown_keys_are_refused_with_a_suggestion() {
    let e = err(patched(json!({"ClientSecert": "x"})));
    assert_eq!(e.code, ErrorCode::Cfg002);
    assert_eq!(e.key, "DicomWebOAuth.Servers.pacs.ClientSecert");
    assert!(e.message.contains("did you mean 'ClientSecret'"), "{e}");
    let e = err(json!({"LogLvl": "INFO", "Servers": {"pacs": minimal_server()}}));
    assert!(e.message.contains("did you mean 'LogLevel'"), "{e}");
}

#[test]
fn malformed_urls_are_cfg002_without_echoing_the_value() {
    for url in [
        "not a url",
        "ftp://host/x",
        "https://",
        "https://user:pw-secret@h/x#frag",
    ] {
        let e = err(patched(json!({ "Url": url })));
        assert_eq!(e.code, ErrorCode::Cfg002, "{url}: {e}");
        assert!(!e.to_string().contains("pw-secret"), "{e}");
    }
}

#[test]
fn bad_enum_values_and_algorithms() {
    let e = err(patched(json!({"ProviderType": "okta"})));
    assert!(e.message.contains("not one of"), "{e}");
    for alg in ["none", "HS256"] {
        let e = err(patched(
            json!({"JWTAlgorithms": [alg], "JWTPublicKey": "-----BEGIN PUBLIC KEY-----"}),
        ));
        assert_eq!(e.key, "DicomWebOAuth.Servers.pacs.JWTAlgorithms", "{alg}");
    }
}

#[test]
fn verify_ssl_false_warns_and_missing_bundle_is_refused() {
    let c = load_section(patched(json!({"VerifySSL": false}))).unwrap();
    assert!(!c.servers[0].tls.verify);
    assert!(c.warnings[0].contains("DISABLED"));
    let e = err(patched(json!({"VerifySSL": "/nonexistent/ca.pem"})));
    assert_eq!(
        (e.code, e.key.as_str()),
        (ErrorCode::Cfg002, "DicomWebOAuth.Servers.pacs.VerifySSL")
    );
}

#[test]
fn provider_auto_detection() {
    let detect = |u: &str| ProviderType::detect(&Url::parse(u).unwrap());
    assert_eq!(
        detect("https://login.microsoftonline.com/t/oauth2/v2.0/token"),
        ProviderType::Azure
    );
    assert_eq!(
        detect("https://oauth2.googleapis.com/token"),
        ProviderType::Google
    );
    assert_eq!(
        detect("https://sts.us-east-1.amazonaws.com/"),
        ProviderType::Aws
    );
    assert_eq!(
        detect("https://kc.example/realms/x/protocol/openid-connect/token"),
        ProviderType::Keycloak
    );
    assert_eq!(detect("https://idp.example/token"), ProviderType::Generic);
}

#[test]
fn azure_tenant_gives_token_endpoint() {
    let c = load_section(patched(
        json!({"TokenEndpoint": null, "TenantId": "contoso.onmicrosoft.com"}),
    ))
    .unwrap();
    let s = &c.servers[0];
    assert_eq!(s.provider, ProviderType::Azure);
    assert_eq!(
        s.token_endpoint.as_ref().unwrap().as_str(),
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    );
}

#[test]
fn resilience_merges_server_over_global() {
    let c = load_section(json!({
        "ResilienceConfig": {"RetryMaxAttempts": 5, "RetryStrategy": "linear", "RetryIncrement": 2},
        "Servers": {"pacs": {
            "Url": "https://p/x", "TokenEndpoint": "https://i/t", "ClientId": "c", "ClientSecret": "s",
            "ResilienceConfig": {"RetryMaxAttempts": 2}
        }}
    }))
    .unwrap();
    let r = &c.servers[0].resilience;
    assert_eq!(r.retry_max_attempts, 2);
    assert_eq!(
        r.retry_strategy,
        RetryStrategy::Linear {
            increment: Duration::from_secs(2)
        }
    );
}

#[test]
fn server_names_are_path_safe() {
    for name in ["a/b", "..", "x y", ""] {
        let e = err(json!({"Servers": { name: minimal_server() }}));
        assert_eq!(e.code, ErrorCode::Cfg002, "{name:?}");
    }
}

#[test]
fn redis_requires_an_encryption_key_or_an_explicit_none() {
    let e = err(
        json!({"CacheType": "redis", "RedisUrl": "redis://127.0.0.1/0", "Servers": {"pacs": minimal_server()}}),
    );
    assert_eq!(
        (e.code, e.key.as_str()),
        (ErrorCode::Cfg001, "DicomWebOAuth.CacheEncryptionKey")
    );
    let e = err(
        json!({"CacheType": "redis", "RedisUrl": "redis://127.0.0.1/0", "CacheEncryptionKey": "short",
                       "Servers": {"pacs": minimal_server()}}),
    );
    assert_eq!(e.code, ErrorCode::Cfg002);
    assert!(!e.to_string().contains("short"), "{e}");
    let c = load_section(json!({"CacheType": "redis", "RedisUrl": "redis://127.0.0.1/0", "CacheEncryptionKey": "none",
                                "Servers": {"pacs": minimal_server()}})).unwrap();
    assert!(c.warnings.iter().any(|w| w.contains("IN CLEAR")));
}

#[test]
fn redis_requires_a_redis_url() {
    let e = err(json!({"CacheType": "redis", "Servers": {"pacs": minimal_server()}}));
    assert_eq!(
        (e.code, e.key.as_str()),
        (ErrorCode::Cfg001, "DicomWebOAuth.RedisUrl")
    );
    let e = err(
        json!({"CacheType": "redis", "RedisUrl": "http://x", "Servers": {"pacs": minimal_server()}}),
    );
    assert_eq!(e.code, ErrorCode::Cfg002);
}

#[test]
fn formatting_a_config_never_prints_a_secret() {
    let pem = "-----BEGIN PRIVATE KEY-----\nMIIEsecretkeymaterial\n-----END PRIVATE KEY-----";
    let c = load(
        &json!({"DicomWebOAuth": {
        "CacheType": "redis", "RedisUrl": "redis://:redis-password-77@127.0.0.1/0", "CacheEncryptionKey": "c2VjcmV0LWtleS0zMi1ieXRlcy1sb25nLWVub3VnaCE=",
        "Servers": {
            "a": minimal_server(),
            "b": {"Url": "https://b/x", "TokenEndpoint": "https://i/t", "ClientId": "c",
                  "ClientSecret": "${PACS_SECRET}", "ClientAuthMethod": "client_secret_basic",
                  "JWTPublicKey": "-----BEGIN PUBLIC KEY-----pubkeymaterial", "JWTAudience": "aud"},
            "c": {"Url": "https://b/x", "TokenEndpoint": "https://i/t", "ClientId": "c",
                  "ClientAuthMethod": "private_key_jwt", "ClientAssertionKey": pem}
        }}}),
        &env,
    )
    .unwrap()
    .unwrap();
    for text in [format!("{c:?}"), format!("{c:#?}")] {
        for secret in [
            "s3cret-value-never-printed",
            "env-secret-value-42",
            "secretkeymaterial",
            "pubkeymaterial",
            "redis-password-77",
            "c2VjcmV0LWtleS0zMi1ieXRlcy1sb25nLWVub3VnaCE",
        ] {
            assert!(!text.contains(secret), "{secret} leaked");
        }
        assert!(text.contains("[REDACTED]"));
    }
}

#[test]
fn proxy_clients_default_to_loopback() {
    let c = load_section(with_server(minimal_server())).unwrap();
    assert!(c.proxy_allowed("127.0.0.1"));
    assert!(c.proxy_allowed("::1"));
    assert!(c.proxy_allowed("::ffff:127.0.0.1"));
    assert!(!c.proxy_allowed("10.0.0.5"));
    assert!(!c.proxy_allowed("garbage"));
    let c = load_section(json!({"ProxyAllowedClients": ["10.1.0.0/16", "192.0.2.7"], "Servers": {"pacs": minimal_server()}})).unwrap();
    assert!(c.proxy_allowed("10.1.200.3"));
    assert!(c.proxy_allowed("192.0.2.7"));
    assert!(!c.proxy_allowed("10.2.0.1"));
    assert!(!c.proxy_allowed("127.0.0.1"));
    let e =
        err(json!({"ProxyAllowedClients": "10.0.0.0/33", "Servers": {"pacs": minimal_server()}}));
    assert_eq!(
        (e.code, e.key.as_str()),
        (ErrorCode::Cfg002, "DicomWebOAuth.ProxyAllowedClients")
    );
}

#[test]
fn a_providers_missing_keys_are_cfg002_naming_them() {
    let e = err(json!({"Servers": {"s": {"ProviderType": "aws", "Url": "https://x/y"}}}));
    assert_eq!(
        (e.code, e.key.as_str()),
        (ErrorCode::Cfg002, "DicomWebOAuth.Servers.s.Region")
    );
    assert!(e.message.contains("aws"), "{e}");
    let e = err(
        json!({"Servers": {"s": {"ProviderType": "aws", "Url": "https://x/y", "Region": "us-east-1",
                                          "AccessKeyId": "AKIA"}}}),
    );
    assert_eq!(
        (e.code, e.key.as_str()),
        (ErrorCode::Cfg002, "DicomWebOAuth.Servers.s.SecretAccessKey")
    );
    let e = err(
        json!({"Servers": {"s": {"ProviderType": "google", "Project": "p", "Location": "l", "Dataset": "d"}}}),
    );
    assert_eq!(
        (e.code, e.key.as_str()),
        (ErrorCode::Cfg002, "DicomWebOAuth.Servers.s.DicomStore")
    );
    let e = err(
        json!({"Servers": {"s": {"ProviderType": "aws", "Url": "https://x/y", "Region": "us-east-1", "Mode": "header"}}}),
    );
    assert_eq!(
        (e.code, e.key.as_str()),
        (ErrorCode::Cfg002, "DicomWebOAuth.Servers.s.Mode")
    );
}
