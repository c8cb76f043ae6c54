//! Azure managed identity: tokens from the platform, with no secret in the configuration.
//!
//! Three sources, picked from the environment as Azure's SDKs pick them ([`ManagedIdentity::detect`]):
//!
//! - **Workload identity federation** (AKS; "Workload identity federation"): the projected
//!   service account token in `AZURE_FEDERATED_TOKEN_FILE` is the `client_assertion` of a client
//!   credentials request to `{AZURE_AUTHORITY_HOST}{AZURE_TENANT_ID}/oauth2/v2.0/token` for
//!   `AZURE_CLIENT_ID`. The file is re-read on every request: the kubelet rotates it.
//! - **App Service / Functions / Container Apps** ("Managed identities for App Service and Azure
//!   Functions", REST protocol): `GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=R
//!   [&client_id=C]` with `X-IDENTITY-HEADER: {IDENTITY_HEADER}`; the answer has `expires_on`
//!   (epoch seconds) and no `expires_in`.
//! - **Instance Metadata Service** (VMs, VM scale sets; "How to use managed identities for Azure
//!   resources on an Azure VM to acquire an access token"): `GET
//!   http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=R
//!   [&client_id=C]` with `Metadata: true`. IMDS answers 404 and 410 while it is being updated
//!   and 429 when throttled; the document says to retry those and 5xx.
//!
//! `resource` is the scope without `/.default`. Tokens that expire in under [`MIN_LIFETIME`]
//! are refused (TOK-005), as the Python plugin refused them.
//!
//! The IMDS and App Service endpoints are local to the host: the HTTP client used for them
//! must not go through a forward proxy (IMDS refuses requests carrying `X-Forwarded-For`).

use super::{azure, token_response, FetchError, FetchedToken};
use crate::error::{Error, ErrorCode};
use crate::secret::Secret;
use serde_json::Value;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use url::Url;
use zeroize::Zeroizing;

/// Tokens expiring sooner than this are refused (TOK-005).
pub const MIN_LIFETIME: Duration = Duration::from_secs(60);
/// The Instance Metadata Service's token endpoint.
pub const IMDS_ENDPOINT: &str = "http://169.254.169.254/metadata/identity/oauth2/token";
/// The IMDS API version requested.
pub const IMDS_API_VERSION: &str = "2018-02-01";
/// The App Service / Container Apps API version requested.
pub const APP_SERVICE_API_VERSION: &str = "2019-08-01";

const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// A projected service account token is about 1 KiB; anything this large is not one.
const MAX_TOKEN_FILE_BYTES: u64 = 64 * 1024;

/// Where a managed identity's tokens come from.
#[derive(Debug, Clone)]
pub enum ManagedIdentity {
    /// App Service, Functions, Container Apps (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`).
    AppService {
        endpoint: Url,
        header: Secret,
        /// A user-assigned identity; `None` for the system-assigned one.
        client_id: Option<String>,
    },
    /// The VM Instance Metadata Service.
    Imds {
        endpoint: Url,
        /// A user-assigned identity; `None` for the system-assigned one.
        client_id: Option<String>,
    },
    /// Workload identity federation (AKS).
    WorkloadIdentity {
        token_file: PathBuf,
        client_id: String,
        tenant_id: String,
        /// With a trailing slash (see [`azure::authority_host`]).
        authority_host: Url,
    },
}

impl ManagedIdentity {
    /// Picks the source like Azure's SDKs:
    /// 1. `AZURE_FEDERATED_TOKEN_FILE` set → workload identity, with `client_id` (the
    ///    configuration's `ManagedIdentityClientId`) or else `AZURE_CLIENT_ID`, `AZURE_TENANT_ID`,
    ///    and `AZURE_AUTHORITY_HOST` (default `https://login.microsoftonline.com/`);
    /// 2. `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` set → App Service / Container Apps;
    /// 3. else IMDS at `imds_override` or [`IMDS_ENDPOINT`].
    ///
    /// Empty variables count as unset. Errors: CFG-003 naming the variables a detected source
    /// lacks (`AZURE_CLIENT_ID`, `AZURE_TENANT_ID`, `IDENTITY_HEADER`); CFG-002 for values that
    /// are not URLs or tenants, and for the sources not supported (Azure Arc, Service Fabric).
    /// The token file is not read here: it is read on every [`fetch`](Self::fetch).
    pub fn detect(
        env: &dyn Fn(&str) -> Option<String>,
        client_id: Option<String>,
        imds_override: Option<Url>,
    ) -> Result<Self, Error> {
        let var = |name: &str| {
            env(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let client_id = client_id
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty());

        if let Some(token_file) = var("AZURE_FEDERATED_TOKEN_FILE") {
            let client_id = client_id.or_else(|| var("AZURE_CLIENT_ID"));
            let tenant_id = var("AZURE_TENANT_ID");
            let mut missing = Vec::new();
            if client_id.is_none() {
                missing.push("AZURE_CLIENT_ID (or ManagedIdentityClientId)");
            }
            if tenant_id.is_none() {
                missing.push("AZURE_TENANT_ID");
            }
            let (Some(client_id), Some(tenant_id)) = (client_id, tenant_id) else {
                return Err(Error::coded(
                    ErrorCode::Cfg003,
                    format!(
                        "workload identity (AZURE_FEDERATED_TOKEN_FILE is set) also needs {}, \
                         which {} not set",
                        missing.join(" and "),
                        if missing.len() > 1 { "are" } else { "is" }
                    ),
                ));
            };
            azure::validate_tenant(&tenant_id)?;
            let authority_host = azure::authority_host(var("AZURE_AUTHORITY_HOST").as_deref())?;
            return Ok(ManagedIdentity::WorkloadIdentity {
                token_file: PathBuf::from(token_file),
                client_id,
                tenant_id,
                authority_host,
            });
        }

        if let Some(endpoint) = var("IDENTITY_ENDPOINT") {
            if var("IDENTITY_SERVER_THUMBPRINT").is_some() {
                return Err(Error::coded(
                    ErrorCode::Cfg002,
                    "Service Fabric managed identity (IDENTITY_SERVER_THUMBPRINT is set) is not supported",
                ));
            }
            let Some(header) = var("IDENTITY_HEADER") else {
                if var("IMDS_ENDPOINT").is_some() {
                    return Err(Error::coded(
                        ErrorCode::Cfg002,
                        "Azure Arc managed identity (IDENTITY_ENDPOINT and IMDS_ENDPOINT are set) is not supported",
                    ));
                }
                return Err(Error::coded(
                    ErrorCode::Cfg003,
                    "IDENTITY_ENDPOINT is set but IDENTITY_HEADER is not: the App Service / \
                     Container Apps identity endpoint needs both",
                ));
            };
            if !header.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(Error::coded(
                    ErrorCode::Cfg002,
                    "IDENTITY_HEADER is not a valid header value (visible ASCII only)",
                ));
            }
            let endpoint = http_url(&endpoint).ok_or_else(|| {
                Error::coded(
                    ErrorCode::Cfg002,
                    format!("IDENTITY_ENDPOINT '{endpoint}' is not an http(s) URL"),
                )
            })?;
            return Ok(ManagedIdentity::AppService {
                endpoint,
                header: Secret::new(header),
                client_id,
            });
        }

        let endpoint = match imds_override {
            Some(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => url,
            Some(url) => {
                return Err(Error::coded(
                    ErrorCode::Cfg002,
                    format!("ImdsEndpoint '{url}' is not an http(s) URL"),
                ))
            }
            None => Url::parse(IMDS_ENDPOINT).expect("valid IMDS URL"),
        };
        Ok(ManagedIdentity::Imds {
            endpoint,
            client_id,
        })
    }

    /// `imds`, `appservice` or `workloadidentity` (for logs and status).
    pub fn kind(&self) -> &'static str {
        match self {
            ManagedIdentity::AppService { .. } => "appservice",
            ManagedIdentity::Imds { .. } => "imds",
            ManagedIdentity::WorkloadIdentity { .. } => "workloadidentity",
        }
    }

    /// The URL tokens are requested from (no secret in it), for logs and status.
    pub fn endpoint(&self) -> Url {
        match self {
            ManagedIdentity::AppService { endpoint, .. }
            | ManagedIdentity::Imds { endpoint, .. } => endpoint.clone(),
            ManagedIdentity::WorkloadIdentity {
                tenant_id,
                authority_host,
                ..
            } => azure::token_endpoint_at(authority_host, tenant_id)
                .unwrap_or_else(|_| authority_host.clone()),
        }
    }

    /// One token request (no retry). `scope` is e.g.
    /// `https://dicom.healthcareapis.azure.com/.default`: IMDS and App Service get it as
    /// `resource` without `/.default`, workload identity as `scope` unchanged.
    ///
    /// Errors: network failures, 5xx and 429 (and IMDS's 404/410) are retryable; refusals are
    /// classified like any token endpoint's (AUTH-001, AUTH-002, TOK-001); an answer that is not
    /// a token, or a token expiring in under [`MIN_LIFETIME`], is TOK-005; a federated token file
    /// that cannot be read or is empty is TOK-001 (not retryable).
    pub async fn fetch(
        &self,
        http: &reqwest::Client,
        scope: &str,
    ) -> Result<FetchedToken, FetchError> {
        match self {
            ManagedIdentity::Imds {
                endpoint,
                client_id,
            } => {
                let resource = resource_from_scope(scope).map_err(FetchError::fatal)?;
                let url = with_query(endpoint, IMDS_API_VERSION, &resource, client_id);
                let request = http.get(url).header("Metadata", "true");
                get_token(request, "IMDS", true).await
            }
            ManagedIdentity::AppService {
                endpoint,
                header,
                client_id,
            } => {
                let resource = resource_from_scope(scope).map_err(FetchError::fatal)?;
                let url = with_query(endpoint, APP_SERVICE_API_VERSION, &resource, client_id);
                let request = http.get(url).header("X-IDENTITY-HEADER", header.expose());
                get_token(request, "App Service identity endpoint", false).await
            }
            ManagedIdentity::WorkloadIdentity {
                token_file,
                client_id,
                tenant_id,
                authority_host,
            } => {
                let endpoint = azure::token_endpoint_at(authority_host, tenant_id)
                    .map_err(FetchError::fatal)?;
                let assertion = read_token_file(token_file).map_err(FetchError::fatal)?;
                // The serializer is not Send: build the body before any await.
                let body = {
                    let mut form = url::form_urlencoded::Serializer::new(String::new());
                    form.append_pair("grant_type", "client_credentials")
                        .append_pair("client_id", client_id);
                    if !scope.trim().is_empty() {
                        form.append_pair("scope", scope.trim());
                    }
                    form.append_pair("client_assertion_type", CLIENT_ASSERTION_TYPE)
                        .append_pair("client_assertion", assertion.expose());
                    Zeroizing::new(form.finish())
                };
                let request = http
                    .post(endpoint)
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(body.as_str().to_owned());
                let token = token_response::exchange(request).await?;
                check_lifetime(token, "Entra ID (workload identity)")
            }
        }
    }
}

/// The `resource` of a managed identity request: the one scope without `/.default` (as Azure's
/// SDKs convert it), e.g. `https://dicom.healthcareapis.azure.com`. CFG-001 when empty, CFG-002
/// for several scopes.
pub fn resource_from_scope(scope: &str) -> Result<String, Error> {
    let mut scopes = scope.split_whitespace();
    let Some(only) = scopes.next() else {
        return Err(Error::coded(
            ErrorCode::Cfg001,
            format!(
                "Scope is required for an Azure managed identity (e.g. {})",
                azure::DICOM_SCOPE
            ),
        ));
    };
    if scopes.next().is_some() {
        return Err(Error::coded(
            ErrorCode::Cfg002,
            "an Azure managed identity requests exactly one scope (one resource)",
        ));
    }
    let resource = only.strip_suffix("/.default").unwrap_or(only);
    if resource.is_empty() {
        return Err(Error::coded(
            ErrorCode::Cfg002,
            "Scope '/.default' names no resource",
        ));
    }
    Ok(resource.to_owned())
}

fn http_url(text: &str) -> Option<Url> {
    Url::parse(text)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
}

fn with_query(
    endpoint: &Url,
    api_version: &str,
    resource: &str,
    client_id: &Option<String>,
) -> Url {
    let mut url = endpoint.clone();
    {
        let mut query = url.query_pairs_mut();
        query
            .append_pair("api-version", api_version)
            .append_pair("resource", resource);
        if let Some(client_id) = client_id {
            query.append_pair("client_id", client_id);
        }
    }
    url
}

/// The federated token, re-read now (TOK-001 when missing, unreadable, empty or too large;
/// the message names the file, never its content).
fn read_token_file(path: &Path) -> Result<Secret, Error> {
    let failed = |why: String| {
        Error::coded(
            ErrorCode::Tok001,
            format!(
                "workload identity: the federated token file {} (AZURE_FEDERATED_TOKEN_FILE) {why}",
                path.display()
            ),
        )
    };
    let file =
        std::fs::File::open(path).map_err(|e| failed(format!("cannot be read ({})", e.kind())))?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_TOKEN_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| failed(format!("cannot be read ({})", e.kind())))?;
    if bytes.len() as u64 > MAX_TOKEN_FILE_BYTES {
        return Err(failed(
            "is larger than 64 KiB: not a service account token".into(),
        ));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| failed("is not text".into()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(failed("is empty".into()));
    }
    Ok(Secret::new(token))
}

/// Sends a managed identity endpoint request and reads its answer.
async fn get_token(
    request: reqwest::RequestBuilder,
    what: &str,
    imds: bool,
) -> Result<FetchedToken, FetchError> {
    let answer = token_response::send(
        request.header(reqwest::header::ACCEPT, "application/json"),
        what,
    )
    .await?;
    let (status, retry_after, body) = (answer.status, answer.retry_after, &answer.body);
    if imds && (status == 404 || status == 410) {
        return Err(FetchError::transient(
            Error::coded(
                ErrorCode::Auth003,
                format!("{what} unavailable (HTTP {status}: IMDS answers this while it is being updated)"),
            ),
            retry_after,
        ));
    }
    let mut token =
        token_response::interpret(status, body, retry_after).map_err(|e| name_source(e, what))?;
    if token.expires_in.is_none() {
        token.expires_in = expires_on(body, SystemTime::now());
    }
    check_lifetime(token, what)
}

/// Prefixes the message with the endpoint that answered (the generic text says "token endpoint").
fn name_source(mut error: FetchError, what: &str) -> FetchError {
    if let Error::Coded { message, .. } = &mut error.error {
        *message = format!("{what}: {message}");
    }
    error
}

/// The lifetime left according to `expires_on` (epoch seconds, a number or a string, as IMDS
/// and App Service 2019-08-01 write it); `None` when absent or not a number.
fn expires_on(body: &[u8], now: SystemTime) -> Option<Duration> {
    let json: Value = serde_json::from_slice(body).ok()?;
    let epoch = match json.get("expires_on")? {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    if !epoch.is_finite() || epoch < 0.0 {
        return None;
    }
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs_f64();
    Some(Duration::from_secs_f64((epoch - now).max(0.0)))
}

fn check_lifetime(token: FetchedToken, what: &str) -> Result<FetchedToken, FetchError> {
    match token.expires_in {
        Some(left) if left < MIN_LIFETIME => Err(FetchError::fatal(Error::coded(
            ErrorCode::Tok005,
            format!(
                "{what} returned a token that expires in {} s (under {} s); refused",
                left.as_secs(),
                MIN_LIFETIME.as_secs()
            ),
        ))),
        _ => Ok(token),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::credentials::fake_env as env;

    #[test]
    fn detection_order_follows_the_sdks() {
        let all = env(&[
            (
                "AZURE_FEDERATED_TOKEN_FILE",
                "/var/run/secrets/azure/tokens/azure-identity-token",
            ),
            ("AZURE_CLIENT_ID", "wi-client"),
            ("AZURE_TENANT_ID", "72f988bf-86f1-41af-91ab-2d7cd011db47"),
            ("IDENTITY_ENDPOINT", "http://localhost:42356/msi/token"),
            ("IDENTITY_HEADER", "h"),
        ]);
        let mi = ManagedIdentity::detect(&all, None, None).unwrap();
        let ManagedIdentity::WorkloadIdentity {
            client_id,
            authority_host,
            ..
        } = &mi
        else {
            panic!("{mi:?}")
        };
        assert_eq!(client_id, "wi-client");
        assert_eq!(authority_host.as_str(), azure::DEFAULT_AUTHORITY_HOST);
        assert_eq!(
            mi.endpoint().as_str(),
            "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token"
        );
        // The configured client id wins over AZURE_CLIENT_ID.
        let mi = ManagedIdentity::detect(&all, Some("configured".into()), None).unwrap();
        assert!(
            matches!(&mi, ManagedIdentity::WorkloadIdentity { client_id, .. } if client_id == "configured")
        );

        let app = env(&[
            ("IDENTITY_ENDPOINT", "http://localhost:42356/msi/token"),
            ("IDENTITY_HEADER", "h"),
        ]);
        let mi = ManagedIdentity::detect(&app, None, None).unwrap();
        assert_eq!(mi.kind(), "appservice");
        assert!(!format!("{mi:?}").contains("\"h\""));

        let none = env(&[
            ("IDENTITY_ENDPOINT", " "),
            ("AZURE_FEDERATED_TOKEN_FILE", ""),
        ]);
        let mi = ManagedIdentity::detect(&none, Some("uai".into()), None).unwrap();
        let ManagedIdentity::Imds {
            endpoint,
            client_id,
        } = &mi
        else {
            panic!("{mi:?}")
        };
        assert_eq!(endpoint.as_str(), IMDS_ENDPOINT);
        assert_eq!(client_id.as_deref(), Some("uai"));
    }

    #[test]
    fn incomplete_or_unsupported_environments_are_refused() {
        let e = ManagedIdentity::detect(&env(&[("AZURE_FEDERATED_TOKEN_FILE", "/f")]), None, None)
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::Cfg003);
        assert!(e.to_string().contains("AZURE_CLIENT_ID"), "{e}");
        assert!(e.to_string().contains("AZURE_TENANT_ID"), "{e}");
        let e = ManagedIdentity::detect(
            &env(&[
                ("AZURE_FEDERATED_TOKEN_FILE", "/f"),
                ("AZURE_CLIENT_ID", "c"),
                ("AZURE_TENANT_ID", "t"),
                ("AZURE_AUTHORITY_HOST", "http://login.example/"),
            ]),
            None,
            None,
        )
        .unwrap_err();
        assert_eq!(e.code(), ErrorCode::Cfg002);
        let e = ManagedIdentity::detect(&env(&[("IDENTITY_ENDPOINT", "http://x/msi")]), None, None)
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::Cfg003);
        assert!(e.to_string().contains("IDENTITY_HEADER"), "{e}");
        let e = ManagedIdentity::detect(
            &env(&[
                ("IDENTITY_ENDPOINT", "http://x/msi"),
                ("IMDS_ENDPOINT", "http://x"),
            ]),
            None,
            None,
        )
        .unwrap_err();
        assert_eq!(e.code(), ErrorCode::Cfg002);
        let e = ManagedIdentity::detect(
            &env(&[
                ("IDENTITY_ENDPOINT", "not a url"),
                ("IDENTITY_HEADER", "secret-h"),
            ]),
            None,
            None,
        )
        .unwrap_err();
        assert_eq!(e.code(), ErrorCode::Cfg002);
        assert!(!e.to_string().contains("secret-h"));
        let e = ManagedIdentity::detect(
            &env(&[]),
            None,
            Some(Url::parse("file:///etc/passwd").unwrap()),
        )
        .unwrap_err();
        assert_eq!(e.code(), ErrorCode::Cfg002);
    }

    #[test]
    fn resource_is_the_scope_without_default() {
        assert_eq!(
            resource_from_scope(azure::DICOM_SCOPE).unwrap(),
            "https://dicom.healthcareapis.azure.com"
        );
        assert_eq!(
            resource_from_scope("https://dicom.healthcareapis.azure.com").unwrap(),
            "https://dicom.healthcareapis.azure.com"
        );
        assert_eq!(
            resource_from_scope("  ").unwrap_err().code(),
            ErrorCode::Cfg001
        );
        assert_eq!(
            resource_from_scope("a/.default b/.default")
                .unwrap_err()
                .code(),
            ErrorCode::Cfg002
        );
        assert_eq!(
            resource_from_scope("/.default").unwrap_err().code(),
            ErrorCode::Cfg002
        );
    }

    #[test]
    fn expires_on_gives_the_lifetime_left() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            expires_on(br#"{"expires_on":"1700003600"}"#, now),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            expires_on(br#"{"expires_on":1700000030}"#, now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            expires_on(br#"{"expires_on":"1699990000"}"#, now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            expires_on(br#"{"expires_on":"09/14/2017 00:00:00 PM +00:00"}"#, now),
            None
        );
        assert_eq!(expires_on(b"{}", now), None);
    }

    #[test]
    fn short_tokens_are_tok005() {
        let token = |secs| FetchedToken {
            access_token: Secret::new("t"),
            expires_in: Some(Duration::from_secs(secs)),
        };
        let e = check_lifetime(token(59), "IMDS").unwrap_err();
        assert_eq!(e.error.code(), ErrorCode::Tok005);
        assert!(!e.retryable);
        assert!(check_lifetime(token(60), "IMDS").is_ok());
        let none = FetchedToken {
            access_token: Secret::new("t"),
            expires_in: None,
        };
        assert!(check_lifetime(none, "IMDS").is_ok());
    }
}
