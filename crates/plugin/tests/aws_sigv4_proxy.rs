//! AWS HealthImaging end to end: Orthanc A signs every proxied request with
//! SigV4 (service medical-imaging); a verifier that recomputes the signature
//! from the raw request — fixtures/aws-emulator, written from AWS's "Create a
//! signed AWS API request" (AWS endpoints do not run here) — admits it and
//! forwards it to Orthanc B's DICOMweb API.

use serde_json::json;
use testkit::{create_study, study_file_hashes, AwsEmulator, OrthancBuilder};

const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY-31";

#[test]
fn studies_are_sent_queried_and_retrieved_with_signed_requests() {
    let b = OrthancBuilder::new().without_oauth_plugin().start();
    let aws = AwsEmulator::start(&json!({"sigv4": {
        "region": "us-east-1", "service": "medical-imaging",
        "keys": [{"accessKeyId": "AKIAORTHANCEXAMPLE", "secretAccessKey": SECRET_KEY}],
        "upstream": b.url("/dicom-web")
    }}));
    let port = testkit::free_port();
    let a = OrthancBuilder::new()
        .port(port)
        .oauth(json!({"Servers": {"healthimaging": {
            "ProviderType": "aws", "Region": "us-east-1",
            "Url": aws.sigv4_url(),
            "AccessKeyId": "AKIAORTHANCEXAMPLE", "SecretAccessKey": "${TEST_AWS_SECRET}"
        }}}))
        .env("TEST_AWS_SECRET", SECRET_KEY)
        .start();
    testkit::wait_for(
        "auto-registration",
        std::time::Duration::from_secs(20),
        || {
            a.get("/dicom-web/servers")
                .json()
                .as_array()?
                .iter()
                .any(|s| s == "healthimaging")
                .then_some(())
        },
    );

    let study = create_study(&a, "AWS-1", 2, 100_000);
    let reply = a.post_json(
        "/dicom-web/servers/healthimaging/stow",
        &json!({"Resources": [study.id], "Synchronous": true}),
    );
    assert_eq!(reply.status, 200, "{}\n{}", reply.text(), aws.log());
    assert_eq!(
        study_file_hashes(&b, &study.study_uid),
        study_file_hashes(&a, &study.study_uid)
    );

    let qido = a.post_json(
        "/dicom-web/servers/healthimaging/qido",
        &json!({"Uri": "/studies", "Arguments": {"PatientID": "AWS-1"}}),
    );
    assert_eq!(qido.status, 200, "{}", qido.text());
    assert_eq!(qido.json().as_array().unwrap().len(), 1);

    let stats = aws.stats();
    assert!(stats["sigv4_accepted"].as_u64().unwrap() >= 2, "{stats}");
    assert_eq!(stats["sigv4_rejected"], 0, "{stats}");
    testkit::assert_no_secrets("the Orthanc log", &a.log(), &[SECRET_KEY]);
    testkit::assert_no_secrets(
        "the status",
        &a.get("/dicomweb-oauth/status").text(),
        &[SECRET_KEY],
    );
}

#[test]
fn a_wrong_secret_is_refused_by_the_verifier() {
    let aws = AwsEmulator::start(&json!({"sigv4": {
        "keys": [{"accessKeyId": "AKIAORTHANCEXAMPLE", "secretAccessKey": SECRET_KEY}]
    }}));
    let a = OrthancBuilder::new()
        .oauth(json!({"Servers": {"healthimaging": {
            "ProviderType": "aws", "Region": "us-east-1", "Url": aws.sigv4_url(), "AutoRegister": false,
            "AccessKeyId": "AKIAORTHANCEXAMPLE", "SecretAccessKey": "not-the-right-secret"
        }}}))
        .start();
    let reply = a.get("/oauth-dicom-web/servers/healthimaging/studies");
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert_eq!(aws.stats()["sigv4_rejected"], 1);
}
