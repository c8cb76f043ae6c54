//! Reading a token endpoint's answer (RFC 6749 §5.1 success, §5.2 error).

use super::{FetchError, FetchedToken};
use crate::error::{Error, ErrorCode};
use crate::http_client::transport_error;
use crate::resilience::parse_retry_after;
use crate::secret::Secret;
use serde_json::Value;
use std::time::{Duration, SystemTime};
use zeroize::Zeroizing;

/// Token endpoint answers larger than this are not token responses.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// Sends `request` and turns the answer into a token or a classified error.
pub async fn exchange(request: reqwest::RequestBuilder) -> Result<FetchedToken, FetchError> {
    let answer = send(
        request.header(reqwest::header::ACCEPT, "application/json"),
        "token endpoint",
    )
    .await?;
    interpret(answer.status, &answer.body, answer.retry_after)
}

/// A credentials endpoint's answer, read whole.
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    /// The endpoint's `Retry-After`, if any.
    pub retry_after: Option<Duration>,
    /// Wiped when dropped: it may hold a token or keys.
    pub body: Zeroizing<Vec<u8>>,
}

/// Sends a request to a credentials endpoint (token endpoint, metadata
/// service, STS…) and reads its answer, at most 1 MiB. Transport failures are
/// NET-00x and retryable, except TLS failures (a certificate that fails
/// verification fails again); `what` names the endpoint in messages.
pub async fn send(request: reqwest::RequestBuilder, what: &str) -> Result<Answer, FetchError> {
    let mut response = request.send().await.map_err(|e| {
        let error = transport_error(what, &e);
        if error.code() == ErrorCode::Net003 {
            FetchError::fatal(error)
        } else {
            FetchError::transient(error, None)
        }
    })?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let retry_after = headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    let mut body = Zeroizing::new(Vec::new());
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| FetchError::transient(transport_error(what, &e), retry_after))?
    {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(FetchError::transient(
                Error::coded(ErrorCode::Tok005, format!("{what}: answer exceeds 1 MiB")),
                retry_after,
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Answer {
        status,
        headers,
        retry_after,
        body,
    })
}

/// Classifies an answer: success with a bearer token, an OAuth error, or junk.
pub fn interpret(
    status: u16,
    body: &[u8],
    retry_after: Option<Duration>,
) -> Result<FetchedToken, FetchError> {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    if (200..300).contains(&status) {
        let Some(json) = json.filter(Value::is_object) else {
            return Err(FetchError::fatal(Error::coded(
                ErrorCode::Tok005,
                format!(
                    "token endpoint answered HTTP {status} with a body that is not a JSON object"
                ),
            )));
        };
        let access_token = match json.get("access_token") {
            Some(Value::String(t)) if !t.is_empty() => t.clone(),
            _ => {
                return Err(FetchError::fatal(Error::coded(
                    ErrorCode::Tok005,
                    "token endpoint answer has no access_token",
                )))
            }
        };
        if let Some(kind) = json.get("token_type").and_then(Value::as_str) {
            if !kind.eq_ignore_ascii_case("bearer") {
                return Err(FetchError::fatal(Error::coded(
                    ErrorCode::Tok005,
                    format!("unsupported token_type '{}' (only Bearer)", sanitize(kind)),
                )));
            }
        }
        let expires_in = match json.get("expires_in") {
            Some(Value::Number(n)) => n.as_f64(),
            // Some providers (Entra v1) send it as a string.
            Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
            _ => None,
        }
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64);
        return Ok(FetchedToken {
            access_token: Secret::new(access_token),
            expires_in,
        });
    }

    let oauth_error = json
        .as_ref()
        .and_then(|j| j.get("error"))
        .and_then(Value::as_str)
        .map(sanitize);
    let description = json
        .as_ref()
        .and_then(|j| j.get("error_description"))
        .and_then(Value::as_str)
        .map(sanitize);
    let detail = match (&oauth_error, &description) {
        (Some(e), Some(d)) => format!("{e}: {d}"),
        (Some(e), None) => e.clone(),
        _ => "no OAuth error in the answer".to_owned(),
    };
    if status == 429 || status >= 500 {
        return Err(FetchError::transient(
            Error::coded(
                ErrorCode::Auth003,
                format!("identity provider unavailable (HTTP {status}; {detail})"),
            ),
            retry_after,
        ));
    }
    let code = match oauth_error.as_deref() {
        Some("invalid_scope" | "invalid_target" | "insufficient_scope") => ErrorCode::Auth002,
        Some("invalid_client" | "unauthorized_client" | "invalid_grant" | "access_denied") => {
            ErrorCode::Auth001
        }
        None if status == 401 || status == 403 => ErrorCode::Auth001,
        _ => ErrorCode::Tok001,
    };
    Err(FetchError::fatal(Error::coded(
        code,
        format!("token request refused (HTTP {status}; {detail})"),
    )))
}

/// Provider text goes into logs and JSON bodies: keep it short and printable.
fn sanitize(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Vec<u8> {
        v.to_string().into_bytes()
    }

    #[test]
    fn success() {
        let t = interpret(
            200,
            &body(json!({"access_token": "abc", "token_type": "Bearer", "expires_in": 300})),
            None,
        )
        .unwrap();
        assert_eq!(t.access_token.expose(), "abc");
        assert_eq!(t.expires_in, Some(Duration::from_secs(300)));
        let t = interpret(
            200,
            &body(json!({"access_token": "abc", "expires_in": "3599"})),
            None,
        )
        .unwrap();
        assert_eq!(t.expires_in, Some(Duration::from_secs(3599)));
    }

    #[test]
    fn junk_answers_are_tok005() {
        for b in [
            b"<html>login</html>".to_vec(),
            body(json!({"token": "x"})),
            body(json!({"access_token": ""})),
            body(json!({"access_token": "x", "token_type": "mac"})),
        ] {
            let e = interpret(200, &b, None).unwrap_err();
            assert_eq!(e.error.code(), ErrorCode::Tok005);
            assert!(!e.retryable);
        }
    }

    #[test]
    fn oauth_errors_map_to_auth_codes() {
        let e = interpret(401, &body(json!({"error": "invalid_client", "error_description": "client authentication failed"})), None).unwrap_err();
        assert_eq!(e.error.code(), ErrorCode::Auth001);
        assert!(e.error.to_string().contains("client authentication failed"));
        assert!(!e.retryable);
        let e = interpret(400, &body(json!({"error": "invalid_scope"})), None).unwrap_err();
        assert_eq!(e.error.code(), ErrorCode::Auth002);
        let e = interpret(400, &body(json!({"error": "unauthorized_client"})), None).unwrap_err();
        assert_eq!(e.error.code(), ErrorCode::Auth001);
        let e = interpret(400, b"bad", None).unwrap_err();
        assert_eq!(e.error.code(), ErrorCode::Tok001);
    }

    #[test]
    fn server_errors_and_429_are_retryable() {
        let e = interpret(503, b"down", None).unwrap_err();
        assert!(e.retryable);
        assert_eq!(e.error.code(), ErrorCode::Auth003);
        let e = interpret(429, b"{}", Some(Duration::from_secs(2))).unwrap_err();
        assert!(e.retryable);
        assert_eq!(e.retry_after, Some(Duration::from_secs(2)));
    }
}
