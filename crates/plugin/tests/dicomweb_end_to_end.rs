//! End to end with real processes: Orthanc A (DICOMweb plugin + this plugin)
//! → proxy route → OAuth gateway validating the identity provider's JWTs
//! (fixtures/gateway) → Orthanc B's DICOMweb API.

use serde_json::{json, Value};
use testkit::{create_study, study_file_hashes, Gateway, Idp, Orthanc, OrthancBuilder};

const SECRET: &str = "e2e-client-secret-31c9";

struct Setup {
    idp: Idp,
    b: Orthanc,
    gateway: Gateway,
    a: Orthanc,
}

fn setup() -> Setup {
    let idp = Idp::start(&json!({
        "accessTokenTtl": 300,
        "defaultAudience": "https://dicom.example",
        "clients": [{"client_id": "orthanc-a", "client_secret": SECRET,
                     "token_endpoint_auth_method": "client_secret_post", "scope": "dicom.read dicom.write"}]
    }));
    let b = OrthancBuilder::new().without_oauth_plugin().start();
    let gateway = Gateway::start(&json!({
        "upstream": b.url(""),
        "jwksUri": format!("{}/jwks", idp.issuer),
        "issuer": idp.issuer,
        "audience": "https://dicom.example",
        "requiredScope": "dicom.read",
        "writeScope": "dicom.write",
        "mode": "jwt",
    }));
    let port = testkit::free_port();
    let a = OrthancBuilder::new()
        .port(port)
        .set("DicomWeb", json!({
            "Enable": true, "Root": "/dicom-web/",
            "Servers": {"cloud": {"Url": format!("http://127.0.0.1:{port}/oauth-dicom-web/servers/cloud/")}}
        }))
        .oauth(json!({"Servers": {"cloud": {
            "Url": format!("{}/dicom-web", gateway.url),
            "TokenEndpoint": idp.token_endpoint(),
            "ClientId": "orthanc-a",
            "ClientSecret": SECRET,
            "Scope": "dicom.read dicom.write",
        }}}))
        .start();
    Setup { idp, b, gateway, a }
}

fn stow(a: &Orthanc, resources: &[&str]) -> testkit::Reply {
    a.post_json(
        "/dicom-web/servers/cloud/stow",
        &json!({"Resources": resources, "Synchronous": true}),
    )
}

#[test]
fn send_query_retrieve_through_the_proxy_byte_identical() {
    let s = setup();
    let study = create_study(&s.a, "E2E-1", 3, 200_000);
    let sent = study_file_hashes(&s.a, &study.study_uid);
    assert_eq!(sent.len(), 3);

    // Send (STOW-RS) through the DICOMweb plugin's own route.
    let reply = stow(&s.a, &[&study.id]);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        study_file_hashes(&s.b, &study.study_uid),
        sent,
        "instances arrive byte-identical"
    );

    // Query (QIDO-RS): the remote's answer through A equals B's own.
    let through_a = s.a.post_json(
        "/dicom-web/servers/cloud/qido",
        &json!({"Uri": "/studies", "Arguments": {"PatientID": "E2E-1"}}),
    );
    assert_eq!(through_a.status, 200, "{}", through_a.text());
    let direct_b = s.b.http().request(
        "GET",
        &s.b.url("/dicom-web/studies?PatientID=E2E-1"),
        &[("Accept", "application/dicom+json")],
        None,
    );
    let study_uids = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let uid = &s["0020000D"]["Value"];
                uid.as_str().or_else(|| uid[0].as_str()).unwrap().to_owned()
            })
            .collect()
    };
    assert_eq!(study_uids(&through_a.json()), study_uids(&direct_b.json()));
    assert_eq!(study_uids(&direct_b.json()), vec![study.study_uid.clone()]);
    // The raw QIDO answer through the proxy route is B's answer, byte for byte.
    let raw = s.a.http().request(
        "GET",
        &s.a.url("/oauth-dicom-web/servers/cloud/studies?PatientID=E2E-1"),
        &[("Accept", "application/dicom+json")],
        None,
    );
    assert_eq!(raw.status, 200);
    assert_eq!(raw.content_type, direct_b.content_type);
    assert_eq!(raw.body, direct_b.body);

    // Metadata (WADO-RS) through the /get pass-through.
    let meta = s.a.post_json(
        "/dicom-web/servers/cloud/get",
        &json!({"Uri": format!("/studies/{}/metadata", study.study_uid)}),
    );
    assert_eq!(meta.status, 200, "{}", meta.text());
    assert_eq!(meta.json().as_array().unwrap().len(), 3);

    // Retrieve (WADO-RS) back into A after deleting the local copy.
    assert_eq!(
        s.a.http()
            .delete(&s.a.url(&format!("/studies/{}", study.id)))
            .status,
        200
    );
    assert!(study_file_hashes(&s.a, &study.study_uid).is_empty());
    let reply = s.a.post_json(
        "/dicom-web/servers/cloud/retrieve",
        &json!({"Resources": [{"Study": study.study_uid}], "Synchronous": true}),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        study_file_hashes(&s.a, &study.study_uid),
        sent,
        "retrieved files are identical"
    );

    // One token served every request; the gateway saw it on each.
    assert_eq!(s.idp.token_requests(), 1);
    let stats = s.gateway.stats();
    assert_eq!(stats["rejected"], 0, "{stats}");
    let logs = format!("{}{}{}", s.a.log(), s.b.log(), s.gateway.log());
    testkit::assert_no_secrets("the Orthanc and gateway logs", &logs, &[SECRET]);
}

#[test]
fn an_asynchronous_send_job_ends_in_success() {
    // What Orthanc Explorer 2's "Send to DICOMweb server" does.
    let s = setup();
    let study = create_study(&s.a, "E2E-ASYNC", 2, 50_000);
    let reply = s.a.post_json(
        "/dicom-web/servers/cloud/stow",
        &json!({"Resources": [study.id], "Synchronous": false}),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let job = reply.json()["ID"].as_str().unwrap().to_owned();
    let state = testkit::wait_for(
        "the send job to end",
        std::time::Duration::from_secs(60),
        || {
            let info = s.a.get(&format!("/jobs/{job}")).json();
            let state = info["State"].as_str().unwrap_or("").to_owned();
            (state == "Success" || state == "Failure").then_some((state, info))
        },
    );
    assert_eq!(state.0, "Success", "{}", state.1);
    assert_eq!(study_file_hashes(&s.b, &study.study_uid).len(), 2);
}

#[test]
fn the_gateway_turns_away_requests_without_a_valid_token() {
    let s = setup();
    let direct =
        s.a.http()
            .get(&format!("{}/dicom-web/studies", s.gateway.url));
    assert_eq!(direct.status, 401);
    let forged = s.a.http().request(
        "GET",
        &format!("{}/dicom-web/studies", s.gateway.url),
        &[(
            "Authorization",
            "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
        )],
        None,
    );
    assert_eq!(forged.status, 401);
    assert_eq!(s.gateway.stats()["accepted"], 0);
    assert!(
        !s.b.log().contains("GET /dicom-web/studies"),
        "a rejected request reached B"
    );
}

#[test]
fn a_revoked_token_is_replaced_after_the_remote_401() {
    let s = setup();
    let study = create_study(&s.a, "E2E-401", 1, 10_000);
    assert_eq!(stow(&s.a, &[&study.id]).status, 200);
    let unix_seconds = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let revoked_in = unix_seconds();
    s.gateway.revoke_tokens_before_now();
    // Tokens carry whole-second iat: the next one must come from a later second.
    testkit::wait_for(
        "the clock to reach the next second",
        std::time::Duration::from_secs(3),
        || (unix_seconds() > revoked_in).then_some(()),
    );
    let qido =
        s.a.post_json("/dicom-web/servers/cloud/qido", &json!({"Uri": "/studies"}));
    assert_eq!(qido.status, 200, "{}", qido.text());
    assert_eq!(s.idp.token_requests(), 2, "a second token after the 401");
    assert_eq!(s.gateway.stats()["rejected_by_status"]["401"], 1);
}

#[test]
fn remote_errors_pass_through_the_dicomweb_plugin() {
    let s = setup();
    let study = create_study(&s.a, "E2E-5XX", 1, 10_000);
    s.gateway.fail_next(503, 1);
    let direct = s.a.get("/oauth-dicom-web/servers/cloud/studies");
    assert_eq!(direct.status, 503, "{}", direct.text());
    // DELETE through the proxy gets B's own answer (Orthanc's DICOMweb API has no DELETE).
    let b_answer =
        s.b.http()
            .delete(&s.b.url(&format!("/dicom-web/studies/{}", study.study_uid)))
            .status;
    let via_proxy =
        s.a.http()
            .delete(&s.a.url(&format!(
                "/oauth-dicom-web/servers/cloud/studies/{}",
                study.study_uid
            )))
            .status;
    assert_eq!(via_proxy, b_answer);
    let _: Value = s.gateway.stats();
}
