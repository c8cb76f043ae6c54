//! Errors carrying the error codes of the specification (SPEC 3.2).
//!
//! Every error the plugin reports — in a log line or a JSON body — maps to one
//! [`ErrorCode`], so operators can look a failure up by its code whatever
//! surfaced it. Messages never contain secrets: values that could be secret
//! are never interpolated into them.

use std::fmt;

/// The stable error codes shared with the Python plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A required configuration key is missing.
    Cfg001,
    /// A configuration value is invalid (type, range, format, unknown key).
    Cfg002,
    /// A configuration string refers to an unset environment variable.
    Cfg003,
    /// Token acquisition failed.
    Tok001,
    /// The token has expired.
    Tok002,
    /// The token failed validation (signature, claims, algorithm).
    Tok004,
    /// The token endpoint answered something that is not a token response.
    Tok005,
    /// A background refresh failed.
    Tok006,
    /// A network operation timed out.
    Net001,
    /// A connection could not be established.
    Net002,
    /// TLS handshake or certificate verification failed.
    Net003,
    /// The identity provider rejected the client credentials.
    Auth001,
    /// The identity provider refused the requested scope.
    Auth002,
    /// The identity provider is unavailable (or its circuit breaker is open).
    Auth003,
    /// An internal error (a bug, or a panic caught at the FFI boundary).
    Int001,
}

/// The category of an error code, as used in JSON bodies and metrics labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    Configuration,
    Token,
    Network,
    Authentication,
    Internal,
}

impl ErrorCode {
    /// The code as written in logs and JSON bodies, e.g. `CFG-001`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Cfg001 => "CFG-001",
            ErrorCode::Cfg002 => "CFG-002",
            ErrorCode::Cfg003 => "CFG-003",
            ErrorCode::Tok001 => "TOK-001",
            ErrorCode::Tok002 => "TOK-002",
            ErrorCode::Tok004 => "TOK-004",
            ErrorCode::Tok005 => "TOK-005",
            ErrorCode::Tok006 => "TOK-006",
            ErrorCode::Net001 => "NET-001",
            ErrorCode::Net002 => "NET-002",
            ErrorCode::Net003 => "NET-003",
            ErrorCode::Auth001 => "AUTH-001",
            ErrorCode::Auth002 => "AUTH-002",
            ErrorCode::Auth003 => "AUTH-003",
            ErrorCode::Int001 => "INT-001",
        }
    }

    pub fn category(self) -> Category {
        match self {
            ErrorCode::Cfg001 | ErrorCode::Cfg002 | ErrorCode::Cfg003 => Category::Configuration,
            ErrorCode::Tok001
            | ErrorCode::Tok002
            | ErrorCode::Tok004
            | ErrorCode::Tok005
            | ErrorCode::Tok006 => Category::Token,
            ErrorCode::Net001 | ErrorCode::Net002 | ErrorCode::Net003 => Category::Network,
            ErrorCode::Auth001 | ErrorCode::Auth002 | ErrorCode::Auth003 => {
                Category::Authentication
            }
            ErrorCode::Int001 => Category::Internal,
        }
    }

    /// The HTTP status a REST answer carrying this code uses.
    pub fn http_status(self) -> u16 {
        match self.category() {
            Category::Configuration | Category::Internal => 500,
            Category::Token | Category::Network | Category::Authentication => 503,
        }
    }

    /// First things an operator should check; shown in JSON error bodies.
    pub fn troubleshooting(self) -> &'static [&'static str] {
        match self {
            ErrorCode::Cfg001 => &["Add the missing key to the DicomWebOAuth section of the Orthanc configuration."],
            ErrorCode::Cfg002 => &["Check the value against docs/configuration.md or schemas/dicomweb-oauth.schema.json."],
            ErrorCode::Cfg003 => &["Export the environment variable before starting Orthanc, or remove the ${VAR} reference."],
            ErrorCode::Tok001 | ErrorCode::Tok006 => &[
                "Check that the token endpoint is reachable from the Orthanc host.",
                "Check the client id, secret and scope at the identity provider.",
            ],
            ErrorCode::Tok002 => &["Check the clock of the Orthanc host (NTP)."],
            ErrorCode::Tok004 => &[
                "Check JWTAudience, JWTIssuer and JWTAlgorithms against the tokens the provider issues.",
                "Check that JWTPublicKey or the provider's JWKS holds the signing key.",
            ],
            ErrorCode::Tok005 => &["Check that TokenEndpoint points at an OAuth2 token endpoint (not a login page)."],
            ErrorCode::Net001 => &["Check network latency to the provider and the HttpTimeout setting."],
            ErrorCode::Net002 => &["Check DNS, firewalls and the HttpProxy setting."],
            ErrorCode::Net003 => &["Check the CA bundle (HttpsCACertificates, CaBundle) and the server certificate."],
            ErrorCode::Auth001 => &["Check ClientId and ClientSecret (or the client key) at the identity provider."],
            ErrorCode::Auth002 => &["Check that the client is allowed the configured Scope."],
            ErrorCode::Auth003 => &["The identity provider is failing; the plugin retries after the circuit breaker timeout."],
            ErrorCode::Int001 => &["This is a bug; please report it with the Orthanc log around this time."],
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Category::Configuration => "configuration",
            Category::Token => "token",
            Category::Network => "network",
            Category::Authentication => "authentication",
            Category::Internal => "internal",
        })
    }
}

/// Every error the core reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The `DicomWebOAuth` configuration section is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Anything else, classified by its code; `message` never holds a secret.
    #[error("[{code}] {message}")]
    Coded { code: ErrorCode, message: String },
}

impl Error {
    pub fn coded(code: ErrorCode, message: impl Into<String>) -> Self {
        Error::Coded {
            code,
            message: message.into(),
        }
    }

    /// The message without the code prefix (to wrap it in another error).
    pub fn message(&self) -> &str {
        match self {
            Error::Config(e) => &e.message,
            Error::Coded { message, .. } => message,
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Config(e) => e.code,
            Error::Coded { code, .. } => *code,
        }
    }
}

/// The JSON error body of SPEC 3.2, shared by every REST answer the plugin makes.
/// `message` and `details` must not hold secrets (no configured value is ever put there).
/// The body of a refusal that carries no error code (404, 405, 429…): the
/// same shape on Orthanc's route and on the proxy listener.
pub fn plain_error_body(status: u16, error: &str, message: &str) -> serde_json::Value {
    serde_json::json!({"error": error, "message": message, "http_status": status})
}

pub fn error_body(
    code: ErrorCode,
    message: &str,
    details: serde_json::Value,
    http_status: u16,
) -> serde_json::Value {
    serde_json::json!({
        "error_code": code.as_str(),
        "category": code.category().to_string(),
        "message": message,
        "details": details,
        "troubleshooting": code.troubleshooting(),
        "http_status": http_status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_spelled_as_in_the_spec() {
        assert_eq!(ErrorCode::Cfg003.as_str(), "CFG-003");
        assert_eq!(ErrorCode::Auth002.as_str(), "AUTH-002");
        assert_eq!(ErrorCode::Tok004.category(), Category::Token);
        assert_eq!(ErrorCode::Net003.http_status(), 503);
    }
}
