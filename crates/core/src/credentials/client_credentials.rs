//! OAuth2 client credentials grant (RFC 6749 §4.4) for any OIDC provider.
//!
//! Client authentication (RFC 6749 §2.3, OIDC Core §9):
//! - `client_secret_post`: id and secret in the form (the Python plugin's way, the default);
//! - `client_secret_basic`: HTTP Basic with the form-urlencoded id and secret;
//! - `private_key_jwt`: a short-lived JWT signed with the client's key (RFC 7523 §2.2),
//!   with a unique `jti`, `iss` = `sub` = client id and `aud` = the token endpoint.

use super::discovery::Discovery;
use super::{token_response, FetchError, FetchedToken};
use crate::config::{ClientAssertion, ClientAuth, ServerConfig};
use crate::error::{Error, ErrorCode};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use url::Url;

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Lifetime of a client assertion: long enough for clock skew, short enough to be useless if stolen.
const ASSERTION_LIFETIME_SECS: u64 = 120;

/// Where the token endpoint comes from.
pub enum Endpoint {
    Fixed(Url),
    Discovered(Arc<Discovery>),
}

enum Auth {
    Post(crate::secret::Secret),
    Basic(crate::secret::Secret),
    Jwt {
        key: EncodingKey,
        algorithm: Algorithm,
        key_id: Option<String>,
        x5t: Option<String>,
        /// `x5t#S256` header (base64url SHA-256 certificate thumbprint; Entra certificate credentials).
        x5t_s256: Option<String>,
    },
}

pub struct ClientCredentials {
    http: reqwest::Client,
    endpoint: Endpoint,
    client_id: String,
    auth: Auth,
    scope: String,
    extra: Vec<(&'static str, String)>,
}

impl ClientCredentials {
    /// Prepares the grant for `server`; a key that cannot be parsed is CFG-002 here, at start-up.
    pub fn new(
        server: &ServerConfig,
        http: reqwest::Client,
        endpoint: Endpoint,
    ) -> Result<Self, Error> {
        let client_id = server.client_id.clone().ok_or_else(|| {
            Error::coded(
                ErrorCode::Cfg001,
                format!("server '{}': ClientId is required", server.name),
            )
        })?;
        let auth = match &server.client_auth {
            ClientAuth::SecretPost(s) => Auth::Post(s.clone()),
            ClientAuth::SecretBasic(s) => Auth::Basic(s.clone()),
            ClientAuth::PrivateKeyJwt(assertion) => assertion_auth(&server.name, assertion)?,
            ClientAuth::None => {
                return Err(Error::coded(
                    ErrorCode::Cfg001,
                    format!(
                        "server '{}': client credentials need a ClientSecret or a client key",
                        server.name
                    ),
                ))
            }
        };
        let mut extra = Vec::new();
        if let Some(audience) = &server.audience {
            extra.push(("audience", audience.clone()));
        }
        if let Some(resource) = &server.resource {
            extra.push(("resource", resource.clone()));
        }
        Ok(ClientCredentials {
            http,
            endpoint,
            client_id,
            auth,
            scope: server.scope.clone(),
            extra,
        })
    }

    async fn token_endpoint(&self) -> Result<Url, FetchError> {
        match &self.endpoint {
            Endpoint::Fixed(url) => Ok(url.clone()),
            Endpoint::Discovered(d) => d
                .metadata()
                .await
                .map(|m| m.token_endpoint.clone())
                .map_err(|error| {
                    let retryable = matches!(
                        error.code(),
                        ErrorCode::Net001 | ErrorCode::Net002 | ErrorCode::Auth003
                    );
                    FetchError {
                        error,
                        retryable,
                        retry_after: None,
                    }
                }),
        }
    }

    /// One token request.
    pub async fn fetch(&self) -> Result<FetchedToken, FetchError> {
        let endpoint = self.token_endpoint().await?;
        let mut form: Vec<(&str, String)> = vec![("grant_type", "client_credentials".into())];
        if !self.scope.is_empty() {
            form.push(("scope", self.scope.clone()));
        }
        form.extend(self.extra.iter().cloned());
        let mut request = self.http.post(endpoint.clone());
        match &self.auth {
            Auth::Post(secret) => {
                form.push(("client_id", self.client_id.clone()));
                form.push(("client_secret", secret.expose().to_owned()));
            }
            Auth::Basic(secret) => {
                // RFC 6749 §2.3.1: both parts are form-urlencoded before Base64.
                let credentials = format!(
                    "{}:{}",
                    form_urlencode(&self.client_id),
                    form_urlencode(secret.expose())
                );
                let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
                request =
                    request.header(reqwest::header::AUTHORIZATION, format!("Basic {encoded}"));
            }
            Auth::Jwt {
                key,
                algorithm,
                key_id,
                x5t,
                x5t_s256,
            } => {
                let assertion = sign_assertion(
                    &self.client_id,
                    endpoint.as_str(),
                    key,
                    *algorithm,
                    key_id,
                    x5t,
                    x5t_s256,
                )
                .map_err(FetchError::fatal)?;
                form.push(("client_id", self.client_id.clone()));
                form.push(("client_assertion_type", ASSERTION_TYPE.into()));
                form.push(("client_assertion", assertion));
            }
        }
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form.iter().map(|(k, v)| (*k, v.as_str())))
            .finish();
        let request = request
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body);
        token_response::exchange(request).await
    }
}

fn form_urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn assertion_auth(server: &str, assertion: &ClientAssertion) -> Result<Auth, Error> {
    let pem = assertion.key.expose().as_bytes();
    let (key, algorithm) = match assertion.algorithm {
        "ES256" => (EncodingKey::from_ec_pem(pem), Algorithm::ES256),
        _ => (EncodingKey::from_rsa_pem(pem), Algorithm::RS256),
    };
    let key =
        key.map_err(|_| {
            Error::coded(
                ErrorCode::Cfg002,
                format!(
                "server '{server}': the client assertion key is not a valid {} private key (PEM)",
                if algorithm == Algorithm::ES256 { "P-256 EC" } else { "RSA" }
            ),
            )
        })?;
    Ok(Auth::Jwt {
        key,
        algorithm,
        key_id: assertion.key_id.clone(),
        x5t: assertion.x5t.clone(),
        // Set by Entra certificate credentials (credentials::azure::CertificateCredential).
        x5t_s256: assertion.x5t_s256.clone(),
    })
}

/// Signs a client assertion (RFC 7523 §3). `x5t` and `x5t_s256` are the base64url SHA-1 and
/// SHA-256 thumbprints of the certificate of `key` (RFC 7515 §4.1.7-8), which Entra ID uses to
/// find a certificate credential.
pub fn sign_assertion(
    client_id: &str,
    audience: &str,
    key: &EncodingKey,
    algorithm: Algorithm,
    key_id: &Option<String>,
    x5t: &Option<String>,
    x5t_s256: &Option<String>,
) -> Result<String, Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| Error::coded(ErrorCode::Int001, "system clock before 1970"))?
        .as_secs();
    let mut header = Header::new(algorithm);
    header.typ = Some("JWT".into());
    header.kid = key_id.clone();
    header.x5t = x5t.clone();
    header.x5t_s256 = x5t_s256.clone();
    let jti: [u8; 16] = rand::random();
    let claims = serde_json::json!({
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "jti": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(jti),
        "iat": now,
        "nbf": now,
        "exp": now + ASSERTION_LIFETIME_SECS,
    });
    jsonwebtoken::encode(&header, &claims, key).map_err(|e| {
        Error::coded(
            ErrorCode::Int001,
            format!("signing the client assertion failed: {e}"),
        )
    })
}
