//! AWS credentials (the standard credential chain) and SigV4 request signing, for AWS
//! HealthImaging (`ProviderType: aws`; ADR 0010).
//!
//! AWS HealthImaging takes no bearer token: every request is signed with [`sign_request`] using
//! credentials that come, in this order ([`CredentialSource::detect`]), from:
//!
//! 1. the configuration (`AccessKeyId`, `SecretAccessKey`): [`CredentialSource::Static`];
//! 2. the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), read
//!    again on every fetch: [`CredentialSource::Environment`];
//! 3. web identity federation (EKS IAM roles for service accounts; AWS SDKs and Tools reference
//!    guide, "Assume role credential provider", web identity): `AWS_WEB_IDENTITY_TOKEN_FILE` +
//!    `AWS_ROLE_ARN` [+ `AWS_ROLE_SESSION_NAME`]; the file's token, re-read on every fetch (the
//!    kubelet rotates it), goes to STS `AssumeRoleWithWebIdentity` (an unsigned Query API call,
//!    answered in XML) at `https://sts.{region}.amazonaws.com/` (or `AWS_ENDPOINT_URL_STS`):
//!    [`CredentialSource::WebIdentity`];
//! 4. the container credential provider (ECS task roles, EKS Pod Identity; "Container credential
//!    provider"): `GET http://169.254.170.2{AWS_CONTAINER_CREDENTIALS_RELATIVE_URI}`, or
//!    `GET {AWS_CONTAINER_CREDENTIALS_FULL_URI}` with `Authorization:` the content of
//!    `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` (re-read on every fetch) or
//!    `AWS_CONTAINER_AUTHORIZATION_TOKEN`: [`CredentialSource::Ecs`];
//! 5. the EC2 instance metadata service, IMDSv2 only ("Use the Instance Metadata Service to
//!    access instance metadata", "Retrieve security credentials from instance metadata"):
//!    `PUT /latest/api/token` for a session token, then `GET
//!    /latest/meta-data/iam/security-credentials/` (the role) and `GET …/{role}` with
//!    `X-aws-ec2-metadata-token`: [`CredentialSource::Imds`]. `AWS_EC2_METADATA_DISABLED=true`
//!    turns it off; `AWS_EC2_METADATA_SERVICE_ENDPOINT` moves it.
//!
//! [`AwsCredentialProvider`] caches the credentials and refreshes them [`REFRESH_BEFORE`] their
//! `Expiration`, one fetch at a time.
//!
//! The IMDS and container endpoints are link-local: the HTTP client used for them must not go
//! through a forward proxy.

mod sigv4;
mod sources;

pub use sigv4::{
    is_signed_header, sign_request, PayloadHash, SERVICE, STREAMING_PAYLOAD, UNSIGNED_PAYLOAD,
};

use super::FetchError;
use crate::error::{Error, ErrorCode};
use crate::secret::Secret;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use url::Url;

/// The EC2 instance metadata service.
pub const IMDS_ENDPOINT: &str = "http://169.254.169.254";
/// Where `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` is relative to (ECS).
pub const ECS_BASE: &str = "http://169.254.170.2";
/// Credentials are refreshed this long before their `Expiration`.
pub const REFRESH_BEFORE: Duration = Duration::from_secs(300);
/// Inside the refresh window, a failed or unfruitful refresh is not tried again sooner than
/// this (the cached credentials, still valid, are used meanwhile).
pub const REFRESH_RETRY_INTERVAL: Duration = Duration::from_secs(10);
/// The lifetime of the IMDSv2 session token requested (the maximum, 6 hours).
pub const IMDS_TOKEN_TTL_SECONDS: u32 = 21_600;

/// A set of AWS credentials. `Debug` shows the access key id (an identifier, not a secret:
/// it is in every `Authorization` header) and never the secret key or the session token.
#[derive(Clone)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    /// For temporary credentials (STS, IMDS, containers).
    pub session_token: Option<Secret>,
    /// When temporary credentials expire (Unix seconds).
    pub expires_at_unix: Option<u64>,
}

impl fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key)
            .field("session_token", &self.session_token)
            .field("expires_at_unix", &self.expires_at_unix)
            .finish()
    }
}

impl AwsCredentials {
    /// Whether they are expired at `now` (never, without an expiry).
    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        self.expires_at_unix.is_some_and(|at| unix(now) >= at)
    }
}

/// Endpoints moved elsewhere (tests, emulators, VPC endpoints).
#[derive(Debug, Clone, Default)]
pub struct EndpointOverrides {
    /// Instead of [`IMDS_ENDPOINT`] (and of `AWS_EC2_METADATA_SERVICE_ENDPOINT`).
    pub imds: Option<Url>,
    /// Instead of `AWS_ENDPOINT_URL_STS` and `https://sts.{region}.amazonaws.com/`.
    pub sts: Option<Url>,
    /// Instead of [`ECS_BASE`].
    pub ecs_base: Option<Url>,
}

/// The `Authorization` header of the container credential provider.
#[derive(Debug, Clone)]
pub enum EcsAuthorization {
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN`.
    Token(Secret),
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` (EKS Pod Identity), re-read on every fetch.
    File(PathBuf),
}

/// Where the credentials come from. `Debug` shows no secret.
#[derive(Debug, Clone)]
pub enum CredentialSource {
    /// `AccessKeyId` / `SecretAccessKey` from the configuration.
    Static(AwsCredentials),
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, read on every fetch.
    Environment,
    /// The container credential provider (ECS, EKS Pod Identity).
    Ecs {
        uri: Url,
        authorization: Option<EcsAuthorization>,
    },
    /// The EC2 instance metadata service (IMDSv2).
    Imds { endpoint: Url },
    /// STS `AssumeRoleWithWebIdentity` with the token in `token_file`.
    WebIdentity {
        token_file: PathBuf,
        role_arn: String,
        session_name: String,
        sts_endpoint: Url,
    },
}

impl CredentialSource {
    /// Picks the source in the standard chain's order: static configuration keys → environment
    /// → web identity → container → IMDSv2 (see the module documentation). Empty variables count
    /// as unset. Nothing is fetched or read here (the token files are read on every fetch).
    ///
    /// Errors: CFG-001 without a region (needed for web identity) or when IMDS is disabled and
    /// nothing else is found; CFG-002 for empty static keys, URLs that are not http(s) (a
    /// `_FULL_URI` over plain http must name a loopback or the ECS/EKS link-local address), an
    /// invalid region, role ARN or session name; CFG-003 naming the variable a detected source
    /// lacks (`AWS_SECRET_ACCESS_KEY`, `AWS_ACCESS_KEY_ID`, `AWS_ROLE_ARN`).
    pub fn detect(
        env: &dyn Fn(&str) -> Option<String>,
        static_keys: Option<AwsCredentials>,
        region: &str,
        overrides: &EndpointOverrides,
    ) -> Result<Self, Error> {
        let var = |name: &str| {
            env(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };

        if let Some(keys) = static_keys {
            if keys.access_key_id.trim().is_empty() || keys.secret_access_key.is_empty() {
                return Err(Error::coded(
                    ErrorCode::Cfg002,
                    "AccessKeyId and SecretAccessKey must both be non-empty",
                ));
            }
            return Ok(CredentialSource::Static(keys));
        }

        match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            (Some(_), Some(_)) => return Ok(CredentialSource::Environment),
            (Some(_), None) => {
                return Err(Error::coded(
                    ErrorCode::Cfg003,
                    "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not",
                ))
            }
            (None, Some(_)) => {
                return Err(Error::coded(
                    ErrorCode::Cfg003,
                    "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not",
                ))
            }
            (None, None) => {}
        }

        if let Some(token_file) = var("AWS_WEB_IDENTITY_TOKEN_FILE") {
            let Some(role_arn) = var("AWS_ROLE_ARN") else {
                return Err(Error::coded(
                    ErrorCode::Cfg003,
                    "AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not: web identity \
                     federation needs both",
                ));
            };
            if !role_arn.starts_with("arn:") || role_arn.len() > 2048 {
                return Err(Error::coded(
                    ErrorCode::Cfg002,
                    "AWS_ROLE_ARN is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)",
                ));
            }
            let session_name = match var("AWS_ROLE_SESSION_NAME") {
                Some(name) => {
                    if !valid_session_name(&name) {
                        return Err(Error::coded(
                            ErrorCode::Cfg002,
                            "AWS_ROLE_SESSION_NAME must be 2 to 64 characters among letters, \
                             digits and +=,.@_-",
                        ));
                    }
                    name
                }
                None => format!("orthanc-dicomweb-oauth-{}", unix(SystemTime::now())),
            };
            let sts_endpoint = match (&overrides.sts, var("AWS_ENDPOINT_URL_STS")) {
                (Some(url), _) => http_url(url.as_str(), "the STS endpoint override")?,
                // The SDKs' service-specific endpoint variable (VPC endpoints, FIPS, tests).
                (None, Some(text)) => http_url(&text, "AWS_ENDPOINT_URL_STS")?,
                (None, None) => {
                    sigv4::validate_name("Region", region)?;
                    let suffix = if region.starts_with("cn-") {
                        "amazonaws.com.cn"
                    } else {
                        "amazonaws.com"
                    };
                    Url::parse(&format!("https://sts.{region}.{suffix}/")).map_err(|_| {
                        Error::coded(ErrorCode::Cfg002, "cannot build the STS endpoint URL")
                    })?
                }
            };
            return Ok(CredentialSource::WebIdentity {
                token_file: PathBuf::from(token_file),
                role_arn,
                session_name,
                sts_endpoint,
            });
        }

        let ecs_uri = if let Some(relative) = var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
            let base = match &overrides.ecs_base {
                Some(base) => base.clone(),
                None => Url::parse(ECS_BASE).expect("valid ECS base"),
            };
            if !relative.starts_with('/') {
                return Err(Error::coded(
                    ErrorCode::Cfg002,
                    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI must start with '/'",
                ));
            }
            let joined = format!("{}{relative}", base.as_str().trim_end_matches('/'));
            Some(http_url(&joined, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")?)
        } else if let Some(full) = var("AWS_CONTAINER_CREDENTIALS_FULL_URI") {
            let uri = http_url(&full, "AWS_CONTAINER_CREDENTIALS_FULL_URI")?;
            if uri.scheme() == "http" && !allowed_plain_http_host(&uri) {
                return Err(Error::coded(
                    ErrorCode::Cfg002,
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI over plain http must name a loopback \
                     address or the ECS/EKS container endpoint (169.254.170.2, 169.254.170.23, \
                     fd00:ec2::23)",
                ));
            }
            Some(uri)
        } else {
            None
        };
        if let Some(uri) = ecs_uri {
            let authorization = if let Some(file) = var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
                Some(EcsAuthorization::File(PathBuf::from(file)))
            } else {
                var("AWS_CONTAINER_AUTHORIZATION_TOKEN")
                    .map(|token| {
                        sources::check_header_value(&token, "AWS_CONTAINER_AUTHORIZATION_TOKEN")
                            .map(|()| EcsAuthorization::Token(Secret::new(token)))
                    })
                    .transpose()?
            };
            return Ok(CredentialSource::Ecs { uri, authorization });
        }

        if var("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Err(Error::coded(
                ErrorCode::Cfg001,
                "no AWS credentials: set AccessKeyId and SecretAccessKey, AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY, AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN, or a \
                 container credentials URI (the instance metadata service is disabled by \
                 AWS_EC2_METADATA_DISABLED)",
            ));
        }
        let endpoint = match (&overrides.imds, var("AWS_EC2_METADATA_SERVICE_ENDPOINT")) {
            (Some(url), _) => http_url(url.as_str(), "the IMDS endpoint override")?,
            (None, Some(text)) => http_url(&text, "AWS_EC2_METADATA_SERVICE_ENDPOINT")?,
            (None, None) => Url::parse(IMDS_ENDPOINT).expect("valid IMDS endpoint"),
        };
        Ok(CredentialSource::Imds { endpoint })
    }

    /// `static`, `environment`, `webidentity`, `ecs` or `imds` (for logs and status).
    pub fn kind(&self) -> &'static str {
        match self {
            CredentialSource::Static(_) => "static",
            CredentialSource::Environment => "environment",
            CredentialSource::Ecs { .. } => "ecs",
            CredentialSource::Imds { .. } => "imds",
            CredentialSource::WebIdentity { .. } => "webidentity",
        }
    }

    /// One attempt (no retry). `env` is read by [`CredentialSource::Environment`].
    ///
    /// Errors: network failures (NET-001/002), 5xx and 429 (AUTH-003) are retryable; refusals
    /// are AUTH-001 (401/403, STS `AccessDenied`, `InvalidIdentityToken`…) or TOK-001; answers
    /// that are not credentials are TOK-005; credentials already expired are TOK-002; a token
    /// file that cannot be read is TOK-001; variables gone from the environment are CFG-003.
    /// No message holds a credential, a token or a response body.
    pub async fn fetch(
        &self,
        http: &reqwest::Client,
        env: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> Result<AwsCredentials, FetchError> {
        let credentials = match self {
            CredentialSource::Static(keys) => return Ok(keys.clone()),
            CredentialSource::Environment => from_environment(env).map_err(FetchError::fatal)?,
            CredentialSource::Ecs { uri, authorization } => {
                sources::ecs(http, uri, authorization.as_ref()).await?
            }
            CredentialSource::Imds { endpoint } => sources::imds(http, endpoint).await?,
            CredentialSource::WebIdentity {
                token_file,
                role_arn,
                session_name,
                sts_endpoint,
            } => {
                sources::web_identity(http, token_file, role_arn, session_name, sts_endpoint)
                    .await?
            }
        };
        if credentials.is_expired_at(SystemTime::now()) {
            return Err(FetchError::fatal(Error::coded(
                ErrorCode::Tok002,
                format!(
                    "AWS credentials from {} are already expired (check the host clock)",
                    self.kind()
                ),
            )));
        }
        Ok(credentials)
    }
}

fn from_environment(env: &dyn Fn(&str) -> Option<String>) -> Result<AwsCredentials, Error> {
    let var = |name: &str| {
        env(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let access_key_id = var("AWS_ACCESS_KEY_ID")
        .ok_or_else(|| Error::coded(ErrorCode::Cfg003, "AWS_ACCESS_KEY_ID is no longer set"))?;
    let secret = var("AWS_SECRET_ACCESS_KEY")
        .ok_or_else(|| Error::coded(ErrorCode::Cfg003, "AWS_SECRET_ACCESS_KEY is no longer set"))?;
    Ok(AwsCredentials {
        access_key_id,
        secret_access_key: Secret::new(secret),
        session_token: var("AWS_SESSION_TOKEN").map(Secret::new),
        expires_at_unix: None,
    })
}

/// STS `RoleSessionName`: `[\w+=,.@-]{2,64}`.
fn valid_session_name(name: &str) -> bool {
    (2..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
}

fn http_url(text: &str, what: &str) -> Result<Url, Error> {
    Url::parse(text)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
        .ok_or_else(|| Error::coded(ErrorCode::Cfg002, format!("{what} is not an http(s) URL")))
}

/// The hosts the SDKs accept for `AWS_CONTAINER_CREDENTIALS_FULL_URI` over plain http.
fn allowed_plain_http_host(uri: &Url) -> bool {
    match uri.host() {
        Some(url::Host::Ipv4(ip)) => {
            ip.is_loopback()
                || ip == std::net::Ipv4Addr::new(169, 254, 170, 2)
                || ip == std::net::Ipv4Addr::new(169, 254, 170, 23)
        }
        Some(url::Host::Ipv6(ip)) => {
            ip.is_loopback() || ip == "fd00:ec2::23".parse::<std::net::Ipv6Addr>().expect("valid")
        }
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

pub(crate) fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The environment of the process, as [`CredentialSource::Environment`] reads it.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// How a provider reads environment variables.
pub type EnvFn = dyn Fn(&str) -> Option<String> + Send + Sync;

/// Cached credentials, refreshed [`REFRESH_BEFORE`] they expire; one fetch at a time (callers
/// that arrive during a fetch wait for its result instead of fetching again).
pub struct AwsCredentialProvider {
    source: CredentialSource,
    http: reqwest::Client,
    env: Arc<EnvFn>,
    refresh_before: Duration,
    retry_interval: Duration,
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    cached: Option<AwsCredentials>,
    last_attempt: Option<Instant>,
}

impl fmt::Debug for AwsCredentialProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsCredentialProvider")
            .field("source", &self.source)
            .field("refresh_before", &self.refresh_before)
            .finish_non_exhaustive()
    }
}

impl AwsCredentialProvider {
    /// A provider reading the process environment (for [`CredentialSource::Environment`]).
    pub fn new(source: CredentialSource, http: reqwest::Client) -> Self {
        AwsCredentialProvider {
            source,
            http,
            env: Arc::new(process_env),
            refresh_before: REFRESH_BEFORE,
            retry_interval: REFRESH_RETRY_INTERVAL,
            state: tokio::sync::Mutex::new(State::default()),
        }
    }

    /// Reads `env` instead of the process environment.
    pub fn with_env(mut self, env: Arc<EnvFn>) -> Self {
        self.env = env;
        self
    }

    /// Refreshes this long before expiry instead of [`REFRESH_BEFORE`].
    pub fn with_refresh_before(mut self, refresh_before: Duration) -> Self {
        self.refresh_before = refresh_before;
        self
    }

    /// Waits this long between refreshes inside the refresh window instead of
    /// [`REFRESH_RETRY_INTERVAL`].
    pub fn with_retry_interval(mut self, retry_interval: Duration) -> Self {
        self.retry_interval = retry_interval;
        self
    }

    pub fn source(&self) -> &CredentialSource {
        &self.source
    }

    /// Credentials valid now: the cached ones, or fresh ones when there are none, when they
    /// expire within the refresh window, or when they are expired. Inside the window a failed
    /// refresh keeps the cached credentials (logged as a warning) until they expire.
    pub async fn credentials(&self) -> Result<AwsCredentials, Error> {
        let mut state = self.state.lock().await;
        let now = SystemTime::now();
        if let Some(cached) = &state.cached {
            let usable = !cached.is_expired_at(now);
            let due = match cached.expires_at_unix {
                None => false,
                Some(at) => unix(now).saturating_add(self.refresh_before.as_secs()) >= at,
            };
            let recently_tried = state
                .last_attempt
                .is_some_and(|t| t.elapsed() < self.retry_interval);
            if usable && (!due || recently_tried) {
                return Ok(cached.clone());
            }
        }
        state.last_attempt = Some(Instant::now());
        match self.source.fetch(&self.http, &*self.env).await {
            Ok(fresh) => {
                state.cached = Some(fresh.clone());
                Ok(fresh)
            }
            Err(failure) => match &state.cached {
                Some(cached) if !cached.is_expired_at(SystemTime::now()) => {
                    tracing::warn!(
                        error_code = failure.error.code().as_str(),
                        source = self.source.kind(),
                        "refreshing AWS credentials failed; the current ones stay in use until \
                         they expire: {}",
                        failure.error
                    );
                    Ok(cached.clone())
                }
                _ => Err(failure.error),
            },
        }
    }

    /// Drops the cached credentials (e.g. after the service refused them).
    pub async fn invalidate(&self) {
        let mut state = self.state.lock().await;
        state.cached = None;
        state.last_attempt = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::credentials::fake_env as env;

    fn keys() -> AwsCredentials {
        AwsCredentials {
            access_key_id: "AKIDSTATIC".into(),
            secret_access_key: Secret::new("static-secret-key"),
            session_token: None,
            expires_at_unix: None,
        }
    }

    #[test]
    fn chain_order() {
        let o = EndpointOverrides::default();
        let everything = env(&[
            ("AWS_ACCESS_KEY_ID", "AKIDENV"),
            ("AWS_SECRET_ACCESS_KEY", "env-secret"),
            (
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                "/var/run/secrets/eks.amazonaws.com/serviceaccount/token",
            ),
            ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/orthanc"),
            (
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "/v2/credentials/abc",
            ),
        ]);
        let s = CredentialSource::detect(&everything, Some(keys()), "us-east-1", &o).unwrap();
        assert_eq!(s.kind(), "static");
        assert!(!format!("{s:?}").contains("static-secret-key"));
        let s = CredentialSource::detect(&everything, None, "us-east-1", &o).unwrap();
        assert_eq!(s.kind(), "environment");

        let web = env(&[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/t"),
            ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/orthanc"),
            (
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "/v2/credentials/abc",
            ),
        ]);
        let moved = |name: &str| {
            web(name).or_else(|| {
                (name == "AWS_ENDPOINT_URL_STS")
                    .then(|| "https://sts-fips.us-east-1.amazonaws.com".to_owned())
            })
        };
        let s = CredentialSource::detect(&moved, None, "us-east-1", &o).unwrap();
        assert!(
            matches!(&s, CredentialSource::WebIdentity { sts_endpoint, .. } if sts_endpoint.as_str() == "https://sts-fips.us-east-1.amazonaws.com/"),
            "{s:?}"
        );
        let s = CredentialSource::detect(&web, None, "eu-central-1", &o).unwrap();
        let CredentialSource::WebIdentity {
            sts_endpoint,
            session_name,
            ..
        } = &s
        else {
            panic!("{s:?}")
        };
        assert_eq!(
            sts_endpoint.as_str(),
            "https://sts.eu-central-1.amazonaws.com/"
        );
        assert!(valid_session_name(session_name), "{session_name}");

        let ecs = env(&[(
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "/v2/credentials/abc",
        )]);
        let s = CredentialSource::detect(&ecs, None, "us-east-1", &o).unwrap();
        let CredentialSource::Ecs {
            uri,
            authorization: None,
        } = &s
        else {
            panic!("{s:?}")
        };
        assert_eq!(uri.as_str(), "http://169.254.170.2/v2/credentials/abc");

        let full = env(&[
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "http://169.254.170.23/v1/credentials",
            ),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "auth-token"),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token",
            ),
        ]);
        let s = CredentialSource::detect(&full, None, "us-east-1", &o).unwrap();
        assert!(
            matches!(
                &s,
                CredentialSource::Ecs {
                    authorization: Some(EcsAuthorization::File(_)),
                    ..
                }
            ),
            "{s:?}"
        );

        let s = CredentialSource::detect(&env(&[]), None, "us-east-1", &o).unwrap();
        let CredentialSource::Imds { endpoint } = &s else {
            panic!("{s:?}")
        };
        assert_eq!(endpoint.as_str(), "http://169.254.169.254/");
        let s = CredentialSource::detect(
            &env(&[(
                "AWS_EC2_METADATA_SERVICE_ENDPOINT",
                "http://[fd00:ec2::254]",
            )]),
            None,
            "us-east-1",
            &o,
        )
        .unwrap();
        assert_eq!(s.kind(), "imds");
    }

    #[test]
    fn incomplete_environments_name_what_is_missing() {
        let o = EndpointOverrides::default();
        let e = CredentialSource::detect(
            &env(&[("AWS_ACCESS_KEY_ID", "AKID")]),
            None,
            "us-east-1",
            &o,
        )
        .unwrap_err();
        assert_eq!(e.code(), ErrorCode::Cfg003);
        assert!(e.to_string().contains("AWS_SECRET_ACCESS_KEY"));
        let e = CredentialSource::detect(
            &env(&[("AWS_SECRET_ACCESS_KEY", "do-not-print")]),
            None,
            "us-east-1",
            &o,
        )
        .unwrap_err();
        assert_eq!(e.code(), ErrorCode::Cfg003);
        assert!(!e.to_string().contains("do-not-print"));
        let e = CredentialSource::detect(
            &env(&[("AWS_WEB_IDENTITY_TOKEN_FILE", "/t")]),
            None,
            "us-east-1",
            &o,
        )
        .unwrap_err();
        assert_eq!(e.code(), ErrorCode::Cfg003);
        assert!(e.to_string().contains("AWS_ROLE_ARN"));
        let web = |extra: (&str, &str)| {
            env(&[
                ("AWS_WEB_IDENTITY_TOKEN_FILE", "/t"),
                ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r"),
                extra,
            ])
        };
        let e = CredentialSource::detect(
            &web(("AWS_ROLE_SESSION_NAME", "has space")),
            None,
            "us-east-1",
            &o,
        )
        .unwrap_err();
        assert_eq!(e.code(), ErrorCode::Cfg002);
        let e = CredentialSource::detect(&web(("X", "y")), None, "", &o).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Cfg001);
        let e = CredentialSource::detect(&web(("X", "y")), None, "Not/A/Region", &o).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Cfg002);
        let e = CredentialSource::detect(
            &env(&[(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "http://evil.example/creds",
            )]),
            None,
            "us-east-1",
            &o,
        )
        .unwrap_err();
        assert_eq!(e.code(), ErrorCode::Cfg002);
        assert!(CredentialSource::detect(
            &env(&[(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "https://creds.example/v1"
            )]),
            None,
            "us-east-1",
            &o,
        )
        .is_ok());
        let e = CredentialSource::detect(
            &env(&[("AWS_EC2_METADATA_DISABLED", "true")]),
            None,
            "us-east-1",
            &o,
        )
        .unwrap_err();
        assert_eq!(e.code(), ErrorCode::Cfg001);
        let mut empty = keys();
        empty.secret_access_key = Secret::new("");
        let e = CredentialSource::detect(&env(&[]), Some(empty), "us-east-1", &o).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Cfg002);
    }

    #[test]
    fn expiry() {
        let mut c = keys();
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert!(!c.is_expired_at(now));
        c.expires_at_unix = Some(1_700_000_000);
        assert!(c.is_expired_at(now));
        c.expires_at_unix = Some(1_700_000_001);
        assert!(!c.is_expired_at(now));
    }
}
