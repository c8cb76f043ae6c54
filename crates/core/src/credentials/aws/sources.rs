//! The network sources of the AWS credential chain: the container credential provider, IMDSv2
//! and STS `AssumeRoleWithWebIdentity`. Each function is one attempt; see
//! [`CredentialSource::fetch`](super::CredentialSource::fetch) for the error classification.

use super::{AwsCredentials, EcsAuthorization, IMDS_TOKEN_TTL_SECONDS};
use crate::credentials::FetchError;
use crate::error::{Error, ErrorCode};
use crate::secret::Secret;
use serde_json::Value;
use std::io::Read as _;
use std::path::Path;
use std::time::UNIX_EPOCH;
use url::Url;
use zeroize::Zeroizing;

/// A web identity or authorization token file this large is not a token.
const MAX_TOKEN_FILE_BYTES: u64 = 64 * 1024;
/// The STS API version of `AssumeRoleWithWebIdentity`.
const STS_VERSION: &str = "2011-06-15";

use crate::credentials::token_response::{send, Answer};

/// 5xx and 429: the endpoint is unavailable, worth retrying.
fn unavailable(answer: &Answer, what: &str) -> Option<FetchError> {
    (answer.status == 429 || answer.status >= 500).then(|| {
        FetchError::transient(
            Error::coded(
                ErrorCode::Auth003,
                format!("{what} unavailable (HTTP {})", answer.status),
            ),
            answer.retry_after,
        )
    })
}

/// A header value we send: visible ASCII (and spaces) only.
pub(super) fn check_header_value(value: &str, what: &str) -> Result<(), Error> {
    if value.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(Error::coded(
            ErrorCode::Cfg002,
            format!("{what} is not a valid header value (visible ASCII only)"),
        ))
    }
}

/// A token file's content, read now: TOK-001 when missing, unreadable, empty or too large (the
/// message names the file, never its content).
pub(super) fn read_token_file(path: &Path, what: &str) -> Result<Secret, Error> {
    let failed = |why: String| {
        Error::coded(
            ErrorCode::Tok001,
            format!("{what} {} {why}", path.display()),
        )
    };
    let file =
        std::fs::File::open(path).map_err(|e| failed(format!("cannot be read ({})", e.kind())))?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_TOKEN_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| failed(format!("cannot be read ({})", e.kind())))?;
    if bytes.len() as u64 > MAX_TOKEN_FILE_BYTES {
        return Err(failed("is larger than 64 KiB: not a token".into()));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| failed("is not text".into()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(failed("is empty".into()));
    }
    Ok(Secret::new(token))
}

// ---------------------------------------------------------------------------------------------
// Container credential provider (ECS, EKS Pod Identity)
// ---------------------------------------------------------------------------------------------

pub(super) async fn ecs(
    http: &reqwest::Client,
    uri: &Url,
    authorization: Option<&EcsAuthorization>,
) -> Result<AwsCredentials, FetchError> {
    const WHAT: &str = "AWS container credentials endpoint";
    let mut request = http
        .get(uri.clone())
        .header(reqwest::header::ACCEPT, "application/json");
    match authorization {
        Some(EcsAuthorization::Token(token)) => {
            request = request.header(reqwest::header::AUTHORIZATION, token.expose());
        }
        Some(EcsAuthorization::File(path)) => {
            let token = read_token_file(path, "the container authorization token file")
                .map_err(FetchError::fatal)?;
            check_header_value(token.expose(), "the container authorization token")
                .map_err(FetchError::fatal)?;
            request = request.header(reqwest::header::AUTHORIZATION, token.expose());
        }
        None => {}
    }
    let answer = send(request, WHAT).await?;
    if let Some(e) = unavailable(&answer, WHAT) {
        return Err(e);
    }
    if !(200..300).contains(&answer.status) {
        let code = match answer.status {
            401 | 403 => ErrorCode::Auth001,
            _ => ErrorCode::Tok001,
        };
        return Err(FetchError::fatal(Error::coded(
            code,
            format!("{WHAT} refused the request (HTTP {})", answer.status),
        )));
    }
    credentials_json(&answer.body, WHAT).map_err(FetchError::fatal)
}

// ---------------------------------------------------------------------------------------------
// EC2 instance metadata service, IMDSv2
// ---------------------------------------------------------------------------------------------

pub(super) async fn imds(
    http: &reqwest::Client,
    endpoint: &Url,
) -> Result<AwsCredentials, FetchError> {
    const WHAT: &str = "EC2 instance metadata service";
    let at = |path: &str| {
        endpoint.join(path).map_err(|_| {
            FetchError::fatal(Error::coded(
                ErrorCode::Cfg002,
                "the IMDS endpoint cannot be joined with a path",
            ))
        })
    };

    // 1. A session token.
    let answer = send(
        http.put(at("/latest/api/token")?).header(
            "X-aws-ec2-metadata-token-ttl-seconds",
            IMDS_TOKEN_TTL_SECONDS.to_string(),
        ),
        WHAT,
    )
    .await?;
    if let Some(e) = unavailable(&answer, WHAT) {
        return Err(e);
    }
    if answer.status != 200 {
        let why = match answer.status {
            403 => "IMDS is disabled for this instance, or the request went through a proxy",
            404 | 405 => "IMDSv2 is not available at this endpoint",
            _ => "the token request was refused",
        };
        return Err(FetchError::fatal(Error::coded(
            ErrorCode::Tok001,
            format!("{WHAT}: no session token (HTTP {}: {why})", answer.status),
        )));
    }
    let token = std::str::from_utf8(&answer.body)
        .ok()
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
        .map(Secret::new)
        .ok_or_else(|| {
            FetchError::fatal(Error::coded(
                ErrorCode::Tok005,
                format!("{WHAT}: the session token answer is not a token"),
            ))
        })?;

    // 2. The role of the instance profile.
    let roles = at("/latest/meta-data/iam/security-credentials/")?;
    let answer = send(
        http.get(roles.clone())
            .header("X-aws-ec2-metadata-token", token.expose()),
        WHAT,
    )
    .await?;
    check_imds_get(&answer, WHAT, "the role list")?;
    let role = std::str::from_utf8(&answer.body)
        .ok()
        .and_then(|text| text.lines().map(str::trim).find(|l| !l.is_empty()))
        .map(str::to_owned)
        .ok_or_else(|| {
            FetchError::fatal(Error::coded(
                ErrorCode::Tok001,
                format!("{WHAT}: no IAM role is attached to this instance"),
            ))
        })?;
    if role.len() > 128 || role.contains('/') || role.bytes().any(|b| b.is_ascii_control()) {
        return Err(FetchError::fatal(Error::coded(
            ErrorCode::Tok005,
            format!("{WHAT}: the role name in the answer is not an IAM role name"),
        )));
    }

    // 3. The role's credentials.
    let mut url = roles;
    url.path_segments_mut()
        .map_err(|_| {
            FetchError::fatal(Error::coded(
                ErrorCode::Cfg002,
                "the IMDS endpoint cannot hold a path",
            ))
        })?
        .pop_if_empty()
        .push(&role);
    let answer = send(
        http.get(url)
            .header("X-aws-ec2-metadata-token", token.expose()),
        WHAT,
    )
    .await?;
    check_imds_get(&answer, WHAT, "the role's credentials")?;
    let json: Value = serde_json::from_slice(&answer.body).map_err(|_| {
        FetchError::fatal(Error::coded(
            ErrorCode::Tok005,
            format!("{WHAT}: the credentials answer is not JSON"),
        ))
    })?;
    match json.get("Code").and_then(Value::as_str) {
        Some("Success") | None => {}
        Some(code) => {
            return Err(FetchError::fatal(Error::coded(
                ErrorCode::Tok001,
                format!(
                    "{WHAT}: the credentials answer has Code '{}', not 'Success'",
                    sanitize(code)
                ),
            )))
        }
    }
    credentials_from_value(&json, WHAT, true).map_err(FetchError::fatal)
}

fn check_imds_get(answer: &Answer, what: &str, item: &str) -> Result<(), FetchError> {
    if let Some(e) = unavailable(answer, what) {
        return Err(e);
    }
    match answer.status {
        200 => Ok(()),
        // The session token just obtained was refused (expired, or IMDS restarted): a new
        // attempt gets a new one.
        401 => Err(FetchError::transient(
            Error::coded(
                ErrorCode::Tok001,
                format!("{what}: the session token was refused (HTTP 401) reading {item}"),
            ),
            None,
        )),
        404 => Err(FetchError::fatal(Error::coded(
            ErrorCode::Tok001,
            format!(
                "{what}: {item} not found (HTTP 404): is an IAM role attached to this instance?"
            ),
        ))),
        status => Err(FetchError::fatal(Error::coded(
            ErrorCode::Tok001,
            format!("{what}: reading {item} failed (HTTP {status})"),
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// STS AssumeRoleWithWebIdentity
// ---------------------------------------------------------------------------------------------

pub(super) async fn web_identity(
    http: &reqwest::Client,
    token_file: &Path,
    role_arn: &str,
    session_name: &str,
    sts_endpoint: &Url,
) -> Result<AwsCredentials, FetchError> {
    const WHAT: &str = "AWS STS (AssumeRoleWithWebIdentity)";
    let token = read_token_file(
        token_file,
        "web identity: the token file (AWS_WEB_IDENTITY_TOKEN_FILE)",
    )
    .map_err(FetchError::fatal)?;
    let body = Zeroizing::new(
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("Action", "AssumeRoleWithWebIdentity")
            .append_pair("Version", STS_VERSION)
            .append_pair("RoleArn", role_arn)
            .append_pair("RoleSessionName", session_name)
            .append_pair("WebIdentityToken", token.expose())
            .finish(),
    );
    let request = http
        .post(sts_endpoint.clone())
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded; charset=utf-8",
        )
        .header(reqwest::header::ACCEPT, "text/xml")
        .body(body.as_bytes().to_vec());
    let answer = send(request, WHAT).await?;
    interpret_sts(&answer, WHAT)
}

fn interpret_sts(answer: &Answer, what: &str) -> Result<AwsCredentials, FetchError> {
    let text = std::str::from_utf8(&answer.body).ok();
    let document = text.and_then(|t| roxmltree::Document::parse(t).ok());
    if (200..300).contains(&answer.status) {
        let Some(document) = document else {
            return Err(FetchError::fatal(Error::coded(
                ErrorCode::Tok005,
                format!("{what}: the answer is not XML"),
            )));
        };
        let root = document.root_element();
        let credentials = (root.tag_name().name() == "AssumeRoleWithWebIdentityResponse")
            .then(|| child(root, "AssumeRoleWithWebIdentityResult"))
            .flatten()
            .and_then(|result| child(result, "Credentials"))
            .ok_or_else(|| {
                FetchError::fatal(Error::coded(
                    ErrorCode::Tok005,
                    format!(
                        "{what}: the answer has no \
                         AssumeRoleWithWebIdentityResponse/AssumeRoleWithWebIdentityResult/Credentials"
                    ),
                ))
            })?;
        let field = |name: &str| {
            child(credentials, name)
                .and_then(|n| n.text())
                .map(str::trim)
                .filter(|t| !t.is_empty())
        };
        let (Some(access_key_id), Some(secret), Some(session_token), Some(expiration)) = (
            field("AccessKeyId"),
            field("SecretAccessKey"),
            field("SessionToken"),
            field("Expiration"),
        ) else {
            return Err(FetchError::fatal(Error::coded(
                ErrorCode::Tok005,
                format!(
                    "{what}: Credentials lacks AccessKeyId, SecretAccessKey, SessionToken or \
                     Expiration"
                ),
            )));
        };
        let expires_at_unix = parse_timestamp(expiration).ok_or_else(|| {
            FetchError::fatal(Error::coded(
                ErrorCode::Tok005,
                format!("{what}: Expiration is not an ISO 8601 UTC timestamp"),
            ))
        })?;
        return Ok(AwsCredentials {
            access_key_id: access_key_id.to_owned(),
            secret_access_key: Secret::new(secret),
            session_token: Some(Secret::new(session_token)),
            expires_at_unix: Some(expires_at_unix),
        });
    }

    // ErrorResponse/Error/{Type,Code,Message}
    let (code, message) = document
        .as_ref()
        .and_then(|d| {
            let root = d.root_element();
            (root.tag_name().name() == "ErrorResponse")
                .then(|| child(root, "Error"))
                .flatten()
        })
        .map(|error| {
            let text = |name| {
                child(error, name)
                    .and_then(|n| n.text())
                    .map(|t| sanitize(t.trim()))
            };
            (text("Code"), text("Message"))
        })
        .unwrap_or((None, None));
    let detail = match (&code, &message) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.clone(),
        _ => "no STS error in the answer".to_owned(),
    };
    let status = answer.status;
    let transient = |error_code| {
        Err(FetchError::transient(
            Error::coded(
                error_code,
                format!("{what} unavailable (HTTP {status}; {detail})"),
            ),
            answer.retry_after,
        ))
    };
    match code.as_deref() {
        Some("IDPCommunicationError" | "Throttling" | "ServiceUnavailable" | "InternalFailure") => {
            return transient(ErrorCode::Auth003)
        }
        _ if status == 429 || status >= 500 => return transient(ErrorCode::Auth003),
        _ => {}
    }
    let error_code = match code.as_deref() {
        Some("ExpiredTokenException") => ErrorCode::Tok002,
        Some(
            "AccessDenied" | "InvalidIdentityToken" | "IDPRejectedClaim" | "InvalidClientTokenId",
        ) => ErrorCode::Auth001,
        None if status == 401 || status == 403 => ErrorCode::Auth001,
        _ => ErrorCode::Tok001,
    };
    Err(FetchError::fatal(Error::coded(
        error_code,
        format!("{what} refused the request (HTTP {status}; {detail})"),
    )))
}

fn child<'a, 'input>(
    node: roxmltree::Node<'a, 'input>,
    name: &str,
) -> Option<roxmltree::Node<'a, 'input>> {
    node.children()
        .find(|n| n.is_element() && n.tag_name().name() == name)
}

// ---------------------------------------------------------------------------------------------
// Shared parsing
// ---------------------------------------------------------------------------------------------

/// `{"AccessKeyId","SecretAccessKey","Token","Expiration"}` (IMDS and containers).
fn credentials_json(body: &[u8], what: &str) -> Result<AwsCredentials, Error> {
    let json: Value = serde_json::from_slice(body)
        .map_err(|_| Error::coded(ErrorCode::Tok005, format!("{what}: the answer is not JSON")))?;
    credentials_from_value(&json, what, false)
}

fn credentials_from_value(
    json: &Value,
    what: &str,
    temporary: bool,
) -> Result<AwsCredentials, Error> {
    let field = |name: &str| {
        json.get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|t| !t.is_empty())
    };
    let (Some(access_key_id), Some(secret)) = (field("AccessKeyId"), field("SecretAccessKey"))
    else {
        return Err(Error::coded(
            ErrorCode::Tok005,
            format!("{what}: the answer has no AccessKeyId and SecretAccessKey"),
        ));
    };
    let session_token = field("Token");
    let expiration = field("Expiration");
    if temporary && (session_token.is_none() || expiration.is_none()) {
        return Err(Error::coded(
            ErrorCode::Tok005,
            format!("{what}: the answer has no Token or Expiration"),
        ));
    }
    let expires_at_unix = match expiration {
        None => None,
        Some(text) => Some(parse_timestamp(text).ok_or_else(|| {
            Error::coded(
                ErrorCode::Tok005,
                format!("{what}: Expiration is not an ISO 8601 UTC timestamp"),
            )
        })?),
    };
    Ok(AwsCredentials {
        access_key_id: access_key_id.to_owned(),
        secret_access_key: Secret::new(secret),
        session_token: session_token.map(Secret::new),
        expires_at_unix,
    })
}

/// An ISO 8601 UTC timestamp as AWS writes them (`2024-01-01T00:00:00Z`, with optional
/// fractional seconds, `+00:00` accepted for `Z`), as Unix seconds.
pub(super) fn parse_timestamp(text: &str) -> Option<u64> {
    let text = text.trim();
    let text = text
        .strip_suffix("+00:00")
        .map(|t| format!("{t}Z"))
        .unwrap_or_else(|| text.to_owned());
    let time = humantime::parse_rfc3339(&text).ok()?;
    time.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// Provider text goes into logs and JSON bodies: keep it short and printable.
fn sanitize(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            headers: reqwest::header::HeaderMap::new(),
            retry_after: None,
            body: Zeroizing::new(body.as_bytes().to_vec()),
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp("2024-01-01T00:00:00Z"), Some(1_704_067_200));
        assert_eq!(
            parse_timestamp("2024-01-01T00:00:00.535Z"),
            Some(1_704_067_200)
        );
        assert_eq!(
            parse_timestamp("2024-01-01T00:00:00+00:00"),
            Some(1_704_067_200)
        );
        assert_eq!(parse_timestamp("01/01/2024"), None);
        assert_eq!(parse_timestamp("2024-01-01T00:00:00+02:00"), None);
    }

    #[test]
    fn sts_answers() {
        let ok = r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <Credentials>
      <SessionToken>session &amp; token</SessionToken>
      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>
      <Expiration>2014-10-24T23:00:23Z</Expiration>
      <AccessKeyId>ASgeIAIOSFODNN7EXAMPLE</AccessKeyId>
    </Credentials>
  </AssumeRoleWithWebIdentityResult>
</AssumeRoleWithWebIdentityResponse>"#;
        let c = interpret_sts(&answer(200, ok), "STS").unwrap();
        assert_eq!(c.access_key_id, "ASgeIAIOSFODNN7EXAMPLE");
        assert_eq!(c.session_token.unwrap().expose(), "session & token");
        assert_eq!(c.expires_at_unix, Some(1_414_191_623));

        let e = interpret_sts(&answer(200, "{\"json\":true}"), "STS").unwrap_err();
        assert_eq!(e.error.code(), ErrorCode::Tok005);
        let e = interpret_sts(&answer(200, "<Other/>"), "STS").unwrap_err();
        assert_eq!(e.error.code(), ErrorCode::Tok005);

        let error = |code: &str, status| {
            let body = format!(
                "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error>\
                 <Type>Sender</Type><Code>{code}</Code><Message>why</Message></Error>\
                 <RequestId>r</RequestId></ErrorResponse>"
            );
            interpret_sts(&answer(status, &body), "STS").unwrap_err()
        };
        let e = error("AccessDenied", 403);
        assert_eq!(e.error.code(), ErrorCode::Auth001);
        assert!(e.error.to_string().contains("AccessDenied: why"));
        assert!(!e.retryable);
        assert_eq!(
            error("InvalidIdentityToken", 400).error.code(),
            ErrorCode::Auth001
        );
        assert_eq!(
            error("ExpiredTokenException", 400).error.code(),
            ErrorCode::Tok002
        );
        assert_eq!(
            error("ValidationError", 400).error.code(),
            ErrorCode::Tok001
        );
        let e = error("IDPCommunicationError", 400);
        assert!(e.retryable);
        assert_eq!(e.error.code(), ErrorCode::Auth003);
        let e = interpret_sts(&answer(503, "down"), "STS").unwrap_err();
        assert!(e.retryable);
        assert_eq!(
            interpret_sts(&answer(403, "nope"), "STS")
                .unwrap_err()
                .error
                .code(),
            ErrorCode::Auth001
        );
    }

    #[test]
    fn json_credentials() {
        let c = credentials_json(
            br#"{"AccessKeyId":"ASIA","SecretAccessKey":"s","Token":"t","Expiration":"2030-01-01T00:00:00Z"}"#,
            "ECS",
        )
        .unwrap();
        assert_eq!(c.expires_at_unix, Some(1_893_456_000));
        for bad in [
            &b"<html/>"[..],
            br#"{"AccessKeyId":"A"}"#,
            br#"{"AccessKeyId":"A","SecretAccessKey":"s","Expiration":"soon"}"#,
        ] {
            assert_eq!(
                credentials_json(bad, "ECS").unwrap_err().code(),
                ErrorCode::Tok005
            );
        }
        let v: Value =
            serde_json::from_str(r#"{"AccessKeyId":"A","SecretAccessKey":"s"}"#).unwrap();
        assert_eq!(
            credentials_from_value(&v, "IMDS", true).unwrap_err().code(),
            ErrorCode::Tok005
        );
    }
}
