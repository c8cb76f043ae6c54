//! SigV4 signatures of proxied requests, checked against two independent implementations:
//!
//! - botocore's `SigV4Auth` (PyPI `botocore`, installed by scripts/setup), run by
//!   fixtures/aws-emulator/botocore_sigv4.py over the same request, credentials and timestamp:
//!   the `Authorization` headers must be equal byte for byte;
//! - the SigV4 verifier of fixtures/aws-emulator (written from the IAM User Guide's "Create a
//!   signed AWS API request"), which recomputes the signature from the raw request it receives:
//!   requests signed here and sent with reqwest must pass, tampered ones must not.
//!
//! Documents followed: IAM User Guide, "AWS Signature Version 4 for API requests", "Elements of
//! an AWS API request signature", "Create a signed AWS API request" (canonical request, string
//! to sign, signing key), and AWS HealthImaging's endpoint and signing name (`medical-imaging`).

use dicomweb_oauth_core::credentials::aws::{
    is_signed_header, sign_request, AwsCredentials, PayloadHash, SERVICE, STREAMING_PAYLOAD,
    UNSIGNED_PAYLOAD,
};
use dicomweb_oauth_core::secret::Secret;
use dicomweb_oauth_core::ErrorCode;
use serde_json::{json, Value};
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use testkit::{assert_no_secrets, workspace_root, AwsEmulator};
use url::Url;

const ACCESS_KEY: &str = "AKIDEXAMPLE";
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const SESSION_TOKEN: &str =
    "IQoJb3JpZ2luX2VjEXAMPLE//////////wEaCXVzLWVhc3QtMSJHMEUCIQD+session/token==";
/// What `pip install` in scripts/setup pins.
const BOTOCORE_VERSION: &str = "1.43.11";

fn credentials(token: Option<&str>) -> AwsCredentials {
    AwsCredentials {
        access_key_id: ACCESS_KEY.into(),
        secret_access_key: Secret::new(SECRET_KEY),
        session_token: token.map(Secret::new),
        expires_at_unix: None,
    }
}

#[derive(Clone, Copy, Debug)]
enum Payload {
    Bytes,
    Unsigned,
    Precomputed,
    /// HealthImaging's documented StoreDICOM form: STREAMING-AWS4-HMAC-SHA256-PAYLOAD.
    Streaming,
}

/// One request, described twice: as the plugin sends it (`url`, with its raw query) and, for
/// botocore, with the query's parameters decoded by hand (`params`).
struct Case {
    name: &'static str,
    method: &'static str,
    url: &'static str,
    params: &'static [(&'static str, &'static str)],
    headers: &'static [(&'static str, &'static str)],
    body: &'static [u8],
    payload: Payload,
    token: Option<&'static str>,
    region: &'static str,
    service: &'static str,
    /// Unix seconds.
    time: u64,
}

const AUG_2015: u64 = 1_440_938_160; // 2015-08-30T12:36:00Z
const LEAP_DAY: u64 = 1_709_251_199; // 2024-02-29T23:59:59Z
const HI: &str = "https://dicom-medical-imaging.us-east-1.amazonaws.com";

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "QIDO query needing encoding (space, ^, *, =, +, repeated and empty parameters)",
            method: "GET",
            url: "https://dicom-medical-imaging.us-east-1.amazonaws.com/datastore/0123456789abcdef0123456789abcdef/studies?PatientName=Doe%5EJohn*&StudyDescription=CT%20head+neck&x=a%3Db&flag&limit=10&includefield=00100010&includefield=00080020&fuzzymatching=true",
            params: &[
                ("PatientName", "Doe^John*"),
                ("StudyDescription", "CT head neck"),
                ("x", "a=b"),
                ("flag", ""),
                ("limit", "10"),
                ("includefield", "00100010"),
                ("includefield", "00080020"),
                ("fuzzymatching", "true"),
            ],
            headers: &[("Accept", "application/dicom+json")],
            body: b"",
            payload: Payload::Bytes,
            token: None,
            region: "us-east-1",
            service: SERVICE,
            time: AUG_2015,
        },
        Case {
            name: "query left raw by the client (^ * ' ( ) ! ~ and UTF-8)",
            method: "GET",
            url: "https://dicom-medical-imaging.us-east-1.amazonaws.com/datastore/ds/studies?PatientName=M%C3%BCller^Zo%C3%AB*&PatientID=(12)!~'x'&StudyDate=20240101-20241231",
            params: &[
                ("PatientName", "Müller^Zoë*"),
                ("PatientID", "(12)!~'x'"),
                ("StudyDate", "20240101-20241231"),
            ],
            headers: &[],
            body: b"",
            payload: Payload::Bytes,
            token: None,
            region: "us-east-1",
            service: SERVICE,
            time: LEAP_DAY,
        },
        Case {
            name: "path with special characters (space, : @ ; = , + ( ) ! $ ' ~, %2F, UTF-8)",
            method: "GET",
            url: "https://dicom-medical-imaging.us-east-1.amazonaws.com/datastore/ds/studies/1.2.840.113619.2.55.3/series/a%20b:c@d;e=f,g+h(1)!$'~/instances/x%2Fy/%C3%A9t%C3%A9/frames/1,2",
            params: &[],
            headers: &[("Accept", "multipart/related; type=\"application/octet-stream\"")],
            body: b"",
            payload: Payload::Bytes,
            token: None,
            region: "us-east-1",
            service: SERVICE,
            time: AUG_2015,
        },
        Case {
            name: "empty and trailing path segments are normalized",
            method: "GET",
            url: "http://127.0.0.1:8042/sigv4//dicom-web/studies/",
            params: &[],
            headers: &[],
            body: b"",
            payload: Payload::Bytes,
            token: None,
            region: "us-east-1",
            service: SERVICE,
            time: AUG_2015,
        },
        Case {
            name: "STOW POST with a hashed body and a content type with runs of spaces",
            method: "POST",
            url: "https://dicom-medical-imaging.us-east-1.amazonaws.com/datastore/ds/studies",
            params: &[],
            headers: &[
                (
                    "Content-Type",
                    "  multipart/related;   type=\"application/dicom\";  boundary=DICOMwebBoundary ",
                ),
                ("Accept", "application/dicom+json"),
                ("User-Agent", "Orthanc/1.12.4"),
            ],
            body: b"--DICOMwebBoundary\r\nContent-Type: application/dicom\r\n\r\nDICM\x00\x01\x02\xff\r\n--DICOMwebBoundary--\r\n",
            payload: Payload::Bytes,
            token: None,
            region: "us-east-1",
            service: SERVICE,
            time: AUG_2015,
        },
        Case {
            name: "UNSIGNED-PAYLOAD",
            method: "POST",
            url: "https://dicom-medical-imaging.us-east-1.amazonaws.com/datastore/ds/studies",
            params: &[],
            headers: &[("Content-Type", "application/dicom")],
            body: b"DICM unsigned body",
            payload: Payload::Unsigned,
            token: None,
            region: "us-east-1",
            service: SERVICE,
            time: AUG_2015,
        },
        Case {
            name: "precomputed payload hash (a streamed body)",
            method: "PUT",
            url: "https://dicom-medical-imaging.us-east-1.amazonaws.com/datastore/ds/studies/1.2.3",
            params: &[],
            headers: &[("Content-Type", "application/dicom")],
            body: b"streamed body",
            payload: Payload::Precomputed,
            token: None,
            region: "us-east-1",
            service: SERVICE,
            time: AUG_2015,
        },
        Case {
            name: "session token present",
            method: "GET",
            url: "https://dicom-medical-imaging.us-west-2.amazonaws.com/datastore/ds/studies/1.2.3/series/4.5.6/metadata",
            params: &[],
            headers: &[("Accept", "application/dicom+json")],
            body: b"",
            payload: Payload::Bytes,
            token: Some(SESSION_TOKEN),
            region: "us-west-2",
            service: SERVICE,
            time: LEAP_DAY,
        },
        Case {
            name: "DELETE, eu-west-1, session token, extra x-amz-* and Content-MD5",
            method: "DELETE",
            url: "https://dicom-medical-imaging.eu-west-1.amazonaws.com/datastore/ds/studies/1.2.3?force=true",
            params: &[("force", "true")],
            headers: &[
                ("X-Amz-Meta-Reason", "  retention   expired "),
                ("Content-MD5", "1B2M2Y8AsgTpgAmY7PhCfg=="),
            ],
            body: b"",
            payload: Payload::Bytes,
            token: Some(SESSION_TOKEN),
            region: "eu-west-1",
            service: SERVICE,
            time: AUG_2015,
        },
        Case {
            name: "another service and region, non-default port",
            method: "GET",
            url: "https://runtime-medical-imaging.ap-southeast-2.amazonaws.com:8443/datastore/ds/imageSet/abc/getImageFrame?x=1",
            params: &[("x", "1")],
            headers: &[],
            body: b"",
            payload: Payload::Unsigned,
            token: None,
            region: "ap-southeast-2",
            service: "execute-api",
            time: LEAP_DAY,
        },
        Case {
            name: "plain http with a body (the emulator's protocol)",
            method: "POST",
            url: "http://127.0.0.1:41234/sigv4/dicom-web/studies?a=1",
            params: &[("a", "1")],
            headers: &[("Content-Type", "application/dicom")],
            body: b"\x00\x01binary\xfe\xff",
            payload: Payload::Bytes,
            token: Some(SESSION_TOKEN),
            region: "us-east-1",
            service: SERVICE,
            time: AUG_2015,
        },
        Case {
            name: "STOW as HealthImaging's StoreDICOM example signs it (streaming marker)",
            method: "POST",
            url: "https://dicom-medical-imaging.us-east-1.amazonaws.com/datastore/d9a2a515ab294163a2d2f4069eed584c/studies",
            params: &[],
            headers: &[
                ("Content-Type", "application/dicom"),
                ("Accept", "application/dicom+json"),
                ("x-amz-decoded-content-length", "17"),
            ],
            body: b"DICM P10 contents",
            payload: Payload::Streaming,
            token: Some(SESSION_TOKEN),
            region: "us-east-1",
            service: SERVICE,
            time: LEAP_DAY,
        },
    ]
}

fn sha256_hex(data: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn payload_of(case: &Case) -> PayloadHash<'static> {
    match case.payload {
        Payload::Bytes => PayloadHash::Bytes(case.body),
        Payload::Unsigned => PayloadHash::Unsigned,
        Payload::Precomputed => PayloadHash::Precomputed(sha256_hex(case.body)),
        Payload::Streaming => PayloadHash::Precomputed(STREAMING_PAYLOAD.into()),
    }
}

fn owned_headers(headers: &[(&str, &str)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Runs botocore over `cases` (one Python process for all).
fn botocore(cases: &[Value]) -> Vec<Value> {
    let script = workspace_root().join("fixtures/aws-emulator/botocore_sigv4.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3 (scripts/setup installs it with botocore)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(Value::from(cases.to_vec()).to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "botocore_sigv4.py failed (is botocore installed? python3 -m pip install \
         botocore=={BOTOCORE_VERSION}):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("botocore_sigv4.py output is JSON")
}

/// The URL botocore signs: the same path as sent, no query (the parameters go separately).
fn url_without_query(url: &Url) -> String {
    let mut bare = url.clone();
    bare.set_query(None);
    bare.to_string()
}

/// [botocore] Every case signs to the same Authorization header as botocore's SigV4Auth.
#[test]
fn signatures_match_botocore() {
    let cases = cases();
    let mut requests = Vec::new();
    let mut ours = Vec::new();
    for case in &cases {
        let url = Url::parse(case.url).unwrap();
        let headers = owned_headers(case.headers);
        let signed = sign_request(
            case.method,
            &url,
            &headers,
            payload_of(case),
            &credentials(case.token),
            case.region,
            case.service,
            UNIX_EPOCH + Duration::from_secs(case.time),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        // botocore signs every header it is given: give it the ones the plugin signs.
        let to_sign: Vec<Value> = case
            .headers
            .iter()
            .filter(|(k, _)| is_signed_header(&k.to_ascii_lowercase()))
            .map(|(k, v)| json!([k, v]))
            .collect();
        let params: Vec<Value> = case.params.iter().map(|(k, v)| json!([k, v])).collect();
        let timestamp = header(&signed, "X-Amz-Date").unwrap().to_owned();
        requests.push(json!({
            "method": case.method,
            "url": url_without_query(&url),
            "params": params,
            "headers": to_sign,
            "body_hex": case.body.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "payload": match case.payload {
                Payload::Bytes => "bytes",
                Payload::Unsigned => "unsigned",
                Payload::Precomputed | Payload::Streaming => "precomputed",
            },
            "precomputed": match case.payload {
                Payload::Streaming => STREAMING_PAYLOAD.to_owned(),
                _ => sha256_hex(case.body),
            },
            "access_key": ACCESS_KEY,
            "secret_key": SECRET_KEY,
            "token": case.token,
            "region": case.region,
            "service": case.service,
            "timestamp": timestamp,
        }));
        ours.push(signed);
    }
    let theirs = botocore(&requests);
    assert_eq!(theirs.len(), cases.len());
    eprintln!(
        "botocore {} (scripts/setup pins {BOTOCORE_VERSION})",
        theirs[0]["botocore_version"]
    );
    for ((case, ours), theirs) in cases.iter().zip(&ours).zip(&theirs) {
        let context = || {
            format!(
                "case '{}'\nbotocore canonical request:\n{}\n",
                case.name,
                theirs["canonical_request"].as_str().unwrap_or_default()
            )
        };
        assert_eq!(
            header(ours, "Authorization").unwrap(),
            theirs["authorization"].as_str().unwrap(),
            "{}",
            context()
        );
        assert_eq!(
            header(ours, "X-Amz-Date").unwrap(),
            theirs["x_amz_date"].as_str().unwrap(),
            "{}",
            context()
        );
        assert_eq!(
            header(ours, "X-Amz-Content-Sha256"),
            theirs["x_amz_content_sha256"].as_str(),
            "{}",
            context()
        );
        assert_eq!(
            header(ours, "X-Amz-Security-Token"),
            theirs["x_amz_security_token"].as_str(),
            "{}",
            context()
        );
        match case.payload {
            // botocore hashed the body itself too.
            Payload::Bytes | Payload::Precomputed => assert_eq!(
                header(ours, "X-Amz-Content-Sha256"),
                theirs["botocore_payload_hash"].as_str(),
                "{}",
                context()
            ),
            Payload::Unsigned => {
                assert_eq!(header(ours, "X-Amz-Content-Sha256"), Some(UNSIGNED_PAYLOAD))
            }
            Payload::Streaming => {
                assert_eq!(
                    header(ours, "X-Amz-Content-Sha256"),
                    Some(STREAMING_PAYLOAD)
                )
            }
        }
        // The headers returned are exactly those SigV4 adds.
        let mut names: Vec<&str> = ours.iter().map(|(k, _)| k.as_str()).collect();
        names.sort_unstable();
        let mut expected = vec!["Authorization", "X-Amz-Content-Sha256", "X-Amz-Date"];
        if case.token.is_some() {
            expected.push("X-Amz-Security-Token");
        }
        assert_eq!(names, expected, "{}", case.name);
    }
}

/// [botocore] The signed header list of a STOW request: the stable headers only.
#[test]
fn signed_headers_are_the_stable_ones() {
    let case = &cases()[4];
    let signed = sign_request(
        case.method,
        &Url::parse(case.url).unwrap(),
        &owned_headers(case.headers),
        payload_of(case),
        &credentials(Some(SESSION_TOKEN)),
        case.region,
        case.service,
        UNIX_EPOCH + Duration::from_secs(case.time),
    )
    .unwrap();
    let auth = header(&signed, "Authorization").unwrap();
    assert!(
        auth.contains(
            "SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token,"
        ),
        "{auth}"
    );
    assert_no_secrets(
        "the Authorization header",
        auth,
        &[SECRET_KEY, SESSION_TOKEN],
    );
    assert_eq!(
        header(&signed, "X-Amz-Content-Sha256"),
        Some(sha256_hex(case.body).as_str())
    );
}

// ---------------------------------------------------------------------------------------------
// Against the emulator's verifier
// ---------------------------------------------------------------------------------------------

const STATIC_KEY: &str = "AKIDSIGV4STATIC";
const STATIC_SECRET: &str = "emulator-static-secret-9f0e1d2c3b4a";
const TEMP_KEY: &str = "ASIASIGV4TEMPORARY";
const TEMP_SECRET: &str = "emulator-temporary-secret-5a6b7c8d";
const TEMP_TOKEN: &str = "emulator-session-token-0123456789abcdef==";

fn emulator() -> AwsEmulator {
    AwsEmulator::start(&json!({
        "sigv4": {
            "region": "us-east-1",
            "service": SERVICE,
            "keys": [
                {"accessKeyId": STATIC_KEY, "secretAccessKey": STATIC_SECRET},
                {"accessKeyId": TEMP_KEY, "secretAccessKey": TEMP_SECRET, "sessionToken": TEMP_TOKEN},
            ],
        }
    }))
}

fn static_credentials() -> AwsCredentials {
    AwsCredentials {
        access_key_id: STATIC_KEY.into(),
        secret_access_key: Secret::new(STATIC_SECRET),
        session_token: None,
        expires_at_unix: None,
    }
}

fn temporary_credentials() -> AwsCredentials {
    AwsCredentials {
        access_key_id: TEMP_KEY.into(),
        secret_access_key: Secret::new(TEMP_SECRET),
        session_token: Some(Secret::new(TEMP_TOKEN)),
        expires_at_unix: None,
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

struct Sent {
    status: u16,
    body: Value,
}

/// Signs and sends one request; `tamper` may change the request after signing.
#[allow(clippy::too_many_arguments)]
async fn send_signed(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    payload: PayloadHash<'_>,
    credentials: &AwsCredentials,
    region: &str,
    tamper: impl FnOnce(&mut Url, &mut Vec<(String, String)>, &mut Vec<u8>),
) -> Sent {
    let mut url = Url::parse(url).unwrap();
    let mut all = owned_headers(headers);
    let added = sign_request(
        method,
        &url,
        &all,
        payload,
        credentials,
        region,
        SERVICE,
        SystemTime::now(),
    )
    .unwrap();
    all.extend(added);
    let mut body = body.to_vec();
    tamper(&mut url, &mut all, &mut body);
    let mut request = client.request(method.parse().unwrap(), url);
    for (k, v) in &all {
        request = request.header(k, v);
    }
    let response = request.body(body).send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    Sent { status, body }
}

/// Method, URL, headers, body and payload hash of a request to sign.
type SignedRequest<'a> = (
    &'a str,
    String,
    Vec<(&'a str, &'a str)>,
    &'a [u8],
    PayloadHash<'a>,
);

fn no_tamper(_: &mut Url, _: &mut Vec<(String, String)>, _: &mut Vec<u8>) {}

/// [SIGV4] Requests signed here pass the emulator's independent verifier: queries needing
/// encoding, special paths, hashed and unsigned bodies, temporary credentials.
#[tokio::test]
async fn the_emulator_accepts_our_signatures() {
    let emulator = emulator();
    let client = http();
    let base = emulator.sigv4_url();
    let stow_body = b"--B\r\nContent-Type: application/dicom\r\n\r\nDICM\x00\xff\r\n--B--\r\n";
    let requests: Vec<SignedRequest<'_>> = vec![
        (
            "GET",
            format!("{base}/dicom-web/studies?PatientName=Doe%5EJohn*&StudyDescription=CT%20head+neck&x=a%3Db&flag&includefield=00100010&includefield=00080020"),
            vec![("Accept", "application/dicom+json")],
            b"",
            PayloadHash::Bytes(b""),
        ),
        (
            "GET",
            format!("{base}/dicom-web/studies?PatientName=M%C3%BCller^Zo%C3%AB*&PatientID=(12)!~'x'"),
            vec![],
            b"",
            PayloadHash::Bytes(b""),
        ),
        (
            "GET",
            format!("{base}/dicom-web/studies/1.2.840.113619/series/a%20b:c@d;e=f,g+h(1)!$'~/instances/x%2Fy/%C3%A9t%C3%A9/frames/1,2"),
            vec![("Accept", "multipart/related; type=\"application/octet-stream\"")],
            b"",
            PayloadHash::Unsigned,
        ),
        (
            "GET",
            format!("{base}//dicom-web//studies/"),
            vec![],
            b"",
            PayloadHash::Bytes(b""),
        ),
        (
            "POST",
            format!("{base}/dicom-web/studies"),
            vec![(
                "Content-Type",
                "  multipart/related;   type=\"application/dicom\";  boundary=B ",
            )],
            stow_body,
            PayloadHash::Bytes(stow_body),
        ),
        (
            "POST",
            format!("{base}/dicom-web/studies"),
            vec![("Content-Type", "application/dicom")],
            b"unsigned body",
            PayloadHash::Unsigned,
        ),
        (
            "PUT",
            format!("{base}/dicom-web/studies/1.2.3"),
            vec![("Content-Type", "application/dicom")],
            b"precomputed",
            PayloadHash::Precomputed(sha256_hex(b"precomputed")),
        ),
        (
            "POST",
            format!("{base}/dicom-web/studies"),
            vec![
                ("Content-Type", "application/dicom"),
                ("x-amz-decoded-content-length", "9"),
            ],
            b"DICM body",
            PayloadHash::Precomputed(STREAMING_PAYLOAD.into()),
        ),
        (
            "DELETE",
            format!("{base}/dicom-web/studies/1.2.3?force=true"),
            vec![("X-Amz-Meta-Reason", "  retention   expired ")],
            b"",
            PayloadHash::Bytes(b""),
        ),
    ];
    for (index, (method, url, headers, body, payload)) in requests.into_iter().enumerate() {
        for credentials in [static_credentials(), temporary_credentials()] {
            let sent = send_signed(
                &client,
                method,
                &url,
                &headers,
                body,
                match &payload {
                    PayloadHash::Bytes(b) => PayloadHash::Bytes(b),
                    PayloadHash::Precomputed(h) => PayloadHash::Precomputed(h.clone()),
                    PayloadHash::Unsigned => PayloadHash::Unsigned,
                },
                &credentials,
                "us-east-1",
                no_tamper,
            )
            .await;
            let stats = emulator.stats();
            assert_eq!(
                sent.status,
                200,
                "request {index} ({method} {url}) refused: {}\nlast: {}\n{}",
                sent.body,
                stats["last_sigv4"],
                emulator.log()
            );
            assert_eq!(sent.body["ok"], true);
            assert_eq!(
                sent.body["temporary"].as_bool(),
                Some(false),
                "listed keys are long-term for the emulator"
            );
        }
    }
    let stats = emulator.stats();
    assert_eq!(stats["sigv4_rejected"], 0);
    assert_eq!(stats["sigv4_accepted"], 18);
}

/// [SIGV4] Tampered requests, wrong keys and wrong scopes are refused with AWS's messages.
#[tokio::test]
async fn the_emulator_refuses_bad_signatures() {
    let emulator = emulator();
    let client = http();
    let url = format!(
        "{}/dicom-web/studies?PatientName=Doe%5EJohn",
        emulator.sigv4_url()
    );
    let body: &[u8] = b"DICM body";
    let headers = [("Content-Type", "application/dicom")];
    let mismatch = "The request signature we calculated does not match";

    // A wrong secret.
    let mut wrong = static_credentials();
    wrong.secret_access_key = Secret::new("not-the-secret");
    let sent = send_signed(
        &client,
        "POST",
        &url,
        &headers,
        body,
        PayloadHash::Bytes(body),
        &wrong,
        "us-east-1",
        no_tamper,
    )
    .await;
    assert_eq!(sent.status, 403);
    assert!(
        sent.body["message"].as_str().unwrap().starts_with(mismatch),
        "{}",
        sent.body
    );

    // The query changed after signing.
    let sent = send_signed(
        &client,
        "POST",
        &url,
        &headers,
        body,
        PayloadHash::Bytes(body),
        &static_credentials(),
        "us-east-1",
        |u, _, _| {
            u.set_query(Some("PatientName=Doe%5EJane"));
        },
    )
    .await;
    assert_eq!(sent.status, 403, "{}", sent.body);
    assert!(sent.body["message"].as_str().unwrap().starts_with(mismatch));

    // A signed header changed after signing.
    let sent = send_signed(
        &client,
        "POST",
        &url,
        &headers,
        body,
        PayloadHash::Bytes(body),
        &static_credentials(),
        "us-east-1",
        |_, h, _| {
            h.retain(|(k, _)| k != "Content-Type");
            h.push(("Content-Type".into(), "text/plain".into()));
        },
    )
    .await;
    assert_eq!(sent.status, 403, "{}", sent.body);

    // The body changed after signing a hashed payload: the hash no longer matches.
    let sent = send_signed(
        &client,
        "POST",
        &url,
        &headers,
        body,
        PayloadHash::Bytes(body),
        &static_credentials(),
        "us-east-1",
        |_, _, b| {
            b.push(b'!');
        },
    )
    .await;
    assert_eq!(sent.status, 400, "{}", sent.body);
    assert!(sent.body["message"]
        .as_str()
        .unwrap()
        .contains("x-amz-content-sha256"));

    // ... but not with UNSIGNED-PAYLOAD.
    let sent = send_signed(
        &client,
        "POST",
        &url,
        &headers,
        body,
        PayloadHash::Unsigned,
        &static_credentials(),
        "us-east-1",
        |_, _, b| {
            b.push(b'!');
        },
    )
    .await;
    assert_eq!(sent.status, 200, "{}", sent.body);

    // The streaming marker with a length that is not the body's.
    let sent = send_signed(
        &client,
        "POST",
        &url,
        &[
            ("Content-Type", "application/dicom"),
            ("x-amz-decoded-content-length", "3"),
        ],
        body,
        PayloadHash::Precomputed(STREAMING_PAYLOAD.into()),
        &static_credentials(),
        "us-east-1",
        no_tamper,
    )
    .await;
    assert_eq!(sent.status, 400, "{}", sent.body);

    // The wrong region.
    let sent = send_signed(
        &client,
        "GET",
        &url,
        &[],
        b"",
        PayloadHash::Bytes(b""),
        &static_credentials(),
        "eu-west-1",
        no_tamper,
    )
    .await;
    assert_eq!(sent.status, 403);
    assert!(
        sent.body["message"].as_str().unwrap().contains("region"),
        "{}",
        sent.body
    );

    // Temporary credentials without their session token.
    let mut no_token = temporary_credentials();
    no_token.session_token = None;
    let sent = send_signed(
        &client,
        "GET",
        &url,
        &[],
        b"",
        PayloadHash::Bytes(b""),
        &no_token,
        "us-east-1",
        no_tamper,
    )
    .await;
    assert_eq!(sent.status, 403);

    // An unknown key.
    let mut unknown = static_credentials();
    unknown.access_key_id = "AKIDUNKNOWN".into();
    let sent = send_signed(
        &client,
        "GET",
        &url,
        &[],
        b"",
        PayloadHash::Bytes(b""),
        &unknown,
        "us-east-1",
        no_tamper,
    )
    .await;
    assert_eq!(sent.status, 403);
    assert!(sent.body["message"]
        .as_str()
        .unwrap()
        .contains("security token included in the request is invalid"));

    // No signature at all.
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 403);

    let stats = emulator.stats();
    assert_eq!(stats["sigv4_accepted"], 1);
    assert_eq!(stats["sigv4_rejected"], 9);
}

/// Signing refuses URLs and regions it cannot sign (CFG-002) without printing credentials.
#[test]
fn invalid_inputs_are_configuration_errors() {
    let url = Url::parse("ftp://dicom.example/x").unwrap();
    let e = sign_request(
        "GET",
        &url,
        &[],
        PayloadHash::Unsigned,
        &credentials(Some(SESSION_TOKEN)),
        "us-east-1",
        SERVICE,
        SystemTime::now(),
    )
    .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Cfg002);
    assert_no_secrets(
        "the error",
        &format!("{e} {e:?}"),
        &[SECRET_KEY, SESSION_TOKEN],
    );
    let url = Url::parse(HI).unwrap();
    let e = sign_request(
        "GET",
        &url,
        &[],
        PayloadHash::Unsigned,
        &credentials(None),
        "us east 1",
        SERVICE,
        SystemTime::now(),
    )
    .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Cfg002);
}
