//! Cloud providers wired end to end in a real Orthanc: the proxy adds a token
//! from Google's JWT-bearer grant, from the Azure instance metadata service, or
//! from App Service's identity endpoint — against the protocol emulations in
//! fixtures/google-emulator and fixtures/azure-emulator (the real services do
//! not run here; the emulations follow Google's and Microsoft's published
//! protocols, see their headers).

use serde_json::json;
use testkit::{AzureEmulator, Fault, FaultServer, GoogleEmulator, Idp, OrthancBuilder};

fn upstream() -> FaultServer {
    FaultServer::start(vec![Fault::json(200, json!([]))])
}

fn bearer(upstream: &FaultServer) -> String {
    upstream.requests()[0]
        .header("authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .expect("a bearer token upstream")
        .to_owned()
}

#[test]
fn google_service_account() {
    let key = Idp::generate_key("RS256", "sa-key-1");
    let email = "orthanc@emulated-project.iam.gserviceaccount.com";
    let google = GoogleEmulator::start(&json!({
        "serviceAccounts": [{"client_email": email, "public_key_pem": key["public_pem"], "private_key_id": "sa-key-1"}]
    }));
    let file = google.write_service_account(
        "sa.json",
        email,
        key["private_pem"].as_str().unwrap(),
        "sa-key-1",
    );
    let up = upstream();
    let orthanc = OrthancBuilder::new()
        .oauth(json!({"Servers": {"gcp": {
            "ProviderType": "google", "ServiceAccountFile": file, "Url": up.url("/dicomWeb")
        }}}))
        .start();
    let reply = orthanc.get("/oauth-dicom-web/servers/gcp/studies");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(bearer(&up).starts_with("ya29."), "a Google access token");
    let stats = google.stats();
    assert_eq!(stats["last_assertion_claims"]["iss"], email);
    assert_eq!(
        stats["last_assertion_claims"]["scope"],
        "https://www.googleapis.com/auth/cloud-healthcare"
    );
    testkit::assert_no_secrets(
        "the Orthanc log",
        &orthanc.log(),
        &[key["private_pem"].as_str().unwrap(), &bearer(&up)],
    );
}

#[test]
fn azure_managed_identity_through_imds_and_app_service() {
    let azure = AzureEmulator::start(&json!({"identityHeader": "app-service-header-secret-1",
        "knownClientIds": ["11111111-2222-4333-8444-555555555555"]}));
    // IMDS (VM), with a user-assigned identity.
    let up = upstream();
    let orthanc = OrthancBuilder::new()
        .oauth(json!({"Servers": {"ahds": {
            "ProviderType": "azuremanagedidentity", "Url": up.url("/v2"),
            "ManagedIdentityClientId": "11111111-2222-4333-8444-555555555555",
            "ImdsEndpoint": azure.imds_endpoint()
        }}}))
        .start();
    assert_eq!(
        orthanc.get("/oauth-dicom-web/servers/ahds/studies").status,
        200
    );
    let token = bearer(&up);
    let stats = azure.stats();
    assert!(stats["imds_requests"].as_u64().unwrap() >= 1, "{stats}");
    assert_eq!(
        stats["last_query"]["resource"],
        "https://dicom.healthcareapis.azure.com"
    );
    assert_eq!(
        stats["last_query"]["client_id"],
        "11111111-2222-4333-8444-555555555555"
    );
    testkit::assert_no_secrets("the Orthanc log", &orthanc.log(), &[&token]);
    drop(orthanc);

    // App Service / Container Apps: IDENTITY_ENDPOINT and IDENTITY_HEADER in the environment.
    let up = upstream();
    let orthanc = OrthancBuilder::new()
        .env("IDENTITY_ENDPOINT", &azure.identity_endpoint())
        .env("IDENTITY_HEADER", "app-service-header-secret-1")
        .oauth(json!({"Servers": {"ahds": {"ProviderType": "azuremanagedidentity", "Url": up.url("/v2")}}}))
        .start();
    assert_eq!(
        orthanc.get("/oauth-dicom-web/servers/ahds/studies").status,
        200
    );
    assert!(azure.stats()["appservice_requests"].as_u64().unwrap() >= 1);
    testkit::assert_no_secrets(
        "the Orthanc log",
        &orthanc.log(),
        &["app-service-header-secret-1", &bearer(&up)],
    );
}
