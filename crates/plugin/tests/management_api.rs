//! The management API, metrics, structured logs and rate limiting, in a real
//! Orthanc with the real identity provider (SPEC 3.3–3.5).

use serde_json::{json, Value};
use std::process::Command;
use testkit::{Fault, FaultServer, Idp, Orthanc, OrthancBuilder};

const SECRET: &str = "mgmt-client-secret-8d2f";

fn idp() -> Idp {
    Idp::start(&json!({
        "accessTokenTtl": 300,
        "clients": [{"client_id": "orthanc", "client_secret": SECRET,
                     "token_endpoint_auth_method": "client_secret_post", "scope": "dicom.read"}]
    }))
}

/// Orthanc with server "good" (the identity provider) and "down" (a closed port).
fn orthanc(idp: &Idp, upstream: &FaultServer, extra: Value) -> Orthanc {
    let mut section = json!({
        "Servers": {
            "good": {"Url": upstream.url("/dicom-web"), "TokenEndpoint": idp.token_endpoint(),
                     "ClientId": "orthanc", "ClientSecret": SECRET, "Scope": "dicom.read"},
            "down": {"Url": upstream.url("/dicom-web"),
                     "TokenEndpoint": format!("http://127.0.0.1:{}/token", testkit::free_port()),
                     "ClientId": "orthanc", "ClientSecret": SECRET,
                     "ResilienceConfig": {"RetryMaxAttempts": 1}}
        }
    });
    for (k, v) in extra.as_object().unwrap() {
        section[k] = v.clone();
    }
    OrthancBuilder::new().oauth(section).start()
}

fn tokens_in(text: &str) -> Vec<String> {
    // JWTs issued by the provider: three base64url parts starting with eyJ.
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_'))
        .filter(|w| w.starts_with("eyJ") && w.split('.').count() == 3)
        .map(str::to_owned)
        .collect()
}

fn assert_envelope(body: &Value) {
    assert_eq!(body["api_version"], "2.0", "{body}");
    assert_eq!(body["plugin_version"], env!("CARGO_PKG_VERSION"));
    assert!(body["timestamp"].as_u64().unwrap() > 1_700_000_000);
}

#[test]
fn every_endpoint_answers_and_never_shows_a_token_or_secret() {
    let idp = idp();
    let upstream = FaultServer::start(vec![Fault::json(200, json!([]))]);
    let orthanc = orthanc(&idp, &upstream, json!({}));
    let mut answers = Vec::new();

    let test = orthanc.post_json("/dicomweb-oauth/servers/good/test", &json!({}));
    assert_eq!(test.status, 200, "{}", test.text());
    let data = &test.json()["data"];
    assert_envelope(&test.json());
    assert_eq!(data["success"], true);
    assert!(matches!(
        data["source"].as_str(),
        Some("cache" | "provider")
    ));
    answers.push(test.text());
    // A second test is served from the cache.
    let again = orthanc.post_json("/dicomweb-oauth/servers/good/test", &json!({}));
    assert_eq!(again.json()["data"]["source"], "cache");
    // force fetches a new token from the provider. (Orthanc 1.10 gives plugins no
    // query arguments on POST, so `?force=true` cannot be seen there; the body can.)
    let before = idp.token_requests();
    let forced = orthanc.post_json("/dicomweb-oauth/servers/good/test", &json!({"force": true}));
    assert_eq!(
        forced.json()["data"]["source"],
        "provider",
        "{}",
        forced.text()
    );
    assert_eq!(idp.token_requests(), before + 1);

    let failed = orthanc.post_json("/dicomweb-oauth/servers/down/test", &json!({}));
    assert_eq!(failed.status, 503, "{}", failed.text());
    let body = failed.json();
    assert_eq!(body["error_code"], "NET-002");
    assert_eq!(body["category"], "network");
    assert_eq!(body["http_status"], 503);
    assert!(body["troubleshooting"]
        .as_array()
        .is_some_and(|t| !t.is_empty()));
    answers.push(failed.text());

    for path in [
        "/dicomweb-oauth/servers/nope/test",
        "/dicomweb-oauth/servers/nope/token",
    ] {
        let reply = orthanc.http().request(
            if path.ends_with("test") {
                "POST"
            } else {
                "DELETE"
            },
            &orthanc.url(path),
            &[],
            Some(b"{}"),
        );
        assert_eq!(reply.status, 404, "{path}: {}", reply.text());
        answers.push(reply.text());
    }

    let status = orthanc.get("/dicomweb-oauth/status");
    assert_eq!(status.status, 200);
    let status_body = status.json();
    assert_envelope(&status_body);
    assert_eq!(status_body["data"]["servers_configured"], 2);
    assert_eq!(
        status_body["data"]["status"], "degraded",
        "server 'down' failed"
    );
    let down = status_body["data"]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "down")
        .unwrap()
        .clone();
    assert_eq!(down["last_error"]["error_code"], "NET-002");
    answers.push(status.text());

    let servers = orthanc.get("/dicomweb-oauth/servers").json();
    assert_envelope(&servers);
    let good = servers["data"]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "good")
        .unwrap()
        .clone();
    assert_eq!(good["has_cached_token"], true);
    assert!(good["token_expires_in"].as_u64().unwrap() > 200);
    assert_eq!(good["provider_type"], "generic");
    assert_eq!(good["token_endpoint"], idp.token_endpoint());
    answers.push(servers.to_string());

    let dropped = orthanc
        .http()
        .delete(&orthanc.url("/dicomweb-oauth/servers/good/token"));
    assert_eq!(dropped.status, 200);
    let good = orthanc.get("/dicomweb-oauth/servers").json()["data"]["servers"][1].clone();
    assert_eq!(good["has_cached_token"], false, "{good}");
    answers.push(dropped.text());

    assert_eq!(
        orthanc
            .http()
            .request(
                "POST",
                &orthanc.url("/dicomweb-oauth/status"),
                &[],
                Some(b"")
            )
            .status,
        405
    );
    answers.push(orthanc.get("/dicomweb-oauth/metrics").text());
    answers.push(orthanc.get("/dicomweb-oauth/ui").text());

    // Tokens that were really issued, to search for.
    let upstream_tokens: Vec<String> = upstream
        .requests()
        .iter()
        .filter_map(|r| r.header("authorization").map(str::to_owned))
        .collect();
    let everything = answers.join("\n");
    assert!(
        tokens_in(&everything).is_empty(),
        "a JWT appears in an answer"
    );
    testkit::assert_no_secrets("the API answers", &everything, &[SECRET]);
    for token in upstream_tokens {
        testkit::assert_no_secrets("the API answers", &everything, &[&token]);
    }
    let log = orthanc.log();
    testkit::assert_no_secrets("the Orthanc log", &log, &[SECRET]);
    assert!(tokens_in(&log).is_empty(), "a JWT appears in the log");
}

/// Parses the exposition with the official Python client's parser and returns
/// `name{labels} value` samples.
fn parse_with_prometheus_client(text: &str) -> Vec<(String, Value, f64)> {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append([s.name, s.labels, s.value])
print(json.dumps(out))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the Prometheus parser refused the exposition (pip install prometheus-client; scripts/setup does): {}", String::from_utf8_lossy(&out.stderr));
    let samples: Vec<(String, Value, f64)> = serde_json::from_slice(&out.stdout).unwrap();
    samples
}

fn sample(samples: &[(String, Value, f64)], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l[*k] == *v))
        .map(|(_, _, v)| v)
        .sum()
}

#[test]
fn metrics_move_with_the_traffic_and_parse_as_prometheus_text() {
    let idp = idp();
    let upstream = FaultServer::start(vec![Fault::json(200, json!([]))]);
    let orthanc = orthanc(&idp, &upstream, json!({}));
    // Traffic: a token (start-up refresher or test), cache hits through the proxy, a refused provider.
    assert_eq!(
        orthanc
            .post_json("/dicomweb-oauth/servers/good/test", &json!({}))
            .status,
        200
    );
    for _ in 0..3 {
        assert_eq!(
            orthanc.get("/oauth-dicom-web/servers/good/studies").status,
            200
        );
    }
    assert_eq!(
        orthanc
            .post_json("/dicomweb-oauth/servers/down/test", &json!({}))
            .status,
        503
    );

    let reply = orthanc.get("/dicomweb-oauth/metrics");
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .content_type
            .as_deref()
            .unwrap_or("")
            .starts_with("text/plain"),
        "{:?}",
        reply.content_type
    );
    let s = parse_with_prometheus_client(&reply.text());
    let good = [("server", "good")];
    assert_eq!(
        sample(
            &s,
            "dicomweb_oauth_token_acquisitions_total",
            &[("server", "good"), ("status", "success")]
        ),
        1.0
    );
    assert!(
        sample(
            &s,
            "dicomweb_oauth_token_acquisitions_total",
            &[("server", "down"), ("status", "failure")]
        ) >= 1.0
    );
    assert!(sample(&s, "dicomweb_oauth_cache_hits_total", &good) >= 3.0);
    assert!(
        sample(
            &s,
            "dicomweb_oauth_token_acquisition_duration_seconds_count",
            &good
        ) >= 1.0
    );
    assert!(
        sample(
            &s,
            "dicomweb_oauth_errors_total",
            &[
                ("server", "down"),
                ("error_code", "NET-002"),
                ("category", "network")
            ]
        ) >= 1.0
    );
    assert_eq!(
        sample(&s, "dicomweb_oauth_circuit_breaker_state", &good),
        0.0
    );
    assert_eq!(
        sample(
            &s,
            "dicomweb_oauth_proxy_requests_total",
            &[("server", "good"), ("method", "GET"), ("status", "200")]
        ),
        3.0
    );
    assert_eq!(
        sample(
            &s,
            "dicomweb_oauth_proxy_upstream_duration_seconds_count",
            &[("server", "good"), ("status", "200")]
        ),
        3.0
    );
    assert!(sample(&s, "dicomweb_oauth_proxy_response_bytes_total", &good) >= 6.0);
    assert_eq!(
        sample(
            &s,
            "dicomweb_oauth_http_requests_total",
            &[
                ("method", "POST"),
                ("endpoint", "/dicomweb-oauth/servers/{name}/test"),
                ("status", "503")
            ]
        ),
        1.0
    );
    assert!(
        sample(
            &s,
            "dicomweb_oauth_http_request_duration_seconds_count",
            &[
                ("method", "GET"),
                ("endpoint", "/oauth-dicom-web/servers/{name}")
            ]
        ) >= 3.0
    );
    for name in [
        "dicomweb_oauth_cache_misses_total",
        "dicomweb_oauth_circuit_breaker_rejections_total",
        "dicomweb_oauth_retry_attempts_total",
    ] {
        assert!(s.iter().any(|(n, _, _)| n == name), "{name} missing");
    }
    testkit::assert_no_secrets("the metrics", &reply.text(), &[SECRET]);
}

#[test]
fn logs_are_json_carry_the_correlation_id_and_rotate() {
    let idp = idp();
    let upstream = FaultServer::start(vec![Fault::json(200, json!([]))]);
    let dir = tempfile::tempdir().unwrap();
    let log_file = dir.path().join("plugin.log");
    let orthanc = orthanc(
        &idp,
        &upstream,
        json!({
            "LogLevel": "DEBUG", "LogFile": log_file, "LogFileMaxBytes": 4096, "LogFileBackups": 2
        }),
    );
    let reply = orthanc.http().request(
        "GET",
        &orthanc.url("/oauth-dicom-web/servers/good/studies"),
        &[("X-Request-ID", "req-4242-abc")],
        None,
    );
    assert_eq!(reply.status, 200);
    assert_eq!(
        upstream.requests()[0].header("x-request-id"),
        Some("req-4242-abc"),
        "forwarded upstream"
    );
    // Without an id from the caller, one is made and forwarded.
    orthanc.get("/oauth-dicom-web/servers/good/studies");
    let generated = upstream.requests()[1]
        .header("x-request-id")
        .unwrap()
        .to_owned();
    assert_eq!(generated.len(), 32);

    let lines = testkit::plugin_log_lines(&orthanc.log());
    let proxied: Vec<&Value> = lines.iter().filter(|l| l["message"] == "proxied").collect();
    assert!(
        proxied.iter().any(|l| l["correlation_id"] == "req-4242-abc"
            && l["server"] == "good"
            && l["operation"] == "proxy"),
        "{proxied:?}"
    );
    assert!(proxied
        .iter()
        .any(|l| l["correlation_id"] == generated.as_str()));
    assert!(
        lines.iter().any(|l| l["event"] == "auth_success"),
        "security event auth_success"
    );
    for l in &lines {
        for key in [
            "timestamp",
            "level",
            "message",
            "server",
            "operation",
            "correlation_id",
            "fields",
        ] {
            assert!(l.get(key).is_some(), "{key} missing: {l}");
        }
    }
    // Enough traffic to rotate the 4 KiB file.
    for _ in 0..30 {
        orthanc.get("/oauth-dicom-web/servers/good/studies");
    }
    let rotated = dir.path().join("plugin.log.1");
    testkit::wait_for(
        "LogFile rotation",
        std::time::Duration::from_secs(10),
        || rotated.exists().then_some(()),
    );
    for path in [&log_file, &rotated] {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(
            text.len() <= 4096,
            "{} has {} bytes",
            path.display(),
            text.len()
        );
        for line in text.lines() {
            let v: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            assert!(v["level"].is_string());
        }
        testkit::assert_no_secrets("the LogFile", &text, &[SECRET]);
        assert!(tokens_in(&text).is_empty(), "a JWT in the LogFile");
    }
    assert!(!dir.path().join("plugin.log.3").exists());
}

#[test]
fn the_request_past_the_rate_limit_gets_429_and_an_event() {
    let idp = idp();
    let upstream = FaultServer::start(vec![Fault::json(200, json!([]))]);
    let orthanc = orthanc(
        &idp,
        &upstream,
        json!({"RateLimitRequests": 5, "RateLimitWindowSeconds": 60}),
    );
    for i in 0..5 {
        assert_eq!(
            orthanc.get("/dicomweb-oauth/status").status,
            200,
            "request {i}"
        );
    }
    // Orthanc 1.10 cannot send 429 from a plugin (its status enumeration lacks it):
    // there the plugin answers 503 with the same Retry-After and body.
    let version = orthanc.get("/system").json()["Version"]
        .as_str()
        .unwrap()
        .to_owned();
    let expected = if version.starts_with("1.10.") {
        503
    } else {
        429
    };
    for path in ["/dicomweb-oauth/servers", "/dicomweb-oauth/status"] {
        let refused = orthanc.get(path);
        assert_eq!(
            refused.status,
            expected,
            "{path} on Orthanc {version}: {}",
            refused.text()
        );
        assert_eq!(refused.json()["error"], "rate_limit_exceeded");
        let retry_after: u64 = refused
            .header("retry-after")
            .expect("Retry-After")
            .parse()
            .unwrap();
        assert!((1..=12).contains(&retry_after), "Retry-After {retry_after}");
    }
    // The proxy route has its own limit, off by default.
    for _ in 0..8 {
        assert_eq!(
            orthanc.get("/oauth-dicom-web/servers/good/studies").status,
            200
        );
    }
    let lines = testkit::plugin_log_lines(&orthanc.log());
    assert!(
        lines
            .iter()
            .any(|l| l["event"] == "rate_limit_exceeded" && l["level"] == "WARNING"),
        "no rate_limit_exceeded event"
    );
}

/// Checks `value` against an OpenAPI schema: types, required properties,
/// enums, recursively (enough to keep docs/openapi.json honest).
fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        return conforms(doc, &doc["components"]["schemas"][name], value, at);
    }
    if let Some(options) = schema["oneOf"].as_array() {
        return options
            .iter()
            .find(|o| conforms(doc, o, value, at).is_ok())
            .map(|_| ())
            .ok_or_else(|| format!("{at}: matches no oneOf option: {value}"));
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let type_ok = types.is_empty()
        || types.iter().any(|t| match *t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_u64() || value.is_i64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            _ => false,
        });
    if !type_ok {
        return Err(format!("{at}: {value} is not {types:?}"));
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            return Err(format!("{at}: {value} not in {allowed:?}"));
        }
    }
    if let Some(object) = value.as_object() {
        for key in schema["required"].as_array().into_iter().flatten() {
            let key = key.as_str().unwrap();
            if !object.contains_key(key) {
                return Err(format!("{at}: required {key} missing"));
            }
        }
        if let Some(properties) = schema["properties"].as_object() {
            for (key, sub) in properties {
                if let Some(v) = object.get(key) {
                    conforms(doc, sub, v, &format!("{at}.{key}"))?;
                }
            }
        }
    }
    if let (Some(items), Some(list)) = (schema.get("items"), value.as_array()) {
        for (i, v) in list.iter().enumerate() {
            conforms(doc, items, v, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

#[test]
fn answers_match_the_openapi_description() {
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(testkit::workspace_root().join("docs/openapi.json")).unwrap(),
    )
    .unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for route in [
        "/dicomweb-oauth/status",
        "/dicomweb-oauth/servers",
        "/dicomweb-oauth/servers/{name}/test",
        "/dicomweb-oauth/servers/{name}/token",
        "/dicomweb-oauth/metrics",
        "/dicomweb-oauth/ui",
        "/oauth-dicom-web/servers/{name}/{path}",
    ] {
        assert!(paths.contains_key(route), "{route} is not documented");
    }
    let idp = idp();
    let upstream = FaultServer::start(vec![Fault::json(200, json!([]))]);
    let orthanc = orthanc(&idp, &upstream, json!({}));
    let schema = |path: &str, method: &str, status: &str| {
        let mut response = &paths[path][method]["responses"][status];
        if let Some(reference) = response["$ref"].as_str() {
            response = &doc["components"]["responses"]
                [reference.trim_start_matches("#/components/responses/")];
        }
        response["content"]["application/json"]["schema"].clone()
    };
    let check = |reply: testkit::Reply, path: &str, method: &str| {
        let status = reply.status.to_string();
        let s = schema(path, method, &status);
        assert!(!s.is_null(), "{method} {path} {status} is not documented");
        conforms(
            &doc,
            &s,
            &reply.json(),
            &format!("{method} {path} {status}"),
        )
        .unwrap();
    };
    check(
        orthanc.get("/dicomweb-oauth/status"),
        "/dicomweb-oauth/status",
        "get",
    );
    check(
        orthanc.get("/dicomweb-oauth/servers"),
        "/dicomweb-oauth/servers",
        "get",
    );
    check(
        orthanc.post_json("/dicomweb-oauth/servers/good/test", &json!({})),
        "/dicomweb-oauth/servers/{name}/test",
        "post",
    );
    check(
        orthanc.post_json("/dicomweb-oauth/servers/down/test", &json!({})),
        "/dicomweb-oauth/servers/{name}/test",
        "post",
    );
    check(
        orthanc.post_json("/dicomweb-oauth/servers/nope/test", &json!({})),
        "/dicomweb-oauth/servers/{name}/test",
        "post",
    );
    let status_after = orthanc.get("/dicomweb-oauth/status");
    check(status_after, "/dicomweb-oauth/status", "get");
    check(
        orthanc
            .http()
            .delete(&orthanc.url("/dicomweb-oauth/servers/good/token")),
        "/dicomweb-oauth/servers/{name}/token",
        "delete",
    );
}
