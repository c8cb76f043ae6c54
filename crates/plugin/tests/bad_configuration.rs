//! Each kind of bad configuration stops a real Orthanc at start-up with a
//! non-zero exit and one log line naming the code, the server and the key.

use serde_json::{json, Value};
use testkit::OrthancBuilder;

const SECRET: &str = "bad-config-secret-7c21";

fn server() -> Value {
    json!({
        "Url": "https://pacs.example.org/dicom-web",
        "TokenEndpoint": "https://idp.example.org/oauth2/token",
        "ClientId": "orthanc",
        "ClientSecret": SECRET,
    })
}

/// Starts Orthanc with the server patched by `patch` (null removes a key);
/// returns the plugin's error line.
fn refused(patch: Value) -> String {
    let mut s = server();
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            s.as_object_mut().unwrap().remove(k);
        } else {
            s[k] = v.clone();
        }
    }
    refused_section(json!({"ConfigVersion": "2.0", "Servers": {"pacs": s}}))
}

fn refused_section(section: Value) -> String {
    let exited = OrthancBuilder::new().oauth(section).run_to_exit();
    assert!(
        !exited.status.success(),
        "Orthanc must exit non-zero:\n{}",
        exited.log
    );
    testkit::assert_no_secrets("the Orthanc log", &exited.log, &[SECRET]);
    let lines: Vec<&str> = exited
        .log
        .lines()
        .filter(|l| l.contains("invalid configuration"))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "exactly one error line expected:\n{}",
        exited.log
    );
    assert!(
        lines[0].starts_with('E'),
        "not logged as an error: {}",
        lines[0]
    );
    lines[0].to_owned()
}

fn assert_mentions(line: &str, parts: &[&str]) {
    for part in parts {
        assert!(line.contains(part), "{part:?} missing from: {line}");
    }
}

#[test]
fn missing_key() {
    let line = refused(json!({"ClientId": null}));
    assert_mentions(
        &line,
        &[
            "[CFG-001]",
            "server 'pacs'",
            "DicomWebOAuth.Servers.pacs.ClientId",
            "missing",
        ],
    );
}

#[test]
fn wrong_type() {
    let line = refused(json!({"TokenRefreshBufferSeconds": "300"}));
    assert_mentions(
        &line,
        &[
            "[CFG-002]",
            "server 'pacs'",
            "DicomWebOAuth.Servers.pacs.TokenRefreshBufferSeconds",
            "expected an integer",
        ],
    );
}

#[test]
fn out_of_range_number() {
    let line = refused(json!({"TokenRefreshBufferSeconds": 7200}));
    assert_mentions(
        &line,
        &[
            "[CFG-002]",
            "server 'pacs'",
            "TokenRefreshBufferSeconds",
            "out of range 0..=3600",
        ],
    );
}

#[test]
fn unknown_key_with_suggestion() {
    let line = refused(json!({"ClientSecert": "x"}));
    assert_mentions(
        &line,
        &[
            "[CFG-002]",
            "server 'pacs'",
            "DicomWebOAuth.Servers.pacs.ClientSecert",
            "did you mean 'ClientSecret'",
        ],
    );
}

#[test]
fn unset_environment_variable() {
    let line = refused(json!({"ClientSecret": "${DICOMWEB_OAUTH_UNSET_VAR}"}));
    assert_mentions(
        &line,
        &[
            "[CFG-003]",
            "server 'pacs'",
            "DicomWebOAuth.Servers.pacs.ClientSecret",
            "DICOMWEB_OAUTH_UNSET_VAR",
        ],
    );
}

#[test]
fn malformed_url() {
    let line = refused(json!({"TokenEndpoint": "idp.example.org/token"}));
    assert_mentions(
        &line,
        &[
            "[CFG-002]",
            "server 'pacs'",
            "DicomWebOAuth.Servers.pacs.TokenEndpoint",
            "malformed URL",
        ],
    );
}

#[test]
fn no_servers_and_global_errors() {
    let line = refused_section(json!({"ConfigVersion": "2.0", "Servers": {}}));
    assert_mentions(&line, &["[CFG-001]", "DicomWebOAuth.Servers"]);
    let line = refused_section(json!({"LogLevel": "LOUD", "Servers": {"pacs": server()}}));
    assert_mentions(
        &line,
        &[
            "[CFG-002]",
            "DicomWebOAuth.LogLevel",
            "DEBUG, INFO, WARNING, ERROR",
        ],
    );
}
