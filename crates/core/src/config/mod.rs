//! The `DicomWebOAuth` section of the Orthanc configuration (SPEC 3.1).
//!
//! [`load`] takes Orthanc's whole configuration (as Orthanc hands it to the
//! plugin, JSON), substitutes `${VAR}`, migrates version 1.0 sections, checks
//! every key against the table in [`keys`] and returns a typed [`Config`], or
//! the first error with its SPEC 3.2 code, the server and the key path.
//! A configuration is either wholly valid or refused: nothing starts half-configured.

pub mod env;
pub mod files;
pub mod keys;
pub mod migrate;
mod reader;
pub mod schema;

use crate::credentials::{azure, google};
use crate::error::ErrorCode;
use crate::secret::Secret;
use reader::Reader;
use serde_json::{Map, Value};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

pub use migrate::Migration;

/// The name of the plugin's section in the Orthanc configuration.
pub const SECTION: &str = "DicomWebOAuth";

/// A configuration error: its code, the server it concerns and the key path.
///
/// `message` never contains a configured value that could be secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub code: ErrorCode,
    pub server: Option<String>,
    /// Full key path, e.g. `DicomWebOAuth.Servers.pacs.ClientSecret`.
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn at_path(code: ErrorCode, path: &str, message: impl Into<String>) -> Self {
        ConfigError {
            code,
            server: server_of_path(path),
            key: path.to_owned(),
            message: message.into(),
        }
    }
}

fn server_of_path(path: &str) -> Option<String> {
    let rest = path.strip_prefix(&format!("{SECTION}.Servers."))?;
    Some(rest.split(['.', '[']).next().unwrap_or(rest).to_owned())
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] ", self.code)?;
        if let Some(server) = &self.server {
            write!(f, "server '{server}': ")?;
        }
        write!(f, "{}: {}", self.key, self.message)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    Info,
    Warning,
    Error,
}

/// The identity provider family, resolved (never `auto` once loaded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderType {
    Generic,
    Azure,
    Google,
    Aws,
    Keycloak,
    AzureManagedIdentity,
}

impl ProviderType {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderType::Generic => "generic",
            ProviderType::Azure => "azure",
            ProviderType::Google => "google",
            ProviderType::Aws => "aws",
            ProviderType::Keycloak => "keycloak",
            ProviderType::AzureManagedIdentity => "azuremanagedidentity",
        }
    }

    /// What `auto` means for a token endpoint (SPEC 3.1).
    pub fn detect(token_endpoint: &Url) -> Self {
        let host = token_endpoint.host_str().unwrap_or("").to_ascii_lowercase();
        if host == "login.microsoftonline.com" {
            ProviderType::Azure
        } else if host == "oauth2.googleapis.com" {
            ProviderType::Google
        } else if host == "amazonaws.com" || host.ends_with(".amazonaws.com") {
            ProviderType::Aws
        } else if token_endpoint.path().contains("/realms/") {
            ProviderType::Keycloak
        } else {
            ProviderType::Generic
        }
    }

    /// Whether the provider authenticates with a client id and secret/key.
    pub fn uses_client_credentials(self) -> bool {
        matches!(
            self,
            ProviderType::Generic | ProviderType::Azure | ProviderType::Keycloak
        )
    }
}

/// Backoff between retries of a token request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RetryStrategy {
    Exponential { multiplier: f64 },
    Linear { increment: Duration },
    Fixed,
}

/// Retry and circuit breaker settings of one server.
#[derive(Debug, Clone, PartialEq)]
pub struct Resilience {
    pub circuit_breaker_enabled: bool,
    pub circuit_breaker_failure_threshold: u32,
    pub circuit_breaker_timeout: Duration,
    pub retry_max_attempts: u32,
    pub retry_strategy: RetryStrategy,
    pub retry_initial_delay: Duration,
    pub retry_max_delay: Duration,
}

/// How the client proves its identity at the token endpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientAuth {
    /// `client_id` and `client_secret` in the form body (the Python plugin's way).
    SecretPost(Secret),
    /// HTTP Basic with the client id and secret (RFC 6749 §2.3.1).
    SecretBasic(Secret),
    /// A signed JWT client assertion (RFC 7523 §2.2).
    PrivateKeyJwt(ClientAssertion),
    /// The provider needs no client credentials (managed identities, metadata servers).
    None,
}

/// The key and headers of a `private_key_jwt` client assertion.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientAssertion {
    /// PEM private key.
    pub key: Secret,
    /// `RS256` or `ES256`.
    pub algorithm: &'static str,
    pub key_id: Option<String>,
    pub x5t: Option<String>,
    /// `x5t#S256` (Entra certificate credentials).
    pub x5t_s256: Option<String>,
}

/// How to validate the access tokens a provider returns.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtValidation {
    /// PEM public key; `None` means the provider's JWKS (from discovery).
    pub public_key: Option<Secret>,
    pub audience: Option<String>,
    pub issuer: Option<String>,
    /// More accepted `iss` values (Entra's v1 and v2 forms).
    pub extra_issuers: Vec<String>,
    pub algorithms: Vec<&'static str>,
}

/// TLS trust for one server and its identity provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    /// `false` only when `VerifySSL: false` (warned at start-up).
    pub verify: bool,
    /// Extra CA bundle files trusted besides the system roots.
    pub ca_files: Vec<PathBuf>,
}

/// One protected DICOMweb server.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub name: String,
    pub url: Url,
    pub provider: ProviderType,
    pub token_endpoint: Option<Url>,
    pub issuer: Option<Url>,
    pub client_id: Option<String>,
    pub client_auth: ClientAuth,
    pub scope: String,
    pub audience: Option<String>,
    pub resource: Option<String>,
    pub tenant_id: Option<String>,
    pub refresh_buffer: Duration,
    pub tls: Tls,
    pub http_proxy: Option<String>,
    pub timeout: Option<Duration>,
    pub connect_timeout: Duration,
    /// `None` when validation is disabled or not configured.
    pub jwt_validation: Option<JwtValidation>,
    pub resilience: Resilience,
    /// Where a cloud provider's credentials come from (Google, Azure managed identity).
    pub cloud: CloudCredential,
    pub mode: Mode,
    /// Register in the DICOMweb plugin at start-up (`AutoRegister`).
    pub auto_register: bool,
    /// Options passed through to the DICOMweb plugin's server entry.
    pub dicomweb_options: Vec<(String, Value)>,
}

/// Credentials of providers that do not use OAuth2 client credentials.
#[derive(Debug, Clone, PartialEq)]
pub enum CloudCredential {
    None,
    /// A Google service-account key file (JWT-bearer grant).
    GoogleServiceAccount(PathBuf),
    /// The GCE/GKE metadata server.
    GoogleMetadataServer,
    /// Azure managed identity: App Service, IMDS or workload identity (from the environment).
    AzureManagedIdentity {
        client_id: Option<String>,
        imds_endpoint: Option<Url>,
    },
    /// AWS: every proxied request is signed (SigV4) with credentials from
    /// the configuration or the standard chain.
    Aws {
        region: String,
        service: String,
        access_key_id: Option<String>,
        secret_access_key: Option<Secret>,
        session_token: Option<Secret>,
    },
}

/// How the DICOMweb plugin gets this server's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Through the plugin's proxy route.
    Proxy,
    /// An `Authorization` header kept fresh in the DICOMweb plugin's server entry.
    Header,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CacheConfig {
    Memory,
    /// Tokens shared through Redis (issue 7).
    Redis {
        url: Secret,
        key_prefix: String,
        /// `CacheEncryptionKey` as written (checked at load): base64 of 32 bytes, or "none".
        encryption_key: Secret,
        timeout: Duration,
        /// `RedisCaFile`, for `rediss://`.
        ca_file: Option<PathBuf>,
    },
}

/// Settings of Orthanc itself that the plugin follows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OrthancSettings {
    /// Orthanc's `HttpPort` (where the proxy route is reached over loopback).
    pub http_port: u16,
    /// Orthanc's `SslEnabled`: its port then speaks HTTPS.
    pub ssl_enabled: bool,
    /// Whether Orthanc asks HTTP clients for credentials.
    pub authentication_enabled: bool,
    /// Orthanc's `RegisteredUsers`, in file order (passwords are secrets).
    pub registered_users: Vec<(String, Secret)>,
    /// Names of the servers the user defined in `DicomWeb.Servers`.
    pub dicomweb_servers: Vec<String>,
    /// `DicomWeb.ServersInDatabase`: servers registered at run time are stored in the database.
    pub dicomweb_servers_in_database: bool,
    /// Orthanc's `HttpProxy` (`host:port` or a URL), if set.
    pub http_proxy: Option<String>,
    /// Orthanc's `HttpTimeout` (default 60 s; 0 means none).
    pub http_timeout: Option<Duration>,
    /// Orthanc's `HttpsCACertificates` bundle, if set.
    pub https_ca_certificates: Option<PathBuf>,
}

/// The whole, validated plugin configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub log_level: LogLevel,
    pub log_file: Option<PathBuf>,
    pub log_file_max_bytes: u64,
    pub log_file_backups: u32,
    pub rate_limit_requests: u32,
    pub proxy_rate_limit_requests: u32,
    pub rate_limit_window: Duration,
    /// Who may call the proxy route (`ProxyAllowedClients`).
    pub proxy_allowed_clients: Vec<ClientRange>,
    /// `RegistrationUser`: which registered user auto-registered proxy entries use.
    pub registration_user: Option<String>,
    /// `ProxyListener`: auto-registered proxy entries use the plugin's loopback listener.
    pub proxy_listener: bool,
    pub cache: CacheConfig,
    pub servers: Vec<ServerConfig>,
    pub orthanc: OrthancSettings,
    /// What the v1 → v2 migration changed, if anything.
    pub migration: Migration,
    /// Non-fatal findings to log loudly at start-up (e.g. TLS verification off).
    pub warnings: Vec<String>,
}

impl ServerConfig {
    /// The SigV4 scope of an `aws` server (its requests are signed, not given a bearer token).
    pub fn sigv4(&self) -> Option<crate::proxy::forward::SigV4> {
        match &self.cloud {
            CloudCredential::Aws {
                region, service, ..
            } => Some(crate::proxy::forward::SigV4 {
                region: region.clone(),
                service: service.clone(),
            }),
            _ => None,
        }
    }
}

impl Config {
    pub fn server(&self, name: &str) -> Option<&ServerConfig> {
        self.servers.iter().find(|s| s.name == name)
    }

    /// Whether a client at `ip` (as Orthanc reports it) may use the proxy route.
    pub fn proxy_allowed(&self, ip: &str) -> bool {
        let Ok(ip) = ip.trim().parse::<IpAddr>() else {
            return false;
        };
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.proxy_allowed_clients.iter().any(|r| r.contains(ip))
    }
}

/// An address or CIDR range of `ProxyAllowedClients`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientRange {
    pub network: IpAddr,
    pub prefix: u8,
}

impl ClientRange {
    pub fn parse(text: &str) -> Option<Self> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().ok()?)),
            None => (text, None),
        };
        let network: IpAddr = addr.parse().ok()?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(ClientRange { network, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let (a, b, bits) = match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => (
                u128::from(u32::from(n)) << 96,
                u128::from(u32::from(i)) << 96,
                self.prefix,
            ),
            (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), self.prefix),
            _ => return false,
        };
        let mask = if bits == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(bits))
        };
        a & mask == b & mask
    }
}

/// Loads the plugin configuration from Orthanc's whole configuration.
///
/// Returns `Ok(None)` when there is no `DicomWebOAuth` section (the plugin
/// then stays idle). `env` looks environment variables up.
pub fn load(
    orthanc_config: &Value,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Config>, ConfigError> {
    load_with_raw_section(orthanc_config, None, env)
}

/// Like [`load`], but reads the section from `raw_section` (as written in the
/// file, before Orthanc's own `${VAR}` substitution; see [`files`]) when given.
pub fn load_with_raw_section(
    orthanc_config: &Value,
    raw_section: Option<Value>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Config>, ConfigError> {
    let Some(mut section) = raw_section.or_else(|| orthanc_config.get(SECTION).cloned()) else {
        return Ok(None);
    };
    let orthanc = orthanc_settings(orthanc_config);
    env::substitute(&mut section, SECTION, env)?;
    let Value::Object(mut section) = section else {
        return Err(ConfigError::at_path(
            ErrorCode::Cfg002,
            SECTION,
            "the section must be a JSON object",
        ));
    };
    let migration = migrate::migrate_to_v2(&mut section);
    parse_section(&section, orthanc, migration, env).map(Some)
}

fn orthanc_settings(config: &Value) -> OrthancSettings {
    let non_empty = |key: &str| {
        config
            .get(key)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let remote_access = config
        .get("RemoteAccessAllowed")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let dicomweb = config.get("DicomWeb");
    OrthancSettings {
        http_port: config
            .get("HttpPort")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(8042),
        ssl_enabled: config
            .get("SslEnabled")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        // Orthanc's default: authentication is on when remote access is.
        authentication_enabled: config
            .get("AuthenticationEnabled")
            .and_then(Value::as_bool)
            .unwrap_or(remote_access),
        registered_users: config
            .get("RegisteredUsers")
            .and_then(Value::as_object)
            .map(|users| {
                users
                    .iter()
                    .filter_map(|(name, pw)| Some((name.clone(), Secret::new(pw.as_str()?))))
                    .collect()
            })
            .unwrap_or_default(),
        dicomweb_servers: dicomweb
            .and_then(|d| d.get("Servers"))
            .and_then(Value::as_object)
            .map(|servers| servers.keys().cloned().collect())
            .unwrap_or_default(),
        dicomweb_servers_in_database: dicomweb
            .and_then(|d| d.get("ServersInDatabase"))
            .and_then(Value::as_bool)
            .unwrap_or(false),
        http_proxy: non_empty("HttpProxy"),
        http_timeout: match config.get("HttpTimeout").and_then(Value::as_u64) {
            Some(0) => None,
            Some(s) => Some(Duration::from_secs(s)),
            None => Some(Duration::from_secs(60)),
        },
        https_ca_certificates: non_empty("HttpsCACertificates").map(PathBuf::from),
    }
}

fn parse_section(
    section: &Map<String, Value>,
    orthanc: OrthancSettings,
    migration: Migration,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let r = Reader::new(section, keys::GLOBAL_KEYS, SECTION.to_owned(), None)?;
    r.enumerated("ConfigVersion")?;
    let log_level = match r.enumerated("LogLevel")? {
        "DEBUG" => LogLevel::Debug,
        "INFO" => LogLevel::Info,
        "WARNING" => LogLevel::Warning,
        _ => LogLevel::Error,
    };
    let mut warnings = Vec::new();
    let cache = match r.enumerated("CacheType")? {
        "redis" => {
            let url = r
                .opt_secret("RedisUrl")?
                .ok_or_else(|| r.missing("RedisUrl", " when CacheType is redis"))?;
            let scheme_ok = Url::parse(url.expose())
                .map(|u| matches!(u.scheme(), "redis" | "rediss"))
                .unwrap_or(false);
            if !scheme_ok {
                return Err(r.error(
                    ErrorCode::Cfg002,
                    "RedisUrl",
                    "must be a redis:// or rediss:// URL",
                ));
            }
            let encryption_key = r
                .opt_secret("CacheEncryptionKey")?
                .ok_or_else(|| {
                    r.missing(
                        "CacheEncryptionKey",
                        " when CacheType is redis (base64 of 32 bytes; \"none\" to store tokens in clear)",
                    )
                })?;
            let encrypted =
                crate::shared_cache::StoreConfig::parse_encryption_key(encryption_key.expose())
                    .map_err(|_| {
                        r.error(
                            ErrorCode::Cfg002,
                            "CacheEncryptionKey",
                            "must be the base64 encoding of 32 bytes, or \"none\"",
                        )
                    })?
                    .is_some();
            if !encrypted {
                warnings.push(
                    "CacheEncryptionKey is \"none\": tokens are stored in Redis IN CLEAR"
                        .to_owned(),
                );
            }
            CacheConfig::Redis {
                url,
                key_prefix: r.opt_str("RedisKeyPrefix")?.unwrap_or_default(),
                encryption_key,
                timeout: Duration::from_secs_f64(r.number("RedisTimeout")?),
                ca_file: match r.opt_nonempty("RedisCaFile")? {
                    Some(path) => Some(existing_file(&r, "RedisCaFile", &path)?),
                    None => None,
                },
            }
        }
        _ => CacheConfig::Memory,
    };
    let global_resilience = r.opt_object("ResilienceConfig")?;
    let servers_value = r
        .raw("Servers")
        .ok_or_else(|| r.missing("Servers", ": at least one server must be defined"))?;
    let Value::Object(servers_map) = servers_value else {
        return Err(r.error(
            ErrorCode::Cfg002,
            "Servers",
            "expected an object mapping server names to servers",
        ));
    };
    if servers_map.is_empty() {
        return Err(r.error(
            ErrorCode::Cfg001,
            "Servers",
            "at least one server must be defined",
        ));
    }
    let mut servers = Vec::with_capacity(servers_map.len());
    for (name, value) in servers_map {
        let path = format!("{SECTION}.Servers.{name}");
        if !valid_server_name(name) {
            return Err(ConfigError::at_path(
                ErrorCode::Cfg002,
                &path,
                "server names may use only letters, digits, '.', '_' and '-' (at most 64)",
            ));
        }
        let Value::Object(obj) = value else {
            return Err(ConfigError::at_path(
                ErrorCode::Cfg002,
                &path,
                "expected an object",
            ));
        };
        let server = Reader::new(obj, keys::SERVER_KEYS, path, Some(name))?;
        servers.push(parse_server(
            name,
            &server,
            global_resilience.as_ref(),
            &mut warnings,
            env,
        )?);
    }
    let mut proxy_allowed_clients = Vec::new();
    for text in r.str_or_list("ProxyAllowedClients")? {
        proxy_allowed_clients.push(ClientRange::parse(&text).ok_or_else(|| {
            r.error(
                ErrorCode::Cfg002,
                "ProxyAllowedClients",
                format!("'{text}' is not an IP address or CIDR range"),
            )
        })?);
    }
    let registration_user = r.opt_nonempty("RegistrationUser")?;
    check_registration(&r, &servers, &orthanc, registration_user.as_deref())?;
    Ok(Config {
        registration_user,
        proxy_listener: r.bool("ProxyListener")?,
        proxy_allowed_clients,
        log_level,
        log_file: r.opt_nonempty("LogFile")?.map(PathBuf::from),
        log_file_max_bytes: r.integer("LogFileMaxBytes")? as u64,
        log_file_backups: r.integer("LogFileBackups")? as u32,
        rate_limit_requests: r.integer("RateLimitRequests")? as u32,
        proxy_rate_limit_requests: r.integer("ProxyRateLimitRequests")? as u32,
        rate_limit_window: Duration::from_secs(r.integer("RateLimitWindowSeconds")? as u64),
        cache,
        servers,
        orthanc,
        migration,
        warnings,
    })
}

/// Start-up checks of auto-registration against Orthanc's own settings.
fn check_registration(
    r: &Reader<'_>,
    servers: &[ServerConfig],
    orthanc: &OrthancSettings,
    user: Option<&str>,
) -> Result<(), ConfigError> {
    for server in servers
        .iter()
        .filter(|s| s.auto_register && s.mode == Mode::Header)
    {
        if orthanc.dicomweb_servers_in_database {
            return Err(ConfigError::at_path(
                ErrorCode::Cfg002,
                &format!("{SECTION}.Servers.{}.Mode", server.name),
                "header mode would store tokens in the Orthanc database (DicomWeb.ServersInDatabase is true); use proxy mode",
            ));
        }
    }
    let needs_user = orthanc.authentication_enabled
        && servers.iter().any(|s| {
            s.auto_register && s.mode == Mode::Proxy && !orthanc.dicomweb_servers.contains(&s.name)
        });
    if let Some(user) = user {
        if !orthanc
            .registered_users
            .iter()
            .any(|(name, _)| name == user)
        {
            return Err(r.error(
                ErrorCode::Cfg002,
                "RegistrationUser",
                format!("'{user}' is not one of Orthanc's RegisteredUsers"),
            ));
        }
    } else if needs_user && orthanc.registered_users.is_empty() {
        return Err(r.error(
            ErrorCode::Cfg001,
            "RegistrationUser",
            "AuthenticationEnabled is on but RegisteredUsers is empty: auto-registered proxy-mode servers could not call back into Orthanc (add a user, or use Mode \"header\", or AutoRegister false)",
        ));
    }
    Ok(())
}

fn valid_server_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn parse_server(
    name: &str,
    r: &Reader<'_>,
    global_resilience: Option<&Reader<'_>>,
    warnings: &mut Vec<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ServerConfig, ConfigError> {
    let mut issuer = r.opt_http_url("Issuer")?;
    let tenant_id = r.opt_nonempty("TenantId")?;
    let mut token_endpoint = r.opt_http_url("TokenEndpoint")?;
    let provider = match r.enumerated("ProviderType")? {
        "generic" => ProviderType::Generic,
        "azure" => ProviderType::Azure,
        "google" => ProviderType::Google,
        "aws" => ProviderType::Aws,
        "keycloak" => ProviderType::Keycloak,
        "azuremanagedidentity" => ProviderType::AzureManagedIdentity,
        _ => match token_endpoint.as_ref().or(issuer.as_ref()) {
            Some(endpoint) => ProviderType::detect(endpoint),
            None if tenant_id.is_some() => ProviderType::Azure,
            None if r.contains("ServiceAccountFile") || r.contains("Project") => {
                ProviderType::Google
            }
            None => ProviderType::Generic,
        },
    };
    let url = match r.opt_http_url("Url")? {
        Some(url) => url,
        None if provider == ProviderType::Google && r.contains("Project") => {
            let part = |key: &str| -> Result<String, ConfigError> {
                r.opt_nonempty(key)?.ok_or_else(|| r.error(
                        ErrorCode::Cfg002,
                        key,
                        "ProviderType google without Url needs Project, Location, Dataset and DicomStore",
                    ))
            };
            google::healthcare_dicomweb_url(
                None,
                &part("Project")?,
                &part("Location")?,
                &part("Dataset")?,
                &part("DicomStore")?,
            )
            .map_err(|e| r.error(ErrorCode::Cfg002, "Project", e.message()))?
        }
        None => return Err(r.missing("Url", "")),
    };
    let mut scope = r.opt_str("Scope")?.unwrap_or_default().trim().to_owned();
    if scope.is_empty() {
        match provider {
            ProviderType::Google => scope = google::HEALTHCARE_SCOPE.to_owned(),
            ProviderType::Azure | ProviderType::AzureManagedIdentity => {
                scope = azure::DICOM_SCOPE.to_owned()
            }
            _ => {}
        }
    }
    if provider == ProviderType::Azure && token_endpoint.is_none() && issuer.is_none() {
        if let Some(tenant) = &tenant_id {
            token_endpoint = Some(
                azure_token_endpoint(tenant)
                    .map_err(|m| r.error(ErrorCode::Cfg002, "TenantId", m))?,
            );
        }
    }

    let client_id = r.opt_nonempty("ClientId")?;
    let client_secret = r.opt_secret("ClientSecret")?;
    let client_auth = if provider.uses_client_credentials() {
        if token_endpoint.is_none() && issuer.is_none() {
            let hint = if provider == ProviderType::Azure {
                " (or Issuer, or TenantId)"
            } else {
                " (or Issuer for OIDC discovery)"
            };
            return Err(r.missing("TokenEndpoint", hint));
        }
        if client_id.is_none() {
            return Err(r.missing("ClientId", ""));
        }
        match r.opt_nonempty("ClientCertificate")? {
            Some(path) if provider == ProviderType::Azure => {
                let cert = azure::CertificateCredential::from_file(Path::new(&path))
                    .map_err(|e| r.error(ErrorCode::Cfg002, "ClientCertificate", e.message()))?;
                ClientAuth::PrivateKeyJwt(ClientAssertion {
                    key: cert.key_pem,
                    algorithm: cert.algorithm,
                    key_id: None,
                    x5t: Some(cert.x5t),
                    x5t_s256: Some(cert.x5t_s256),
                })
            }
            Some(_) => {
                return Err(r.error(
                    ErrorCode::Cfg002,
                    "ClientCertificate",
                    "only used with ProviderType azure (use ClientAssertionKeyFile for private_key_jwt elsewhere)",
                ))
            }
            None => parse_client_auth(r, client_secret)?,
        }
    } else {
        ClientAuth::None
    };
    let cloud = match provider {
        ProviderType::Google => match r
            .opt_nonempty("ServiceAccountFile")?
            .map(PathBuf::from)
            .or_else(|| google::default_credentials_file(env))
        {
            Some(file) => CloudCredential::GoogleServiceAccount(file),
            None => CloudCredential::GoogleMetadataServer,
        },
        ProviderType::AzureManagedIdentity => CloudCredential::AzureManagedIdentity {
            client_id: r.opt_nonempty("ManagedIdentityClientId")?,
            imds_endpoint: r.opt_http_url("ImdsEndpoint")?,
        },
        ProviderType::Aws => {
            let region = r.opt_nonempty("Region")?.ok_or_else(|| {
                r.error(ErrorCode::Cfg002, "Region", "ProviderType aws needs Region")
            })?;
            if !region
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
            {
                return Err(r.error(ErrorCode::Cfg002, "Region", "not an AWS region name"));
            }
            let access_key_id = r.opt_nonempty("AccessKeyId")?;
            let secret_access_key = r.opt_secret("SecretAccessKey")?;
            if access_key_id.is_some() != secret_access_key.is_some() {
                let missing = if access_key_id.is_some() {
                    "SecretAccessKey"
                } else {
                    "AccessKeyId"
                };
                return Err(r.error(
                    ErrorCode::Cfg002,
                    missing,
                    "ProviderType aws needs AccessKeyId and SecretAccessKey together (or neither: the standard chain)",
                ));
            }
            if r.enumerated("Mode")? == "header" {
                return Err(r.error(
                    ErrorCode::Cfg002,
                    "Mode",
                    "header mode cannot sign requests (SigV4 signs each request): use proxy mode with ProviderType aws",
                ));
            }
            CloudCredential::Aws {
                region,
                service: r
                    .opt_nonempty("AwsService")?
                    .unwrap_or_else(|| "medical-imaging".to_owned()),
                access_key_id,
                secret_access_key,
                session_token: r.opt_secret("SessionToken")?,
            }
        }
        _ => CloudCredential::None,
    };

    let tls = parse_tls(r, warnings, name)?;
    let mut jwt_validation = parse_jwt_validation(r, issuer.is_some())?;
    if provider == ProviderType::Azure
        && jwt_validation.is_none()
        && !r.bool("DisableJWTValidation")?
    {
        jwt_validation = azure_validation(name, tenant_id.as_deref(), &scope, warnings);
        if jwt_validation.is_some() && issuer.is_none() {
            // The tenant's JWKS comes from discovery of its v2 issuer.
            issuer = tenant_id
                .as_deref()
                .and_then(|t| Url::parse(&azure::issuer(t)).ok());
        }
    }

    let mut resilience_readers: Vec<&Reader<'_>> = Vec::new();
    let own = r.opt_object("ResilienceConfig")?;
    if let Some(own) = own.as_ref() {
        resilience_readers.push(own);
    }
    if let Some(global) = global_resilience {
        resilience_readers.push(global);
    }

    Ok(ServerConfig {
        name: name.to_owned(),
        url,
        provider,
        token_endpoint,
        issuer,
        client_id,
        client_auth,
        scope,
        cloud,
        audience: r.opt_nonempty("Audience")?,
        resource: r.opt_nonempty("Resource")?,
        tenant_id,
        refresh_buffer: Duration::from_secs(r.integer("TokenRefreshBufferSeconds")? as u64),
        tls,
        http_proxy: r.opt_nonempty("HttpProxy")?,
        timeout: r.opt_number("Timeout")?.map(Duration::from_secs_f64),
        connect_timeout: Duration::from_secs_f64(r.number("ConnectTimeout")?),
        jwt_validation,
        resilience: parse_resilience(&resilience_readers)?,
        mode: match r.enumerated("Mode")? {
            "header" => Mode::Header,
            _ => Mode::Proxy,
        },
        auto_register: r.bool("AutoRegister")?,
        dicomweb_options: dicomweb_options(r)?,
    })
}

/// Entra ID tokens are validated by default: signature by the tenant's JWKS,
/// issuer as Entra writes it (v2 or v1 form), audience = the scope without `/.default`.
fn azure_validation(
    name: &str,
    tenant: Option<&str>,
    scope: &str,
    warnings: &mut Vec<String>,
) -> Option<JwtValidation> {
    let Some(issuers) = tenant.and_then(azure::accepted_issuers) else {
        warnings.push(format!(
            "server '{name}': TenantId is not a GUID, so Entra tokens cannot be checked against their issuer; \
             JWT validation is off (set TenantId to the tenant's GUID, or DisableJWTValidation to silence this)"
        ));
        return None;
    };
    let audience = azure::audience_from_scope(scope);
    if audience.is_none() {
        warnings.push(format!(
            "server '{name}': no audience can be derived from Scope '{scope}': tokens are validated without an audience check (set JWTAudience)"
        ));
    }
    Some(JwtValidation {
        public_key: None,
        audience,
        issuer: None,
        extra_issuers: issuers,
        algorithms: vec!["RS256"],
    })
}

/// The entry keys passed through to the DICOMweb plugin as given.
fn dicomweb_options(r: &Reader<'_>) -> Result<Vec<(String, Value)>, ConfigError> {
    let mut options = Vec::new();
    for key in ["HasDelete", "ChunkedTransfers"] {
        if r.contains(key) {
            options.push((key.to_owned(), Value::Bool(r.bool(key)?)));
        }
    }
    if let Some(timeout) = r.opt_number("Timeout")? {
        options.push(("Timeout".to_owned(), Value::from(timeout.ceil() as u64)));
    }
    Ok(options)
}

fn azure_token_endpoint(tenant: &str) -> Result<Url, String> {
    if !tenant
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
    {
        return Err("a tenant id is a GUID or a domain name".into());
    }
    Url::parse(&format!(
        "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"
    ))
    .map_err(|e| e.to_string())
}

fn parse_client_auth(r: &Reader<'_>, secret: Option<Secret>) -> Result<ClientAuth, ConfigError> {
    let method = r.enumerated("ClientAuthMethod")?;
    if method == "private_key_jwt" {
        let inline = r.opt_secret("ClientAssertionKey")?;
        let file = r.opt_nonempty("ClientAssertionKeyFile")?;
        let key = match (inline, file) {
            (Some(_), Some(_)) => {
                return Err(r.error(
                    ErrorCode::Cfg002,
                    "ClientAssertionKeyFile",
                    "give either ClientAssertionKey or ClientAssertionKeyFile, not both",
                ))
            }
            (Some(key), None) => key,
            (None, Some(path)) => Secret::new(std::fs::read_to_string(&path).map_err(|e| {
                r.error(
                    ErrorCode::Cfg002,
                    "ClientAssertionKeyFile",
                    format!("cannot read {path}: {}", e.kind()),
                )
            })?),
            (None, None) => {
                return Err(r.missing(
                    "ClientAssertionKey",
                    " (or ClientAssertionKeyFile) for private_key_jwt",
                ))
            }
        };
        if !key.expose().contains("-----BEGIN") || !key.expose().contains("PRIVATE KEY-----") {
            return Err(r.error(
                ErrorCode::Cfg002,
                "ClientAssertionKey",
                "expected a PEM private key",
            ));
        }
        return Ok(ClientAuth::PrivateKeyJwt(ClientAssertion {
            key,
            algorithm: r.enumerated("ClientAssertionAlgorithm")?,
            key_id: r.opt_nonempty("ClientAssertionKeyId")?,
            x5t: r.opt_nonempty("ClientAssertionX5t")?,
            x5t_s256: None,
        }));
    }
    let secret = secret.ok_or_else(|| r.missing("ClientSecret", ""))?;
    Ok(match method {
        "client_secret_basic" => ClientAuth::SecretBasic(secret),
        _ => ClientAuth::SecretPost(secret),
    })
}

fn parse_tls(r: &Reader<'_>, warnings: &mut Vec<String>, name: &str) -> Result<Tls, ConfigError> {
    let mut tls = Tls {
        verify: true,
        ca_files: Vec::new(),
    };
    match r.raw("VerifySSL") {
        None | Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => {
            tls.verify = false;
            warnings.push(format!(
                "TLS CERTIFICATE VERIFICATION IS DISABLED for server '{name}' (VerifySSL: false): \
                 tokens and studies can be intercepted; use a CA bundle instead"
            ));
        }
        Some(Value::String(path)) => tls.ca_files.push(existing_file(r, "VerifySSL", path)?),
        Some(_) => {
            return Err(r.error(
                ErrorCode::Cfg002,
                "VerifySSL",
                "expected true, false or the path of a CA bundle file",
            ))
        }
    }
    if let Some(path) = r.opt_nonempty("CaBundle")? {
        tls.ca_files.push(existing_file(r, "CaBundle", &path)?);
    }
    Ok(tls)
}

fn existing_file(r: &Reader<'_>, key: &str, path: &str) -> Result<PathBuf, ConfigError> {
    let p = Path::new(path);
    if p.is_file() {
        Ok(p.to_path_buf())
    } else {
        Err(r.error(ErrorCode::Cfg002, key, format!("file not found: {path}")))
    }
}

fn parse_jwt_validation(
    r: &Reader<'_>,
    has_issuer: bool,
) -> Result<Option<JwtValidation>, ConfigError> {
    let public_key = r.opt_secret("JWTPublicKey")?;
    if let Some(key) = &public_key {
        if !key.expose().contains("-----BEGIN") {
            return Err(r.error(
                ErrorCode::Cfg002,
                "JWTPublicKey",
                "expected a PEM public key",
            ));
        }
    }
    let audience = r.opt_nonempty("JWTAudience")?;
    let issuer = r.opt_nonempty("JWTIssuer")?;
    let mut algorithms = Vec::new();
    for alg in r.str_or_list("JWTAlgorithms")? {
        let known = keys::JWT_ALGORITHMS
            .iter()
            .find(|a| a.eq_ignore_ascii_case(&alg))
            .copied();
        match known {
            Some(a) => algorithms.push(a),
            None => {
                return Err(r.error(
                    ErrorCode::Cfg002,
                    "JWTAlgorithms",
                    format!(
                        "'{alg}' is not allowed (none and HMAC never are); use: {}",
                        keys::JWT_ALGORITHMS.join(", ")
                    ),
                ))
            }
        }
    }
    if algorithms.is_empty() {
        return Err(r.error(
            ErrorCode::Cfg002,
            "JWTAlgorithms",
            "must name at least one algorithm",
        ));
    }
    let requested = public_key.is_some() || audience.is_some() || issuer.is_some();
    if r.bool("DisableJWTValidation")? || !requested {
        return Ok(None);
    }
    if public_key.is_none() && !has_issuer {
        return Err(r.missing(
            "JWTPublicKey",
            " (or Issuer, whose JWKS is then used) to validate tokens; or set DisableJWTValidation",
        ));
    }
    Ok(Some(JwtValidation {
        public_key,
        audience,
        issuer,
        extra_issuers: Vec::new(),
        algorithms,
    }))
}

/// Reads ResilienceConfig keys from the first reader that has each key
/// (server, then global), else the table default.
fn parse_resilience(readers: &[&Reader<'_>]) -> Result<Resilience, ConfigError> {
    let pick = |name: &str| readers.iter().copied().find(|r| r.contains(name));
    let fallback = Reader::new(
        &EMPTY,
        keys::RESILIENCE_KEYS,
        format!("{SECTION}.ResilienceConfig"),
        None,
    )?;
    let from = |name: &str| pick(name).unwrap_or(&fallback);
    let secs = |name: &str| -> Result<Duration, ConfigError> {
        Ok(Duration::from_secs_f64(from(name).number(name)?))
    };
    let strategy = match from("RetryStrategy").enumerated("RetryStrategy")? {
        "linear" => RetryStrategy::Linear {
            increment: secs("RetryIncrement")?,
        },
        "fixed" => RetryStrategy::Fixed,
        _ => RetryStrategy::Exponential {
            multiplier: from("RetryMultiplier").number("RetryMultiplier")?,
        },
    };
    Ok(Resilience {
        circuit_breaker_enabled: from("CircuitBreakerEnabled").bool("CircuitBreakerEnabled")?,
        circuit_breaker_failure_threshold: from("CircuitBreakerFailureThreshold")
            .integer("CircuitBreakerFailureThreshold")?
            as u32,
        circuit_breaker_timeout: secs("CircuitBreakerTimeout")?,
        retry_max_attempts: from("RetryMaxAttempts").integer("RetryMaxAttempts")? as u32,
        retry_strategy: strategy,
        retry_initial_delay: secs("RetryInitialDelay")?,
        retry_max_delay: secs("RetryMaxDelay")?,
    })
}

static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

#[cfg(test)]
mod tests;
