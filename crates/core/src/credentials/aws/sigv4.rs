//! AWS Signature Version 4 for proxied requests, on AWS's own `aws-sigv4` crate (ADR 0010).
//!
//! The canonical request follows "Create a signed AWS API request" (AWS Identity and Access
//! Management user guide, "Elements of an AWS API request signature") as AWS's SDKs build it for
//! every service but S3:
//!
//! - **canonical URI**: the path *as sent* (already percent-encoded once by [`Url`]), with dot
//!   segments and empty segments removed (RFC 3986 §5.2.4, as the SDKs normalize it), then
//!   URI-encoded once more: every byte but `A-Z a-z 0-9 - . _ ~` and `/` becomes `%XY`, so `%20`
//!   in the path is `%2520` in the canonical URI ("double encoding"; S3 alone skips it);
//! - **canonical query**: the query's parameters decoded (`+` read as a space, as
//!   `application/x-www-form-urlencoded`), each name and value re-encoded per RFC 3986 (space as
//!   `%20`, `*` as `%2A`, `=` as `%3D`, …), sorted by encoded name then value, joined by `&`;
//!   a name without `=` gets an empty value;
//! - **signed headers**: `host` (from the URL, default port omitted), `x-amz-date`,
//!   `x-amz-content-sha256`, `x-amz-security-token` (temporary credentials), and, when the
//!   request has them, `content-type`, `content-md5` and any other `x-amz-*` header; names
//!   lower-cased and sorted, values trimmed with inner runs of spaces collapsed. Other headers
//!   (`accept`, `user-agent`, hop-by-hop headers…) are not signed: a proxy may change them;
//! - **payload hash**: hex SHA-256 of the body ([`PayloadHash::Bytes`], hashed where it lies),
//!   a hash computed elsewhere ([`PayloadHash::Precomputed`], e.g. while streaming), or the
//!   literal `UNSIGNED-PAYLOAD`; sent as `X-Amz-Content-Sha256`.
//!
//! The signature is checked against botocore's `SigV4Auth` and against an independent verifier
//! (fixtures/aws-emulator) in crates/core/tests/aws_sigv4.rs.

use super::AwsCredentials;
use crate::error::{Error, ErrorCode};
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings,
};
use aws_sigv4::sign::v4;
use std::fmt;
use std::time::SystemTime;
use url::Url;

/// The signing name of AWS HealthImaging.
pub const SERVICE: &str = "medical-imaging";
/// The payload hash of a request whose body is not signed.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// The payload marker of HealthImaging's documented `StoreDICOM` example (`curl --aws-sigv4`
/// with `x-amz-content-sha256: STREAMING-AWS4-HMAC-SHA256-PAYLOAD` and
/// `x-amz-decoded-content-length`, the body sent as it is). Accepted by
/// [`PayloadHash::Precomputed`].
pub const STREAMING_PAYLOAD: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";

/// What the signature says about the body.
pub enum PayloadHash<'a> {
    /// The whole body: hashed in place (no copy).
    Bytes(&'a [u8]),
    /// The body's SHA-256, already computed (64 hex digits), or a payload marker the receiving
    /// service accepts in its place ([`UNSIGNED_PAYLOAD`], [`STREAMING_PAYLOAD`]), used as the
    /// `X-Amz-Content-Sha256` value as it is.
    Precomputed(String),
    /// `UNSIGNED-PAYLOAD`: the body is not covered by the signature.
    Unsigned,
}

impl fmt::Debug for PayloadHash<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PayloadHash::Bytes(bytes) => write!(f, "Bytes({} bytes)", bytes.len()),
            PayloadHash::Precomputed(hash) => f.debug_tuple("Precomputed").field(hash).finish(),
            PayloadHash::Unsigned => f.write_str("Unsigned"),
        }
    }
}

/// Whether a header of the request (name lower-cased) is signed, besides those this module adds.
pub fn is_signed_header(lower_name: &str) -> bool {
    match lower_name {
        "content-type" | "content-md5" => true,
        // Added by the signer itself: the caller's copies are dropped.
        "x-amz-date" | "x-amz-content-sha256" | "x-amz-security-token" => false,
        name => name.starts_with("x-amz-"),
    }
}

/// Signs one request with SigV4 and returns the headers to add to it: `Authorization`,
/// `X-Amz-Date`, `X-Amz-Content-Sha256` and, for temporary credentials, `X-Amz-Security-Token`.
///
/// `headers` are the request's headers; those [`is_signed_header`] picks are signed and must be
/// sent unchanged; a `Host`, `Authorization` or `X-Amz-*` header of the caller's that this
/// function produces must be replaced by the returned one. The `Host` signed is the URL's.
///
/// Errors: CFG-002 for a URL that is not http(s) with a host, or an invalid region or service;
/// AUTH-001 for empty credentials; INT-001 for a method, header or precomputed hash that cannot
/// be signed. Messages hold no header value and no credential.
#[allow(clippy::too_many_arguments)]
pub fn sign_request(
    method: &str,
    url: &Url,
    headers: &[(String, String)],
    payload: PayloadHash<'_>,
    credentials: &AwsCredentials,
    region: &str,
    service: &str,
    time: SystemTime,
) -> Result<Vec<(String, String)>, Error> {
    if method.is_empty() || !method.bytes().all(is_token_byte) {
        return Err(Error::coded(
            ErrorCode::Int001,
            "SigV4: the HTTP method is not a valid token",
        ));
    }
    let target = signing_target(url)?;
    validate_name("Region", region)?;
    validate_name("service name", service)?;
    if credentials.access_key_id.is_empty() || credentials.secret_access_key.is_empty() {
        return Err(Error::coded(
            ErrorCode::Auth001,
            "SigV4: the AWS credentials are empty",
        ));
    }

    let body = match &payload {
        PayloadHash::Bytes(bytes) => SignableBody::Bytes(bytes),
        PayloadHash::Precomputed(hash)
            if [UNSIGNED_PAYLOAD, STREAMING_PAYLOAD].contains(&hash.as_str()) =>
        {
            SignableBody::Precomputed(hash.clone())
        }
        PayloadHash::Precomputed(hash) => {
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::coded(
                    ErrorCode::Int001,
                    "SigV4: a precomputed payload hash must be 64 hex digits (SHA-256) or a \
                     payload marker (UNSIGNED-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD)",
                ));
            }
            SignableBody::Precomputed(hash.to_ascii_lowercase())
        }
        PayloadHash::Unsigned => SignableBody::UnsignedPayload,
    };

    let lowered: Vec<(String, &str)> = headers
        .iter()
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.as_str()))
        .filter(|(name, _)| is_signed_header(name))
        .collect();
    for (name, value) in &lowered {
        if name.is_empty()
            || !name.bytes().all(is_token_byte)
            || value.bytes().any(|b| b.is_ascii_control() && b != b'\t')
        {
            return Err(Error::coded(
                ErrorCode::Int001,
                format!(
                    "SigV4: the request header '{}' cannot be signed",
                    printable(name)
                ),
            ));
        }
    }

    let identity = aws_credential_types::Credentials::new(
        credentials.access_key_id.as_str(),
        credentials.secret_access_key.expose(),
        credentials
            .session_token
            .as_ref()
            .map(|t| t.expose().to_owned()),
        None,
        "dicomweb-oauth",
    )
    .into();
    let mut settings = SigningSettings::default();
    // X-Amz-Content-Sha256 is sent and signed (optional outside S3, but it lets the receiver
    // tell a signed body from UNSIGNED-PAYLOAD). Double URI encoding, path normalization and a
    // signed X-Amz-Security-Token are the defaults for services other than S3.
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|_| Error::coded(ErrorCode::Int001, "SigV4: incomplete signing parameters"))?
        .into();
    let failed = |_| {
        Error::coded(
            ErrorCode::Int001,
            "SigV4: the request cannot be signed (invalid URL or header value)",
        )
    };
    let request = SignableRequest::new(
        method,
        target,
        lowered.iter().map(|(name, value)| (name.as_str(), *value)),
        body,
    )
    .map_err(failed)?;
    // aws-sigv4 traces the canonical request (with the session token) at TRACE level: sign with
    // no subscriber, so nothing it traces can reach a log whatever the log level.
    let output =
        tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || {
            sign(request, &params)
        })
        .map_err(failed)?;
    let (instructions, _signature) = output.into_parts();
    let (signed, _params) = instructions.into_parts();
    Ok(signed
        .into_iter()
        .map(|header| (display_name(header.name()), header.value().to_owned()))
        .collect())
}

/// The URL as signed and sent: scheme, host, port (when not the default), path and query; no
/// user info, no fragment.
fn signing_target(url: &Url) -> Result<String, Error> {
    let host = match url.host_str() {
        Some(host) if matches!(url.scheme(), "http" | "https") && !host.is_empty() => host,
        _ => {
            return Err(Error::coded(
                ErrorCode::Cfg002,
                "SigV4: the URL to sign must be an http(s) URL with a host",
            ))
        }
    };
    let mut target = format!("{}://{host}", url.scheme());
    if let Some(port) = url.port() {
        target.push_str(&format!(":{port}"));
    }
    target.push_str(url.path());
    if let Some(query) = url.query() {
        target.push('?');
        target.push_str(query);
    }
    Ok(target)
}

/// Regions and signing names are lower-case letters, digits and dashes (`us-east-1`,
/// `medical-imaging`); they are part of the credential scope.
pub(super) fn validate_name(what: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::coded(
            ErrorCode::Cfg001,
            format!("AWS {what} is required"),
        ));
    }
    if value.len() > 64
        || !value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(Error::coded(
            ErrorCode::Cfg002,
            format!(
                "AWS {what} '{}' is invalid (lower-case letters, digits and '-', e.g. us-east-1)",
                printable(value)
            ),
        ));
    }
    Ok(())
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(64).collect()
}

fn display_name(lower: &str) -> String {
    match lower {
        "authorization" => "Authorization".into(),
        "x-amz-date" => "X-Amz-Date".into(),
        "x-amz-content-sha256" => "X-Amz-Content-Sha256".into(),
        "x-amz-security-token" => "X-Amz-Security-Token".into(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use std::time::{Duration, UNIX_EPOCH};

    fn credentials(token: Option<&str>) -> AwsCredentials {
        AwsCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            session_token: token.map(Secret::new),
            expires_at_unix: None,
        }
    }

    // 2015-08-30T12:36:00Z, the date of AWS's SigV4 test suite.
    fn suite_time() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_440_938_160)
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {name} in {headers:?}"))
    }

    /// AWS's SigV4 test suite, "get-vanilla" (service "service", us-east-1), with the
    /// X-Amz-Content-Sha256 header this signer adds: the expected value below was computed with
    /// botocore 1.43.11's SigV4Auth for the same request.
    #[test]
    fn get_vanilla_from_the_aws_suite() {
        let url = Url::parse("https://example.amazonaws.com/").unwrap();
        let headers = sign_request(
            "GET",
            &url,
            &[],
            PayloadHash::Bytes(b""),
            &credentials(None),
            "us-east-1",
            "service",
            suite_time(),
        )
        .unwrap();
        assert_eq!(header(&headers, "X-Amz-Date"), "20150830T123600Z");
        assert_eq!(
            header(&headers, "X-Amz-Content-Sha256"),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            header(&headers, "Authorization"),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-content-sha256;x-amz-date, \
             Signature=726c5c4879a6b4ccbbd3b24edbd6b8826d34f87450fbbf4e85546fc7ba9c1642"
        );
        assert!(headers.iter().all(|(k, _)| k != "X-Amz-Security-Token"));
    }

    #[test]
    fn session_token_is_added_and_debug_hides_it() {
        let url =
            Url::parse("https://dicom-medical-imaging.us-east-1.amazonaws.com/datastore/x/studies")
                .unwrap();
        let headers = sign_request(
            "GET",
            &url,
            &[("Accept".into(), "application/dicom+json".into())],
            PayloadHash::Unsigned,
            &credentials(Some("session-token-value")),
            "us-east-1",
            SERVICE,
            suite_time(),
        )
        .unwrap();
        assert_eq!(
            header(&headers, "X-Amz-Security-Token"),
            "session-token-value"
        );
        assert_eq!(header(&headers, "X-Amz-Content-Sha256"), UNSIGNED_PAYLOAD);
        assert!(header(&headers, "Authorization")
            .contains("SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token,"));
        let debug = format!("{:?}", credentials(Some("session-token-value")));
        assert!(!debug.contains("session-token-value") && !debug.contains("EXAMPLEKEY"));
    }

    #[test]
    fn only_stable_headers_are_signed() {
        let url = Url::parse("http://127.0.0.1:8042/sigv4/studies").unwrap();
        let headers = sign_request(
            "POST",
            &url,
            &[
                (
                    "Content-Type".into(),
                    "multipart/related; type=\"application/dicom\"".into(),
                ),
                ("User-Agent".into(), "x".into()),
                ("Transfer-Encoding".into(), "chunked".into()),
                ("X-Amz-Date".into(), "19990101T000000Z".into()),
                ("x-amz-meta-note".into(), "  a   b ".into()),
            ],
            PayloadHash::Bytes(b"body"),
            &credentials(None),
            "eu-west-1",
            SERVICE,
            suite_time(),
        )
        .unwrap();
        assert!(header(&headers, "Authorization").contains(
            "SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-meta-note,"
        ));
        assert_eq!(header(&headers, "X-Amz-Date"), "20150830T123600Z");
    }

    #[test]
    fn bad_inputs_are_refused_without_echoing_values() {
        let url = Url::parse("https://h.example/").unwrap();
        let sign =
            |method: &str, url: &Url, payload, region: &str, headers: &[(String, String)]| {
                sign_request(
                    method,
                    url,
                    headers,
                    payload,
                    &credentials(None),
                    region,
                    SERVICE,
                    suite_time(),
                )
                .unwrap_err()
            };
        assert_eq!(
            sign("G ET", &url, PayloadHash::Unsigned, "us-east-1", &[]).code(),
            ErrorCode::Int001
        );
        let file = Url::parse("file:///etc/passwd").unwrap();
        assert_eq!(
            sign("GET", &file, PayloadHash::Unsigned, "us-east-1", &[]).code(),
            ErrorCode::Cfg002
        );
        assert_eq!(
            sign("GET", &url, PayloadHash::Unsigned, "US East", &[]).code(),
            ErrorCode::Cfg002
        );
        assert_eq!(
            sign("GET", &url, PayloadHash::Unsigned, "", &[]).code(),
            ErrorCode::Cfg001
        );
        assert_eq!(
            sign(
                "GET",
                &url,
                PayloadHash::Precomputed("abc".into()),
                "us-east-1",
                &[]
            )
            .code(),
            ErrorCode::Int001
        );
        let e = sign(
            "GET",
            &url,
            PayloadHash::Unsigned,
            "us-east-1",
            &[(
                "Content-Type".into(),
                "text/plain\r\nX-Injected: secret-value".into(),
            )],
        );
        assert_eq!(e.code(), ErrorCode::Int001);
        assert!(!e.to_string().contains("secret-value"));
        let mut empty = credentials(None);
        empty.secret_access_key = Secret::new("");
        let e = sign_request(
            "GET",
            &url,
            &[],
            PayloadHash::Unsigned,
            &empty,
            "us-east-1",
            SERVICE,
            suite_time(),
        )
        .unwrap_err();
        assert_eq!(e.code(), ErrorCode::Auth001);
    }

    #[test]
    fn payload_markers_are_signed_as_they_are() {
        let url =
            Url::parse("https://dicom-medical-imaging.us-east-1.amazonaws.com/datastore/d/studies")
                .unwrap();
        for marker in [UNSIGNED_PAYLOAD, STREAMING_PAYLOAD] {
            let headers = sign_request(
                "POST",
                &url,
                &[("x-amz-decoded-content-length".into(), "10".into())],
                PayloadHash::Precomputed(marker.into()),
                &credentials(None),
                "us-east-1",
                SERVICE,
                suite_time(),
            )
            .unwrap();
            assert_eq!(header(&headers, "X-Amz-Content-Sha256"), marker);
            assert!(header(&headers, "Authorization").contains(
                "SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length,"
            ));
        }
        let upper = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
        let headers = sign_request(
            "GET",
            &url,
            &[],
            PayloadHash::Precomputed(upper.into()),
            &credentials(None),
            "us-east-1",
            SERVICE,
            suite_time(),
        )
        .unwrap();
        assert_eq!(
            header(&headers, "X-Amz-Content-Sha256"),
            upper.to_ascii_lowercase()
        );
    }

    #[test]
    fn payload_hash_debug_shows_no_body() {
        assert_eq!(
            format!("{:?}", PayloadHash::Bytes(b"patient name")),
            "Bytes(12 bytes)"
        );
    }
}
