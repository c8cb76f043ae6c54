//! Validation of JWT access tokens before they are cached or used (TOK-004).
//!
//! Keys come from a static PEM (`JWTPublicKey`) or from the provider's JWKS
//! (found by discovery), fetched once, cached, and refetched when a token
//! names an unknown `kid` — at most once a minute, so a flood of forged
//! tokens cannot turn into a flood of JWKS requests. Only asymmetric
//! algorithms from `JWTAlgorithms` are accepted: never `none`, never HMAC
//! (which would let a public key serve as a shared secret).

use crate::config::JwtValidation;
use crate::credentials::discovery::Discovery;
use crate::error::{Error, ErrorCode};
use crate::http_client::transport_error;
use base64::Engine as _;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Minimum time between two JWKS refetches caused by unknown key ids.
pub const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(60);
/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;

enum Keys {
    Static(Vec<DecodingKey>),
    Jwks(JwksCache),
}

struct JwksCache {
    http: reqwest::Client,
    discovery: Arc<Discovery>,
    set: RwLock<Option<Arc<JwkSet>>>,
    /// When an unknown `kid` last caused a refetch (the first fetch does not count).
    last_refetch: Mutex<Option<Instant>>,
    fetch_lock: tokio::sync::Mutex<()>,
}

pub struct JwtValidator {
    algorithms: Vec<Algorithm>,
    audience: Option<String>,
    /// Accepted `iss` values (none: not checked).
    issuers: Vec<String>,
    keys: Keys,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::coded(ErrorCode::Tok004, message)
}

impl JwtValidator {
    /// A validator for `config`; `discovery` supplies the JWKS when there is no static key.
    pub fn new(
        server: &str,
        config: &JwtValidation,
        discovery: Option<Arc<Discovery>>,
        http: reqwest::Client,
    ) -> Result<Self, Error> {
        let algorithms: Vec<Algorithm> = config
            .algorithms
            .iter()
            .filter_map(|a| Algorithm::from_str(a).ok())
            .collect();
        let keys = match (&config.public_key, discovery.clone()) {
            (Some(pem), _) => {
                let pem = pem.expose().as_bytes();
                let mut keys = Vec::new();
                if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
                    keys.push(k);
                }
                if let Ok(k) = DecodingKey::from_ec_pem(pem) {
                    keys.push(k);
                }
                if let Ok(k) = DecodingKey::from_ed_pem(pem) {
                    keys.push(k);
                }
                if keys.is_empty() {
                    return Err(Error::coded(
                        ErrorCode::Cfg002,
                        format!("server '{server}': JWTPublicKey is not an RSA, EC or Ed25519 public key (PEM)"),
                    ));
                }
                Keys::Static(keys)
            }
            (None, Some(discovery)) => Keys::Jwks(JwksCache {
                http,
                discovery,
                set: RwLock::new(None),
                last_refetch: Mutex::new(None),
                fetch_lock: tokio::sync::Mutex::new(()),
            }),
            (None, None) => {
                return Err(Error::coded(
                    ErrorCode::Cfg001,
                    format!("server '{server}': JWT validation needs JWTPublicKey or Issuer"),
                ))
            }
        };
        let mut issuers: Vec<String> = config
            .issuer
            .clone()
            .or_else(|| {
                discovery
                    .as_ref()
                    .map(|d| d.issuer().as_str().trim_end_matches('/').to_owned())
            })
            .into_iter()
            .collect();
        issuers.extend(config.extra_issuers.iter().cloned());
        issuers.dedup();
        Ok(JwtValidator {
            algorithms,
            audience: config.audience.clone(),
            issuers,
            keys,
        })
    }

    /// Checks signature, algorithm, `exp`, `nbf`, `iss` and `aud`.
    pub async fn validate(&self, token: &str) -> Result<(), Error> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| invalid("the access token is not a well-formed JWT"))?;
        if !self.algorithms.contains(&header.alg) {
            return Err(invalid(format!(
                "token signed with {:?}, which JWTAlgorithms does not allow",
                header.alg
            )));
        }
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        match &self.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if !self.issuers.is_empty() {
            validation.set_issuer(&self.issuers);
        }
        let check = |key: &DecodingKey| {
            jsonwebtoken::decode::<serde_json::Value>(token, key, &validation).map(|_| ())
        };
        match &self.keys {
            Keys::Static(keys) => {
                let mut last = None;
                for key in keys {
                    match check(key) {
                        Ok(()) => return Ok(()),
                        Err(e) => last = Some(e),
                    }
                }
                Err(invalid(describe(last)))
            }
            Keys::Jwks(cache) => {
                let key = cache.key_for(header.kid.as_deref(), header.alg).await?;
                check(&key).map_err(|e| invalid(describe(Some(e))))
            }
        }
    }
}

fn describe(error: Option<jsonwebtoken::errors::Error>) -> String {
    use jsonwebtoken::errors::ErrorKind;
    let Some(error) = error else {
        return "no key could verify the token".into();
    };
    match error.kind() {
        ErrorKind::ExpiredSignature => "the token has expired".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        ErrorKind::InvalidAudience => "unexpected audience (aud)".into(),
        ErrorKind::InvalidIssuer => "unexpected issuer (iss)".into(),
        ErrorKind::InvalidSignature => "invalid signature".into(),
        ErrorKind::MissingRequiredClaim(c) => format!("missing claim {c}"),
        ErrorKind::InvalidAlgorithm => "the key does not match the token's algorithm".into(),
        other => format!("invalid token ({other:?})"),
    }
}

impl JwksCache {
    async fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, Error> {
        if let Some(key) = self.lookup(kid, alg)? {
            return Ok(key);
        }
        // Unknown kid (or nothing fetched yet): refetch, but at most once per interval.
        let _guard = self.fetch_lock.lock().await;
        if let Some(key) = self.lookup(kid, alg)? {
            return Ok(key);
        }
        let never_fetched = self.set.read().unwrap_or_else(|p| p.into_inner()).is_none();
        let due = never_fetched || {
            let mut last = self.last_refetch.lock().unwrap_or_else(|p| p.into_inner());
            let due = last.is_none_or(|t| t.elapsed() >= JWKS_REFETCH_INTERVAL);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due {
            self.fetch().await?;
            if let Some(key) = self.lookup(kid, alg)? {
                return Ok(key);
            }
        }
        Err(invalid(format!(
            "the token's signing key (kid {}) is not in the provider's JWKS",
            kid.unwrap_or("none")
        )))
    }

    fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Result<Option<DecodingKey>, Error> {
        let set = self.set.read().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(set) = set else { return Ok(None) };
        let jwk = match kid {
            Some(kid) => set.find(kid),
            None if set.keys.len() == 1 => set.keys.first(),
            None => {
                return Err(invalid(
                    "the token has no kid and the JWKS holds several keys",
                ))
            }
        };
        let Some(jwk) = jwk else { return Ok(None) };
        if let Some(key_alg) = jwk.common.key_algorithm {
            if key_alg.to_string() != format!("{alg:?}") {
                return Err(invalid("the token's algorithm does not match its JWKS key"));
            }
        }
        DecodingKey::from_jwk(jwk)
            .map(Some)
            .map_err(|_| invalid("the JWKS key for the token cannot be used"))
    }

    async fn fetch(&self) -> Result<(), Error> {
        let metadata = self.discovery.metadata().await?;
        let uri = metadata
            .jwks_uri
            .clone()
            .ok_or_else(|| Error::coded(ErrorCode::Tok004, "the provider publishes no jwks_uri"))?;
        let response = self
            .http
            .get(uri)
            .send()
            .await
            .map_err(|e| transport_error("JWKS", &e))?;
        if !response.status().is_success() {
            return Err(Error::coded(
                ErrorCode::Tok004,
                format!("JWKS answered HTTP {}", response.status().as_u16()),
            ));
        }
        let set: JwkSet = response
            .json()
            .await
            .map_err(|_| Error::coded(ErrorCode::Tok004, "the JWKS is not a valid JWK set"))?;
        *self.set.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(set));
        Ok(())
    }
}

/// The `exp` claim of a JWT, read without verification (only to size the cache lifetime
/// of tokens whose response carries no `expires_in`).
pub fn unverified_expiry(token: &str) -> Option<u64> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("exp")?.as_u64()
}
