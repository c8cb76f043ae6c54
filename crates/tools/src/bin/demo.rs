//! The demo (`scripts/demo`): an identity provider, an OAuth-protected
//! DICOMweb server and an Orthanc with the plugin, all on loopback; a study
//! is sent, queried and retrieved through the standard DICOMweb plugin.
//! Everything started here is stopped on exit.

use serde_json::json;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use testkit::{create_study, study_file_hashes, wait_for, Gateway, Idp, OrthancBuilder};

fn step(text: &str) {
    println!("\n==> {text}");
}

fn check(ok: bool, what: &str) -> Result<(), String> {
    if ok {
        println!("    ok: {what}");
        Ok(())
    } else {
        Err(format!("FAILED: {what}"))
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => {
            println!("\nDemo finished: every step succeeded. All processes stopped.");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\n{e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let started = Instant::now();
    let secret = "demo-client-secret";

    step("Starting the identity provider (oidc-provider, OpenID Certified)");
    let idp = Idp::start(&json!({
        "accessTokenTtl": 3600,
        "defaultAudience": "https://dicom.example",
        "clients": [{"client_id": "orthanc", "client_secret": secret,
                     "token_endpoint_auth_method": "client_secret_post", "scope": "dicom.read dicom.write"}]
    }));
    println!("    issuer {}", idp.issuer);

    step("Starting the protected DICOMweb server: Orthanc B behind a gateway that validates bearer JWTs");
    let remote = OrthancBuilder::new().without_oauth_plugin().start();
    let gateway = Gateway::start(&json!({
        "upstream": remote.url(""),
        "jwksUri": format!("{}/jwks", idp.issuer),
        "issuer": idp.issuer,
        "audience": "https://dicom.example",
        "requiredScope": "dicom.read",
        "writeScope": "dicom.write",
        "mode": "jwt",
    }));
    println!(
        "    {}/dicom-web (signature by the provider's JWKS, audience, expiry, scope)",
        gateway.url
    );
    let anonymous = remote
        .http()
        .get(&format!("{}/dicom-web/studies", gateway.url));
    check(
        anonymous.status == 401,
        "a request without a token is refused (401)",
    )?;

    step("Starting Orthanc A with the DICOMweb plugin and orthanc-dicomweb-oauth");
    // Only a DicomWebOAuth section: the plugin registers "cloud" in the DICOMweb plugin itself.
    let orthanc = OrthancBuilder::new()
        .oauth(json!({"ConfigVersion": "2.0", "Servers": {"cloud": {
            "Url": format!("{}/dicom-web", gateway.url),
            "TokenEndpoint": idp.token_endpoint(),
            "ClientId": "orthanc",
            "ClientSecret": secret,
            "Scope": "dicom.read dicom.write",
        }}}))
        .start();
    let registered = wait_for(
        "the plugin to register 'cloud'",
        Duration::from_secs(30),
        || {
            let servers = orthanc.get("/dicom-web/servers?expand").json();
            servers["cloud"]["Url"].as_str().map(str::to_owned)
        },
    );
    println!(
        "    {} — the plugin registered DICOMweb server 'cloud' at {registered} (its proxy listener on loopback)",
        orthanc.url("")
    );
    let test = orthanc.post_json("/dicomweb-oauth/servers/cloud/test", &json!({}));
    let data = &test.json()["data"];
    check(
        test.status == 200 && data["success"] == true,
        "token obtained",
    )?;
    println!(
        "    source: {}, expires in {} s",
        data["source"], data["expires_in"]
    );

    step("Creating a study in Orthanc A (3 instances, made by Orthanc's /tools/create-dicom)");
    let study = create_study(&orthanc, "DEMO-001", 3, 256 * 1024);
    let local = study_file_hashes(&orthanc, &study.study_uid);
    println!("    StudyInstanceUID {}", study.study_uid);

    step("Sending it with the DICOMweb plugin (\"Send to DICOMweb server\": an asynchronous job)");
    let reply = orthanc.post_json(
        "/dicom-web/servers/cloud/stow",
        &json!({"Resources": [study.id], "Synchronous": false}),
    );
    let job = reply.json()["ID"].as_str().ok_or("no job id")?.to_owned();
    let (state, _) = wait_for("the send job", Duration::from_secs(120), || {
        let info = orthanc.get(&format!("/jobs/{job}")).json();
        let state = info["State"].as_str().unwrap_or("").to_owned();
        matches!(state.as_str(), "Success" | "Failure").then_some((state, info))
    });
    check(state == "Success", "the send job ended in Success")?;
    let stats = gateway.stats();
    println!("    bytes sent through the gateway: {}", stats["bytes_in"]);
    let remote_copy = study_file_hashes(&remote, &study.study_uid);
    println!("    instances stored remotely: {}", remote_copy.len());
    check(
        remote_copy == local,
        "the remote copies are byte-identical (SHA-256 of each file)",
    )?;

    step("Querying the remote (QIDO-RS) through the DICOMweb plugin");
    let qido = orthanc.post_json(
        "/dicom-web/servers/cloud/qido",
        &json!({"Uri": "/studies", "Arguments": {"PatientID": "DEMO-001"}}),
    );
    let found = qido.json().as_array().map_or(0, Vec::len);
    check(
        qido.status == 200 && found == 1,
        "the study is found remotely",
    )?;

    step("Retrieving it back (WADO-RS) after deleting the local copy");
    orthanc
        .http()
        .delete(&orthanc.url(&format!("/studies/{}", study.id)));
    let retrieve = orthanc.post_json(
        "/dicom-web/servers/cloud/retrieve",
        &json!({"Resources": [{"Study": study.study_uid}], "Synchronous": true}),
    );
    check(retrieve.status == 200, "retrieve answered 200")?;
    let back = study_file_hashes(&orthanc, &study.study_uid);
    println!("    instances retrieved: {}", back.len());
    check(back == local, "the retrieved files are byte-identical")?;

    step("What the plugin reports");
    let servers = orthanc.get("/dicomweb-oauth/servers").json();
    let server = &servers["data"]["servers"][0];
    println!(
        "    server '{}': provider {}, token cached: {}, expires in {} s",
        server["name"].as_str().unwrap_or(""),
        server["provider_type"],
        server["has_cached_token"],
        server["token_expires_in"]
    );
    println!(
        "    token requests made to the identity provider: {}",
        idp.token_requests()
    );
    let gw = gateway.stats();
    println!(
        "    gateway: {} requests accepted, {} rejected",
        gw["accepted"], gw["rejected"]
    );
    println!("    elapsed: {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
