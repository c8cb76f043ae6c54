//! Every file in config-templates/ loads, and builds a token engine (no I/O),
//! with the environment variables and files it names.

use dicomweb_oauth_core::config::{self, CloudCredential, ProviderType};
use dicomweb_oauth_core::token::Engine;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;

fn templates() -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config-templates");
    let mut all: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, value)
        })
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

#[test]
fn every_template_loads_and_builds() {
    let dir = tempfile::tempdir().unwrap();
    // Files the templates point at, made here.
    // An RSA certificate with its key, as Entra certificate credentials use.
    let (cert_pem, key_pem) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=orthanc",
        ])
        .arg("-keyout")
        .arg(&key_pem)
        .arg("-out")
        .arg(&cert_pem)
        .output()
        .expect("openssl (scripts/setup installs it)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let cert_file = dir.path().join("azure-cert.pem");
    std::fs::write(
        &cert_file,
        std::fs::read_to_string(&cert_pem).unwrap() + &std::fs::read_to_string(&key_pem).unwrap(),
    )
    .unwrap();
    let key = testkit::Idp::generate_key("RS256", "k1");
    let key_file = dir.path().join("client-key.pem");
    std::fs::write(&key_file, key["private_pem"].as_str().unwrap()).unwrap();
    let service_account = dir.path().join("sa.json");
    std::fs::write(
        &service_account,
        json!({"type": "service_account", "project_id": "my-gcp-project", "private_key_id": "k1",
               "private_key": key["private_pem"], "client_email": "orthanc@my-gcp-project.iam.gserviceaccount.com",
               "token_uri": "https://oauth2.googleapis.com/token"})
        .to_string(),
    )
    .unwrap();
    let env: HashMap<&str, String> = HashMap::from([
        ("AZURE_CLIENT_SECRET", "x".to_owned()),
        (
            "AZURE_CLIENT_CERTIFICATE_FILE",
            cert_file.display().to_string(),
        ),
        (
            "GOOGLE_SERVICE_ACCOUNT_FILE",
            service_account.display().to_string(),
        ),
        ("PACS_CLIENT_SECRET", "x".to_owned()),
        ("KEYCLOAK_CLIENT_SECRET", "x".to_owned()),
        ("AUTH0_CLIENT_SECRET", "x".to_owned()),
        ("OKTA_CLIENT_KEY_FILE", key_file.display().to_string()),
        ("REDIS_PASSWORD", "x".to_owned()),
        (
            "DICOMWEB_OAUTH_CACHE_KEY",
            "q0Qf7mLr9sJ3Z1m3l0wq2cB6m2y8WcY3pQe4Rj2t5Ck=".to_owned(),
        ),
    ]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let found = templates();
    assert!(found.len() >= 10, "{} templates", found.len());
    for (name, template) in found {
        let loaded = config::load(&template, &|var| env.get(var).cloned())
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .unwrap_or_else(|| panic!("{name}: no DicomWebOAuth section"));
        let server = &loaded.servers[0];
        match name.as_str() {
            n if n.starts_with("google") => {
                assert_eq!(server.provider, ProviderType::Google, "{name}");
                assert!(server.url.as_str().contains("/projects/my-gcp-project/locations/us-central1/datasets/my-dataset/dicomStores/my-dicom-store/dicomWeb"), "{name}: {}", server.url);
            }
            n if n.starts_with("azure-managed") || n.starts_with("azure-workload") => {
                assert_eq!(
                    server.provider,
                    ProviderType::AzureManagedIdentity,
                    "{name}"
                );
                assert!(matches!(
                    server.cloud,
                    CloudCredential::AzureManagedIdentity { .. }
                ));
            }
            n if n.starts_with("azure") => {
                assert_eq!(server.provider, ProviderType::Azure, "{name}");
                let v = server
                    .jwt_validation
                    .as_ref()
                    .expect("Entra tokens are validated by default");
                assert_eq!(
                    v.audience.as_deref(),
                    Some("https://dicom.healthcareapis.azure.com")
                );
                assert!(
                    v.extra_issuers
                        .iter()
                        .any(|i| i.starts_with("https://sts.windows.net/")),
                    "{:?}",
                    v.extra_issuers
                );
                assert_eq!(
                    server.token_endpoint.as_ref().unwrap().as_str(),
                    "https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000/oauth2/v2.0/token"
                );
            }
            _ => {}
        }
        let engine = Engine::new(&loaded, runtime.handle().clone());
        if let Err(e) = engine {
            panic!("{name}: {e}");
        }
    }
}
