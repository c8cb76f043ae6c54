//! The plugin inside a real Orthanc 1.10.1 with the DICOMweb plugin beside it.

use serde_json::json;
use testkit::OrthancBuilder;

fn valid_section() -> serde_json::Value {
    json!({
        "ConfigVersion": "2.0",
        "Servers": {
            "pacs": {
                "Url": "https://pacs.example.org/dicom-web",
                "TokenEndpoint": "https://idp.example.org/oauth2/token",
                "ClientId": "orthanc",
                "ClientSecret": "${TEST_CLIENT_SECRET}",
            }
        }
    })
}

#[test]
fn loads_beside_the_dicomweb_plugin_and_reports_name_and_version() {
    let orthanc = OrthancBuilder::new()
        .oauth(valid_section())
        .env("TEST_CLIENT_SECRET", "plugin-loads-secret-1f9a")
        .start();
    let plugins = orthanc.get("/plugins").json();
    let names: Vec<&str> = plugins
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(names.contains(&"dicomweb-oauth"), "{names:?}");
    assert!(names.contains(&"dicom-web"), "{names:?}");
    let me = orthanc.get("/plugins/dicomweb-oauth");
    assert_eq!(me.status, 200);
    let me = me.json();
    assert_eq!(me["ID"], "dicomweb-oauth");
    assert_eq!(me["Version"], env!("CARGO_PKG_VERSION"));
    assert!(me["Description"].as_str().unwrap().contains("OAuth2"));

    let (status, log) = orthanc.stop();
    assert!(status.success(), "Orthanc exit {status}\n{log}");
    assert!(
        log.contains("dicomweb-oauth 0.1.0 started with 1 server(s): pacs"),
        "{log}"
    );
    assert!(log.contains("dicomweb-oauth stopped"), "{log}");
    testkit::assert_no_secrets("the Orthanc log", &log, &["plugin-loads-secret-1f9a"]);
}

#[test]
fn without_a_section_the_plugin_loads_idle_with_a_warning() {
    let orthanc = OrthancBuilder::new().start();
    assert_eq!(orthanc.get("/plugins/dicomweb-oauth").status, 200);
    let (status, log) = orthanc.stop();
    assert!(status.success());
    let warning = testkit::plugin_log_lines(&log)
        .into_iter()
        .find(|l| {
            l["message"]
                .as_str()
                .unwrap()
                .contains("no \"DicomWebOAuth\" section")
        })
        .unwrap_or_else(|| panic!("no idle warning in:\n{log}"));
    assert_eq!(warning["level"], "WARNING", "{warning}");
}

#[test]
fn version_1_configuration_is_migrated_at_start_up() {
    let mut section = valid_section();
    section.as_object_mut().unwrap().remove("ConfigVersion");
    let orthanc = OrthancBuilder::new()
        .oauth(section)
        .env("TEST_CLIENT_SECRET", "x")
        .start();
    let (_, log) = orthanc.stop();
    let line = testkit::plugin_log_lines(&log)
        .into_iter()
        .find(|l| {
            l["message"]
                .as_str()
                .unwrap()
                .contains("configuration version 1.0 migrated to 2.0")
        })
        .unwrap_or_else(|| panic!("{log}"));
    let message = line["message"].as_str().unwrap();
    assert!(
        message.contains("Servers.pacs.ProviderType = \"auto\""),
        "{message}"
    );
    assert!(
        message.contains("Servers.pacs.TokenRefreshBufferSeconds = 300"),
        "{message}"
    );
}

#[test]
fn verify_ssl_false_is_warned_loudly() {
    let mut section = valid_section();
    section["Servers"]["pacs"]["VerifySSL"] = json!(false);
    let orthanc = OrthancBuilder::new()
        .oauth(section)
        .env("TEST_CLIENT_SECRET", "x")
        .start();
    let (_, log) = orthanc.stop();
    let line = log
        .lines()
        .find(|l| l.contains("TLS CERTIFICATE VERIFICATION IS DISABLED for server 'pacs'"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line.starts_with('W'), "{line}");
}
