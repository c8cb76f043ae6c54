//! Google Cloud access tokens, by the two protocols Google documents for servers.
//!
//! - [`ServiceAccount`]: a service-account JSON key file and the JWT-bearer
//!   authorization grant (RFC 7523 §2.1; Google, "Using OAuth 2.0 for Server to
//!   Server Applications"). The plugin signs a one-hour assertion
//!   `{iss: client_email, scope, aud: token_uri, iat, exp: iat + 3600}` with the
//!   key's RSA private key (RS256, `kid` = `private_key_id`) and posts
//!   `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=…` to
//!   the key's `token_uri`. No client id or secret is involved: the Python
//!   plugin's client-credentials request is refused by Google.
//! - [`MetadataServer`]: the Compute Engine / GKE metadata server (Google,
//!   "Storing and retrieving instance metadata"; "About VM metadata"):
//!   `GET http://{host}/computeMetadata/v1/instance/service-accounts/{account}/token`
//!   with the header `Metadata-Flavor: Google`. The host is
//!   `metadata.google.internal` unless `GCE_METADATA_HOST` names another one
//!   (as Google's client libraries allow, e.g. for emulators).
//!
//! The Healthcare API's DICOMweb base URL can be built from its parts with
//! [`healthcare_dicomweb_url`], as Orthanc's own Google Cloud Platform plugin
//! does; when no key file is configured, [`default_credentials_file`] gives the
//! one named by `GOOGLE_APPLICATION_CREDENTIALS`.
//!
//! Errors follow SPEC 3.2: an unusable key file is CFG-002 (naming the field,
//! never showing key material); the token endpoint's answers are classified by
//! [`token_response::interpret`] (`invalid_grant` → AUTH-001, `invalid_scope` →
//! AUTH-002, 5xx/429 → AUTH-003 retryable, junk → TOK-005); the metadata
//! server's 404 (no such service account) and 403 are AUTH-001; transport
//! failures are NET-001/002/003.
//!
//! Tokens are returned with the lifetime the server gave, even one under 60 s:
//! whether such a token is usable is the token manager's decision.

use super::{token_response, FetchError, FetchedToken};
use crate::error::{Error, ErrorCode};
use crate::secret::{Secret, REDACTED};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use url::Url;
use zeroize::Zeroizing;

/// The OAuth scope of the Cloud Healthcare API (DICOM stores included).
pub const HEALTHCARE_SCOPE: &str = "https://www.googleapis.com/auth/cloud-healthcare";
/// Google's token endpoint, used when a key file has no `token_uri`.
pub const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// The Healthcare API root [`healthcare_dicomweb_url`] builds on by default.
pub const HEALTHCARE_API_BASE: &str = "https://healthcare.googleapis.com/v1";
/// The metadata server's host when `GCE_METADATA_HOST` is not set.
pub const DEFAULT_METADATA_HOST: &str = "metadata.google.internal";
/// The environment variable naming another metadata server host (`host[:port]`).
pub const METADATA_HOST_ENV: &str = "GCE_METADATA_HOST";
/// The environment variable naming the default service-account key file.
pub const CREDENTIALS_ENV: &str = "GOOGLE_APPLICATION_CREDENTIALS";
/// The grant type of RFC 7523 §2.1.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Lifetime of the assertion: Google accepts at most one hour.
const ASSERTION_LIFETIME_SECS: u64 = 3600;
/// Key files are about 2.3 KB; anything this large is not one.
const MAX_KEY_FILE_BYTES: u64 = 1 << 20;

/// A service-account key file: the JSON Google issues for a service account
/// (`type`, `project_id`, `private_key_id`, `private_key`, `client_email`,
/// `token_uri`, …).
///
/// The private key is kept in a [`Secret`] (redacted, zeroized on drop); its
/// `Debug` shows everything else.
pub struct ServiceAccount {
    client_email: String,
    private_key_id: Option<String>,
    private_key: Secret,
    token_uri: Url,
    project_id: Option<String>,
}

impl fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("private_key", &REDACTED)
            .field("token_uri", &self.token_uri.as_str())
            .field("project_id", &self.project_id)
            .finish()
    }
}

impl ServiceAccount {
    /// Reads a key from its JSON text. Every problem is CFG-002 naming the
    /// field at fault; no value of the key is ever put in the message.
    ///
    /// Required: `type` = `"service_account"`, `client_email`, `private_key`
    /// (RSA, PEM — PKCS#8 as Google issues it, or PKCS#1). Optional:
    /// `private_key_id` (the assertion's `kid`; Google's files always have it),
    /// `token_uri` (default [`GOOGLE_TOKEN_URI`]; must be https, or http to a
    /// loopback address for tests), `project_id`. Other fields are ignored.
    pub fn from_json(text: &str) -> Result<Self, Error> {
        parse(text, "service-account key")
    }

    /// Reads a key file. A file that cannot be read is CFG-002 naming the path
    /// (paths are configuration, not secrets); so is invalid content.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let what = format!("service-account key file {}", path.display());
        let cannot_read = |e: std::io::Error| {
            Error::coded(
                ErrorCode::Cfg002,
                format!("cannot read {what}: {}", io_reason(&e)),
            )
        };
        let file = std::fs::File::open(path).map_err(cannot_read)?;
        let mut bytes = Zeroizing::new(Vec::new());
        file.take(MAX_KEY_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(cannot_read)?;
        if bytes.len() as u64 > MAX_KEY_FILE_BYTES {
            return Err(Error::coded(
                ErrorCode::Cfg002,
                format!("{what} is larger than 1 MiB: not a service-account key"),
            ));
        }
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| Error::coded(ErrorCode::Cfg002, format!("{what} is not UTF-8 text")))?;
        parse(text, &what)
    }

    /// The service account's e-mail address (the assertion's `iss`).
    pub fn client_email(&self) -> &str {
        &self.client_email
    }

    /// The key's id (the assertion's `kid`), if the file gives one.
    pub fn private_key_id(&self) -> Option<&str> {
        self.private_key_id.as_deref()
    }

    /// Where the assertion is exchanged for a token (also its `aud`).
    pub fn token_uri(&self) -> &Url {
        &self.token_uri
    }

    /// The project the service account belongs to, if the file gives it.
    pub fn project_id(&self) -> Option<&str> {
        self.project_id.as_deref()
    }

    /// One token request: the JWT-bearer grant (RFC 7523 §2.1) with a freshly
    /// signed assertion `{iss: client_email, scope, aud: token_uri, iat,
    /// exp: iat + 3600}`, RS256, `kid` = `private_key_id`. An empty `scope`
    /// leaves the claim out (Google then answers `invalid_scope`, AUTH-002);
    /// the caller normally passes the configured Scope or [`HEALTHCARE_SCOPE`].
    ///
    /// No retry here: a `FetchError` says whether retrying makes sense. A token
    /// is returned whatever its `expires_in` (even under 60 s).
    pub async fn fetch(
        &self,
        http: &reqwest::Client,
        scope: &str,
    ) -> Result<FetchedToken, FetchError> {
        let assertion = self.assertion(scope).map_err(FetchError::fatal)?;
        let body = Zeroizing::new(
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("grant_type", JWT_BEARER_GRANT)
                .append_pair("assertion", assertion.expose())
                .finish(),
        );
        let request = http
            .post(self.token_uri.clone())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body.as_bytes().to_vec());
        token_response::exchange(request).await
    }

    /// The signed assertion (a bearer credential for an hour: kept secret).
    fn assertion(&self, scope: &str) -> Result<Secret, Error> {
        let now = unix_now()?;
        let mut claims = Map::new();
        claims.insert("iss".into(), self.client_email.clone().into());
        if !scope.is_empty() {
            claims.insert("scope".into(), scope.into());
        }
        claims.insert("aud".into(), self.token_uri.as_str().into());
        claims.insert("iat".into(), now.into());
        claims.insert("exp".into(), (now + ASSERTION_LIFETIME_SECS).into());
        sign(&self.private_key, self.private_key_id.clone(), &claims).map(Secret::new)
    }
}

fn unix_now() -> Result<u64, Error> {
    Ok(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| Error::coded(ErrorCode::Int001, "system clock before 1970"))?
        .as_secs())
}

/// Signs `claims` with the PEM RSA key (RS256). The error never carries key material.
fn sign(pem: &Secret, kid: Option<String>, claims: &Map<String, Value>) -> Result<String, Error> {
    let key = EncodingKey::from_rsa_pem(pem.expose().as_bytes()).map_err(|_| {
        Error::coded(
            ErrorCode::Cfg002,
            "the service-account private_key is not a PEM RSA private key",
        )
    })?;
    let mut header = Header::new(Algorithm::RS256);
    header.typ = Some("JWT".into());
    header.kid = kid;
    jsonwebtoken::encode(&header, claims, &key).map_err(|_| {
        Error::coded(
            ErrorCode::Cfg002,
            "the service-account private_key cannot sign (not a valid RSA private key)",
        )
    })
}

/// A short, secret-free reason for an I/O failure.
fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        std::io::ErrorKind::IsADirectory => "it is a directory".into(),
        kind => kind.to_string(),
    }
}

fn parse(text: &str, what: &str) -> Result<ServiceAccount, Error> {
    let invalid = |detail: String| Error::coded(ErrorCode::Cfg002, format!("{what}: {detail}"));
    // serde_json's own messages may quote the input; only its position is reported.
    let value: Value = serde_json::from_str(text).map_err(|e| {
        invalid(format!(
            "not valid JSON (error at line {} column {})",
            e.line(),
            e.column()
        ))
    })?;
    let Value::Object(mut fields) = value else {
        return Err(invalid("not a JSON object".into()));
    };
    let mut take = |name: &str, required: bool| -> Result<Option<String>, Error> {
        match fields.remove(name) {
            None | Some(Value::Null) if required => {
                Err(invalid(format!("field '{name}' is missing")))
            }
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => {
                Err(invalid(format!("field '{name}' is empty")))
            }
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(invalid(format!("field '{name}' must be a string"))),
        }
    };
    let kind = take("type", true)?.unwrap_or_default();
    if kind != "service_account" {
        return Err(invalid(format!(
            "type is '{}', but only service-account keys (\"type\": \"service_account\") are \
             supported; on Google Cloud without a key file, leave ServiceAccountFile unset to \
             use the metadata server",
            printable(&kind)
        )));
    }
    // The key first, so that it is moved into a Secret before anything else can fail.
    let private_key = Secret::new(take("private_key", true)?.unwrap_or_default());
    let client_email = take("client_email", true)?.unwrap_or_default();
    let private_key_id = take("private_key_id", false)?;
    let project_id = take("project_id", false)?;
    let token_uri = match take("token_uri", false)? {
        None => Url::parse(GOOGLE_TOKEN_URI).expect("constant URL"),
        Some(text) => token_uri(&text).map_err(invalid)?,
    };
    if !private_key.expose().contains("-----BEGIN") {
        return Err(invalid(
            "field 'private_key' is not a PEM private key (no -----BEGIN line)".into(),
        ));
    }
    // A trial signature proves the key usable now rather than at the first request.
    sign(&private_key, None, &Map::new())
        .map_err(|_| invalid("field 'private_key' is not a valid RSA private key (PEM)".into()))?;
    Ok(ServiceAccount {
        client_email,
        private_key_id,
        private_key,
        token_uri,
        project_id,
    })
}

/// `token_uri` must be https: the assertion it receives is a credential for an
/// hour. Plain http is allowed to loopback addresses only (emulators, tests).
fn token_uri(text: &str) -> Result<Url, String> {
    let shown = printable(text);
    let url = Url::parse(text).map_err(|_| format!("token_uri '{shown}' is not a URL"))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        _ => Err(format!(
            "token_uri '{shown}' must be an https URL (http only to a loopback address)"
        )),
    }
}

/// A value that is not secret, shortened and stripped of control characters for a message.
fn printable(text: &str) -> String {
    let mut out: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
    if text.chars().count() > 200 {
        out.push('…');
    }
    out
}

/// The key file to use when `ServiceAccountFile` is not configured: the one
/// `GOOGLE_APPLICATION_CREDENTIALS` names (Google's Application Default
/// Credentials), if set and non-empty. `env` reads an environment variable.
///
/// gcloud's user credentials (`application_default_credentials.json`) are not
/// looked for: they are not a service account.
pub fn default_credentials_file(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    env(CREDENTIALS_ENV)
        .filter(|v| !v.trim().is_empty())
        .map(PathBuf::from)
}

/// The GCE/GKE metadata server as a token source.
///
/// Its requests must reach the metadata server directly: the server refuses
/// any request carrying `X-Forwarded-For`, so they must not go through an HTTP
/// proxy. Pass [`MetadataServer::fetch`] a client without one, e.g.
/// [`metadata_http_client`].
#[derive(Debug, Clone)]
pub struct MetadataServer {
    host: String,
    account: String,
    scopes: Option<String>,
}

impl MetadataServer {
    /// `host`: `host[:port]` of the metadata server (`None`: `GCE_METADATA_HOST`,
    /// else `metadata.google.internal`); `account`: the service account's e-mail
    /// or `default` (`None` or empty: `default`); `scopes`: the `scopes` query
    /// parameter (space- or comma-separated; `None` or empty: the instance's
    /// scopes). An unusable host is reported by [`token_url`](Self::token_url)
    /// and by every [`fetch`](Self::fetch), as CFG-002.
    pub fn new(host: Option<String>, account: Option<String>, scopes: Option<String>) -> Self {
        Self::with_env(host, account, scopes, &|name| std::env::var(name).ok())
    }

    /// [`new`](Self::new), reading the environment through `env`.
    pub fn with_env(
        host: Option<String>,
        account: Option<String>,
        scopes: Option<String>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Self {
        let host = host
            .filter(|h| !h.trim().is_empty())
            .or_else(|| env(METADATA_HOST_ENV).filter(|h| !h.trim().is_empty()))
            .unwrap_or_else(|| DEFAULT_METADATA_HOST.to_owned());
        let account = account
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| "default".to_owned());
        let scopes = scopes
            .map(|s| {
                s.split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .filter(|s| !s.is_empty());
        MetadataServer {
            host: host.trim().to_owned(),
            account,
            scopes,
        }
    }

    /// The metadata server's `host[:port]`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The service account asked for (`default` or an e-mail).
    pub fn account(&self) -> &str {
        &self.account
    }

    /// The token URL, `http://{host}/computeMetadata/v1/instance/service-accounts/{account}/token[?scopes=…]`.
    /// A host given with a scheme (`http://host:port`) is accepted as well.
    pub fn token_url(&self) -> Result<Url, Error> {
        let base = if self.host.contains("://") {
            self.host.clone()
        } else {
            format!("http://{}", self.host)
        };
        let bad_host = || {
            Error::coded(
                ErrorCode::Cfg002,
                format!(
                    "metadata server host '{}' ({METADATA_HOST_ENV}) is not a host[:port]",
                    printable(&self.host)
                ),
            )
        };
        if matches!(self.account.as_str(), "." | "..") {
            return Err(Error::coded(
                ErrorCode::Cfg002,
                format!(
                    "metadata service account '{}' is not an account",
                    self.account
                ),
            ));
        }
        let mut url = Url::parse(&base).map_err(|_| bad_host())?;
        if !matches!(url.scheme(), "http" | "https")
            || url.host().is_none()
            || !matches!(url.path(), "" | "/")
            || url.query().is_some()
            || !url.username().is_empty()
        {
            return Err(bad_host());
        }
        url.path_segments_mut()
            .map_err(|_| bad_host())?
            .clear()
            .extend([
                "computeMetadata",
                "v1",
                "instance",
                "service-accounts",
                &self.account,
                "token",
            ]);
        if let Some(scopes) = &self.scopes {
            url.query_pairs_mut().append_pair("scopes", scopes);
        }
        Ok(url)
    }

    /// One token request. 404 (no such service account on this instance) and
    /// 403 (refused) are AUTH-001; 5xx/429 AUTH-003 (retryable); an answer
    /// without `Metadata-Flavor: Google` or without a token is TOK-005;
    /// transport failures NET-00x (retryable except TLS). A token is returned
    /// whatever its `expires_in`.
    pub async fn fetch(&self, http: &reqwest::Client) -> Result<FetchedToken, FetchError> {
        let url = self.token_url().map_err(FetchError::fatal)?;
        let request = http
            .get(url)
            .header("Metadata-Flavor", "Google")
            .header(reqwest::header::ACCEPT, "application/json");
        let answer = token_response::send(request, "metadata server").await?;
        let (status, retry_after, body) = (answer.status, answer.retry_after, &answer.body);
        let from_google = answer
            .headers
            .get("metadata-flavor")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() == "Google");
        let plain_text = answer
            .headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/plain"));
        let host = printable(&self.host);
        let account = printable(&self.account);
        match status {
            404 => Err(FetchError::fatal(Error::coded(
                ErrorCode::Auth001,
                format!(
                    "metadata server {host} has no service account '{account}' (HTTP 404): \
                     attach a service account to the instance (GKE: configure Workload \
                     Identity), or name one it has"
                ),
            ))),
            403 => {
                let said = if plain_text {
                    format!(": {}", printable(String::from_utf8_lossy(body).trim()))
                } else {
                    String::new()
                };
                Err(FetchError::fatal(Error::coded(
                    ErrorCode::Auth001,
                    format!(
                        "metadata server {host} refused the token request for '{account}' \
                         (HTTP 403{said}); requests through an HTTP proxy (X-Forwarded-For) \
                         are refused"
                    ),
                )))
            }
            200..=299 if !from_google => Err(FetchError::fatal(Error::coded(
                ErrorCode::Tok005,
                format!(
                    "{host} answered without the Metadata-Flavor: Google header: it is not a \
                     Google metadata server (check {METADATA_HOST_ENV} and proxies)"
                ),
            ))),
            _ => token_response::interpret(status, body, retry_after)
                .map_err(|e| prefixed("metadata server", e)),
        }
    }
}

/// Rewrites an error's message as coming from `what` (the classification stays).
fn prefixed(what: &str, mut failure: FetchError) -> FetchError {
    if let Error::Coded { code, message } = failure.error {
        failure.error = Error::coded(code, format!("{what}: {message}"));
    }
    failure
}

/// A client for [`MetadataServer::fetch`]: no proxy (the metadata server
/// refuses proxied requests), no redirects, short connect timeout (off Google
/// Cloud the host does not exist), `timeout` in total.
pub fn metadata_http_client(timeout: Duration) -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(3).min(timeout))
        .timeout(timeout)
        .user_agent(concat!(
            "orthanc-dicomweb-oauth/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
        .map_err(|e| Error::coded(ErrorCode::Int001, format!("metadata HTTP client: {e}")))
}

/// The Healthcare API DICOMweb base URL from its parts, as Orthanc's Google
/// Cloud Platform plugin builds it:
/// `{base}/projects/{project}/locations/{location}/datasets/{dataset}/dicomStores/{store}/dicomWeb`
/// (no trailing slash). `base` defaults to [`HEALTHCARE_API_BASE`]
/// (`https://healthcare.googleapis.com/v1`); it must be an http(s) URL without
/// query or fragment. Each part must be non-empty, at most 256 characters of
/// letters, digits, `_`, `-`, `.` and `:` (legacy domain-scoped project ids),
/// and not `.`/`..`: anything else — notably `/` — is CFG-002 naming the key.
pub fn healthcare_dicomweb_url(
    base: Option<&str>,
    project: &str,
    location: &str,
    dataset: &str,
    store: &str,
) -> Result<Url, Error> {
    let base_text = base.unwrap_or(HEALTHCARE_API_BASE).trim();
    let bad_base = || {
        Error::coded(
            ErrorCode::Cfg002,
            format!(
                "Healthcare API base URL '{}' must be an http(s) URL without query or fragment",
                printable(base_text)
            ),
        )
    };
    let mut url = Url::parse(base_text).map_err(|_| bad_base())?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host().is_none()
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(bad_base());
    }
    let parts = [
        ("Project", project),
        ("Location", location),
        ("Dataset", dataset),
        ("DicomStore", store),
    ];
    for (key, value) in parts {
        check_part(key, value)?;
    }
    url.path_segments_mut()
        .map_err(|_| bad_base())?
        .pop_if_empty()
        .extend([
            "projects",
            project,
            "locations",
            location,
            "datasets",
            dataset,
            "dicomStores",
            store,
            "dicomWeb",
        ]);
    Ok(url)
}

fn check_part(key: &str, value: &str) -> Result<(), Error> {
    let ok = !value.is_empty()
        && value.chars().count() <= 256
        && value != "."
        && value != ".."
        && value
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
    if ok {
        Ok(())
    } else if value.is_empty() {
        Err(Error::coded(
            ErrorCode::Cfg002,
            format!("{key} is empty: the Healthcare API DICOMweb URL needs it"),
        ))
    } else {
        Err(Error::coded(
            ErrorCode::Cfg002,
            format!(
                "{key} '{}' is not a Healthcare API id (letters, digits, '_', '-', '.', ':'; \
                 no '/')",
                printable(value)
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key_json(fields: Value) -> String {
        let mut base = json!({
            "type": "service_account",
            "project_id": "p",
            "private_key_id": "k1",
            "private_key": "-----BEGIN PRIVATE KEY-----\nTUlJQk9nSUJBQUpCQUt=\n-----END PRIVATE KEY-----\n",
            "client_email": "sa@p.iam.gserviceaccount.com",
            "token_uri": "https://oauth2.googleapis.com/token",
        });
        for (k, v) in fields.as_object().unwrap() {
            if v.is_null() {
                base.as_object_mut().unwrap().remove(k);
            } else {
                base[k] = v.clone();
            }
        }
        base.to_string()
    }

    fn cfg002(result: Result<ServiceAccount, Error>) -> String {
        let e = result.unwrap_err();
        assert_eq!(e.code(), ErrorCode::Cfg002, "{e}");
        e.to_string()
    }

    #[test]
    fn key_file_fields_are_checked_by_name() {
        let m = cfg002(ServiceAccount::from_json(&key_json(
            json!({"private_key": null}),
        )));
        assert!(m.contains("'private_key' is missing"), "{m}");
        let m = cfg002(ServiceAccount::from_json(&key_json(
            json!({"client_email": null}),
        )));
        assert!(m.contains("'client_email' is missing"), "{m}");
        let m = cfg002(ServiceAccount::from_json(&key_json(
            json!({"client_email": 5}),
        )));
        assert!(m.contains("'client_email' must be a string"), "{m}");
        let m = cfg002(ServiceAccount::from_json(&key_json(json!({"type": null}))));
        assert!(m.contains("'type' is missing"), "{m}");
        let m = cfg002(ServiceAccount::from_json(&key_json(
            json!({"type": "authorized_user"}),
        )));
        assert!(m.contains("authorized_user"), "{m}");
        let m = cfg002(ServiceAccount::from_json(&key_json(
            json!({"token_uri": "http://oauth2.example/token"}),
        )));
        assert!(m.contains("token_uri"), "{m}");
        let m = cfg002(ServiceAccount::from_json(&key_json(
            json!({"private_key": "not a key"}),
        )));
        assert!(m.contains("'private_key' is not a PEM"), "{m}");
        // PEM-shaped garbage fails the trial signature, without quoting it.
        let m = cfg002(ServiceAccount::from_json(&key_json(json!({}))));
        assert!(m.contains("'private_key' is not a valid RSA"), "{m}");
        assert!(!m.contains("TUlJQk9n"), "{m}");
        let m = cfg002(ServiceAccount::from_json("{\"private_key\": \"TUlJQk9n"));
        assert!(
            m.contains("not valid JSON") && !m.contains("TUlJQk9n"),
            "{m}"
        );
        let m = cfg002(ServiceAccount::from_json("[1]"));
        assert!(m.contains("not a JSON object"), "{m}");
    }

    #[test]
    fn token_uri_must_be_https_except_loopback() {
        assert!(token_uri("https://oauth2.googleapis.com/token").is_ok());
        assert!(token_uri("http://127.0.0.1:8080/token").is_ok());
        assert!(token_uri("http://[::1]:8080/token").is_ok());
        assert!(token_uri("http://localhost/token").is_ok());
        assert!(token_uri("http://10.0.0.1/token").is_err());
        assert!(token_uri("ftp://127.0.0.1/token").is_err());
        assert!(token_uri("nonsense").is_err());
    }

    #[test]
    fn metadata_urls() {
        let none = |_: &str| None;
        let m = MetadataServer::with_env(None, None, None, &none);
        assert_eq!(
            m.token_url().unwrap().as_str(),
            "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token"
        );
        let env = |name: &str| (name == METADATA_HOST_ENV).then(|| "127.0.0.1:8123".to_owned());
        let m = MetadataServer::with_env(
            None,
            Some("sa@p.iam.gserviceaccount.com".into()),
            Some("https://www.googleapis.com/auth/cloud-healthcare  https://x/y".into()),
            &env,
        );
        assert_eq!(m.host(), "127.0.0.1:8123");
        assert_eq!(
            m.token_url().unwrap().as_str(),
            "http://127.0.0.1:8123/computeMetadata/v1/instance/service-accounts/sa@p.iam.gserviceaccount.com/token\
             ?scopes=https%3A%2F%2Fwww.googleapis.com%2Fauth%2Fcloud-healthcare%2Chttps%3A%2F%2Fx%2Fy"
        );
        // An explicit host wins over the environment; an account cannot escape its path segment.
        let m = MetadataServer::with_env(
            Some("http://10.1.2.3:99".into()),
            Some("../../x".into()),
            Some(" ".into()),
            &env,
        );
        assert_eq!(
            m.token_url().unwrap().as_str(),
            "http://10.1.2.3:99/computeMetadata/v1/instance/service-accounts/..%2F..%2Fx/token"
        );
        for bad in ["http://h/path", "h:notaport", "ftp://h", "http://u:p@h"] {
            let e = MetadataServer::with_env(Some(bad.into()), None, None, &none)
                .token_url()
                .unwrap_err();
            assert_eq!(e.code(), ErrorCode::Cfg002, "{bad}");
        }
    }

    #[test]
    fn default_credentials_come_from_the_environment() {
        let set = |name: &str| (name == CREDENTIALS_ENV).then(|| "/keys/sa.json".to_owned());
        assert_eq!(
            default_credentials_file(&set),
            Some(PathBuf::from("/keys/sa.json"))
        );
        assert_eq!(default_credentials_file(&|_| None), None);
        assert_eq!(default_credentials_file(&|_| Some(" ".into())), None);
    }

    #[test]
    fn healthcare_urls() {
        let url =
            healthcare_dicomweb_url(None, "my-proj", "us-central1", "ds_1", "store.a").unwrap();
        assert_eq!(
            url.as_str(),
            "https://healthcare.googleapis.com/v1/projects/my-proj/locations/us-central1/datasets/ds_1/dicomStores/store.a/dicomWeb"
        );
        let url = healthcare_dicomweb_url(
            Some("https://healthcare.googleapis.com/v1beta1/"),
            "example.com:proj",
            "eu",
            "d",
            "s",
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "https://healthcare.googleapis.com/v1beta1/projects/example.com:proj/locations/eu/datasets/d/dicomStores/s/dicomWeb"
        );
        for (p, l, d, s, key) in [
            ("", "l", "d", "s", "Project"),
            ("p/x", "l", "d", "s", "Project"),
            ("p", "..", "d", "s", "Location"),
            ("p", "l", "d?x", "s", "Dataset"),
            ("p", "l", "d", "s t", "DicomStore"),
            ("p", "l", "d", "s%2F", "DicomStore"),
        ] {
            let e = healthcare_dicomweb_url(None, p, l, d, s).unwrap_err();
            assert_eq!(e.code(), ErrorCode::Cfg002);
            assert!(e.to_string().contains(key), "{e}");
        }
        for base in ["ftp://h/v1", "https://h/v1?x=1", "not a url"] {
            let e = healthcare_dicomweb_url(Some(base), "p", "l", "d", "s").unwrap_err();
            assert_eq!(e.code(), ErrorCode::Cfg002, "{base}");
        }
    }
}
