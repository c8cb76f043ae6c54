//! The table of every configuration key: name, type, default, range and doc.
//!
//! One table drives three things, so they cannot drift apart: unknown-key
//! detection (with "did you mean"), the typed readers' range checks and
//! defaults, and the JSON Schema shipped in `schemas/`.

/// The JSON shape a key accepts.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Any string (after `${VAR}` substitution).
    Str,
    /// An absolute `http`/`https` URL.
    HttpUrl,
    /// One of a fixed set of strings (compared case-insensitively).
    Enum(&'static [&'static str]),
    Bool,
    Integer {
        min: i64,
        max: i64,
    },
    Number {
        min: f64,
        max: f64,
    },
    /// A string or a list of strings (`JWTAlgorithms`).
    StrOrList,
    /// `true`/`false`, or a string naming a CA bundle file (`VerifySSL`).
    BoolOrPath,
    /// A nested object described by its own table.
    Object(&'static [KeySpec]),
    /// `Servers`: server name → server object.
    ServerMap,
}

/// A default value, as written in the schema and used by the readers.
#[derive(Debug, Clone, Copy)]
pub enum Default {
    None,
    Str(&'static str),
    Bool(bool),
    Integer(i64),
    Number(f64),
}

/// One configuration key.
#[derive(Debug, Clone, Copy)]
pub struct KeySpec {
    pub name: &'static str,
    pub kind: Kind,
    pub default: Default,
    /// Whether its value is a secret (kept in [`crate::secret::Secret`], never echoed in errors).
    pub secret: bool,
    /// Not in the Python plugin: added by this product (documented as such).
    pub added: bool,
    pub doc: &'static str,
}

const fn key(name: &'static str, kind: Kind, default: Default, doc: &'static str) -> KeySpec {
    KeySpec {
        name,
        kind,
        default,
        secret: false,
        added: false,
        doc,
    }
}

const fn secret(mut spec: KeySpec) -> KeySpec {
    spec.secret = true;
    spec
}

const fn added(mut spec: KeySpec) -> KeySpec {
    spec.added = true;
    spec
}

pub const PROVIDER_TYPES: &[&str] = &[
    "auto",
    "generic",
    "azure",
    "google",
    "aws",
    "keycloak",
    "azuremanagedidentity",
];
pub const MODES: &[&str] = &["proxy", "header"];
pub const LOG_LEVELS: &[&str] = &["DEBUG", "INFO", "WARNING", "ERROR"];
pub const CACHE_TYPES: &[&str] = &["memory", "redis"];
pub const RETRY_STRATEGIES: &[&str] = &["exponential", "linear", "fixed"];
pub const CLIENT_AUTH_METHODS: &[&str] = &[
    "client_secret_post",
    "client_secret_basic",
    "private_key_jwt",
];
pub const CLIENT_ASSERTION_ALGORITHMS: &[&str] = &["RS256", "ES256"];
/// Signature algorithms accepted in `JWTAlgorithms`: asymmetric only, so a
/// public key can never be used as an HMAC secret, and never `none`.
pub const JWT_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

pub const RESILIENCE_KEYS: &[KeySpec] = &[
    key("CircuitBreakerEnabled", Kind::Bool, Default::Bool(false),
        "Open a circuit breaker after repeated token endpoint failures, failing fast with AUTH-003."),
    key("CircuitBreakerFailureThreshold", Kind::Integer { min: 1, max: 1000 }, Default::Integer(5),
        "Consecutive failures that open the circuit."),
    key("CircuitBreakerTimeout", Kind::Number { min: 0.1, max: 3600.0 }, Default::Number(60.0),
        "Seconds the circuit stays open before one trial request (half-open)."),
    key("RetryMaxAttempts", Kind::Integer { min: 1, max: 10 }, Default::Integer(3),
        "Attempts per token request, the first included; retried only on network errors, 5xx and 429."),
    key("RetryStrategy", Kind::Enum(RETRY_STRATEGIES), Default::Str("exponential"),
        "Backoff between attempts."),
    key("RetryInitialDelay", Kind::Number { min: 0.0, max: 60.0 }, Default::Number(1.0),
        "Seconds before the first retry."),
    key("RetryMultiplier", Kind::Number { min: 1.0, max: 10.0 }, Default::Number(2.0),
        "Growth factor of the exponential strategy."),
    key("RetryMaxDelay", Kind::Number { min: 0.0, max: 300.0 }, Default::Number(30.0),
        "Upper bound of any single delay, in seconds."),
    key("RetryIncrement", Kind::Number { min: 0.0, max: 60.0 }, Default::Number(1.0),
        "Seconds added per attempt by the linear strategy."),
];

pub const SERVER_KEYS: &[KeySpec] = &[
    key("Url", Kind::HttpUrl, Default::None,
        "Base URL of the remote DICOMweb server (required)."),
    key("TokenEndpoint", Kind::HttpUrl, Default::None,
        "OAuth2 token endpoint. Required unless Issuer (OIDC discovery) or the provider gives it."),
    key("ClientId", Kind::Str, Default::None, "OAuth2 client id."),
    secret(key("ClientSecret", Kind::Str, Default::None,
        "OAuth2 client secret; use ${VAR} to keep it out of the file.")),
    key("Scope", Kind::Str, Default::Str(""), "Space-separated scopes requested."),
    key("TokenRefreshBufferSeconds", Kind::Integer { min: 0, max: 3600 }, Default::Integer(300),
        "Refresh the token this many seconds before it expires."),
    key("ProviderType", Kind::Enum(PROVIDER_TYPES), Default::Str("auto"),
        "Identity provider; auto detects it from the token endpoint host."),
    key("VerifySSL", Kind::BoolOrPath, Default::Bool(true),
        "Verify TLS certificates: true, false (insecure, warned at start-up) or the path of a CA bundle file."),
    key("TenantId", Kind::Str, Default::None, "Entra ID tenant (azure)."),
    key("DisableJWTValidation", Kind::Bool, Default::Bool(false),
        "Skip validation of JWT access tokens."),
    secret(key("JWTPublicKey", Kind::Str, Default::None,
        "PEM public key that signs the access tokens; else the provider's JWKS is used when validating.")),
    key("JWTAudience", Kind::Str, Default::None, "Expected `aud` of access tokens."),
    key("JWTIssuer", Kind::Str, Default::None, "Expected `iss` of access tokens."),
    key("JWTAlgorithms", Kind::StrOrList, Default::Str("RS256"),
        "Accepted signature algorithms (asymmetric only)."),
    key("ResilienceConfig", Kind::Object(RESILIENCE_KEYS), Default::None,
        "Retry and circuit breaker settings; keys not given come from the global ResilienceConfig."),
    added(key("Issuer", Kind::HttpUrl, Default::None,
        "OIDC issuer: the token endpoint and JWKS come from its /.well-known/openid-configuration.")),
    added(key("ClientAuthMethod", Kind::Enum(CLIENT_AUTH_METHODS), Default::Str("client_secret_post"),
        "How the client authenticates at the token endpoint.")),
    added(key("Audience", Kind::Str, Default::None,
        "`audience` form parameter of the token request (Auth0).")),
    added(key("Resource", Kind::Str, Default::None,
        "`resource` form parameter of the token request (Entra v1, RFC 8707).")),
    added(secret(key("ClientAssertionKey", Kind::Str, Default::None,
        "PEM private key signing the private_key_jwt client assertion."))),
    added(key("ClientAssertionKeyFile", Kind::Str, Default::None,
        "File holding the PEM private key for private_key_jwt (instead of ClientAssertionKey).")),
    added(key("ClientAssertionAlgorithm", Kind::Enum(CLIENT_ASSERTION_ALGORITHMS), Default::Str("RS256"),
        "Signature algorithm of the client assertion.")),
    added(key("ClientAssertionKeyId", Kind::Str, Default::None,
        "`kid` header of the client assertion.")),
    added(key("ClientAssertionX5t", Kind::Str, Default::None,
        "`x5t` header (base64url SHA-1 certificate thumbprint) of the client assertion.")),
    added(key("CaBundle", Kind::Str, Default::None,
        "PEM file of extra CA certificates trusted for this server and its identity provider.")),
    added(key("HttpProxy", Kind::Str, Default::None,
        "Forward proxy for this server's traffic; overrides Orthanc's HttpProxy and HTTPS_PROXY.")),
    added(key("Timeout", Kind::Number { min: 0.1, max: 3600.0 }, Default::None,
        "Total timeout of one outbound request, in seconds (default: Orthanc's HttpTimeout).")),
    added(key("ConnectTimeout", Kind::Number { min: 0.1, max: 600.0 }, Default::Number(10.0),
        "Connect timeout of outbound requests, in seconds.")),
    added(key(
        "Mode",
        Kind::Enum(MODES),
        Default::Str("proxy"),
        "proxy: the DICOMweb plugin reaches the server through the plugin's /oauth-dicom-web/ route; header: the plugin keeps the DICOMweb plugin's server entry updated with a fresh Authorization header (no extra hop, no 401 retry).",
    )),
    added(key(
        "AutoRegister",
        Kind::Bool,
        Default::Bool(true),
        "Register this server in the DICOMweb plugin (/dicom-web/servers) at start-up, unless DicomWeb.Servers already defines the name.",
    )),
    added(key(
        "HasDelete",
        Kind::Bool,
        Default::None,
        "Passed to the DICOMweb plugin's server entry (allows DELETE).",
    )),
    added(key(
        "ChunkedTransfers",
        Kind::Bool,
        Default::None,
        "Passed to the DICOMweb plugin's server entry.",
    )),
    added(key(
        "ServiceAccountFile",
        Kind::Str,
        Default::None,
        "google: the service-account JSON key file (else GOOGLE_APPLICATION_CREDENTIALS, else the metadata server).",
    )),
    added(key("Project", Kind::Str, Default::None, "google: Healthcare API project (with Location, Dataset, DicomStore instead of Url).")),
    added(key("Location", Kind::Str, Default::None, "google: Healthcare API location, e.g. europe-west4.")),
    added(key("Dataset", Kind::Str, Default::None, "google: Healthcare API dataset.")),
    added(key("DicomStore", Kind::Str, Default::None, "google: Healthcare API DICOM store.")),
    added(key(
        "ClientCertificate",
        Kind::Str,
        Default::None,
        "azure: PEM file with the client certificate and its private key (Entra certificate credential, instead of ClientSecret).",
    )),
    added(key(
        "ManagedIdentityClientId",
        Kind::Str,
        Default::None,
        "azuremanagedidentity: client id of a user-assigned identity (default: the system-assigned one).",
    )),
    added(key(
        "ImdsEndpoint",
        Kind::HttpUrl,
        Default::None,
        "azuremanagedidentity: the instance metadata token endpoint (default http://169.254.169.254/metadata/identity/oauth2/token).",
    )),
    added(key(
        "Region",
        Kind::Str,
        Default::None,
        "aws: the AWS region of the HealthImaging data store, e.g. us-east-1 (required).",
    )),
    added(key(
        "AwsService",
        Kind::Str,
        Default::Str("medical-imaging"),
        "aws: the SigV4 service name.",
    )),
    added(key(
        "AccessKeyId",
        Kind::Str,
        Default::None,
        "aws: static access key id (else the standard chain: environment, web identity, ECS, EC2 instance metadata).",
    )),
    added(secret(key(
        "SecretAccessKey",
        Kind::Str,
        Default::None,
        "aws: static secret access key (with AccessKeyId; use ${VAR}).",
    ))),
    added(secret(key(
        "SessionToken",
        Kind::Str,
        Default::None,
        "aws: session token of temporary static credentials.",
    ))),
];

pub const GLOBAL_KEYS: &[KeySpec] = &[
    key(
        "ConfigVersion",
        Kind::Enum(&["1.0", "2.0"]),
        Default::Str("2.0"),
        "Configuration format version; a file without it is 1.0 and is migrated.",
    ),
    key(
        "LogLevel",
        Kind::Enum(LOG_LEVELS),
        Default::Str("INFO"),
        "Plugin log level.",
    ),
    added(key(
        "LogFileMaxBytes",
        Kind::Integer { min: 4096, max: 1 << 40 },
        Default::Integer(10 << 20),
        "Size at which LogFile is rotated (LogFile → LogFile.1 → …).",
    )),
    added(key(
        "LogFileBackups",
        Kind::Integer { min: 0, max: 100 },
        Default::Integer(5),
        "Rotated log files kept.",
    )),
    added(key(
        "ProxyRateLimitRequests",
        Kind::Integer { min: 0, max: 1_000_000 },
        Default::Integer(0),
        "Requests per client per RateLimitWindowSeconds on the proxy route; 0 (default) disables it, since the DICOMweb plugin is its only caller.",
    )),
    key(
        "LogFile",
        Kind::Str,
        Default::None,
        "Also write the plugin's log lines to this file.",
    ),
    key(
        "RateLimitRequests",
        Kind::Integer {
            min: 0,
            max: 1_000_000,
        },
        Default::Integer(0),
        "Requests per client per window on the plugin's own routes; 0 disables the limit.",
    ),
    key(
        "RateLimitWindowSeconds",
        Kind::Integer {
            min: 1,
            max: 86_400,
        },
        Default::Integer(60),
        "Length of the rate limit window.",
    ),
    key(
        "CacheType",
        Kind::Enum(CACHE_TYPES),
        Default::Str("memory"),
        "Where tokens are cached: in memory, or shared through Redis.",
    ),
    secret(key(
        "RedisUrl",
        Kind::Str,
        Default::None,
        "redis:// or rediss:// URL; required when CacheType is redis.",
    )),
    added(key(
        "RedisKeyPrefix",
        Kind::Str,
        Default::Str("orthanc:dicomweb-oauth:"),
        "Prefix of the Redis keys the plugin uses.",
    )),
    added(secret(key(
        "CacheEncryptionKey",
        Kind::Str,
        Default::None,
        "Base64 of 32 random bytes (e.g. openssl rand -base64 32, usually given as ${VAR}): tokens in Redis are encrypted and authenticated with it (AES-256-GCM). Required with CacheType redis; \"none\" stores them in clear (warned).",
    ))),
    added(key(
        "RedisCaFile",
        Kind::Str,
        Default::None,
        "For rediss://: a PEM file of the CA certificates to trust instead of the system's.",
    )),
    added(key(
        "RedisTimeout",
        Kind::Number { min: 0.01, max: 10.0 },
        Default::Number(0.25),
        "Longest wait for one Redis operation, in seconds; past it the plugin uses its own cache and token requests.",
    )),
    key(
        "ResilienceConfig",
        Kind::Object(RESILIENCE_KEYS),
        Default::None,
        "Default retry and circuit breaker settings of every server.",
    ),
    added(key(
        "ProxyAllowedClients",
        Kind::StrOrList,
        Default::Str("127.0.0.1 ::1"),
        "Client addresses (IPs or CIDR ranges) allowed on the proxy route /oauth-dicom-web/; others get 403. The DICOMweb plugin calls it over loopback.",
    )),
    added(key(
        "ProxyListener",
        Kind::Bool,
        Default::Bool(true),
        "Auto-registered proxy-mode entries reach the proxy through the plugin's own listener on 127.0.0.1 (an ephemeral port, with a key generated at start-up) instead of Orthanc's HTTP server, which reads chunked bodies at a high CPU cost. false: they use Orthanc's /oauth-dicom-web/ route. That route serves other callers either way.",
    )),
    added(key(
        "RegistrationUser",
        Kind::Str,
        Default::None,
        "With AuthenticationEnabled, the RegisteredUsers entry whose credentials the auto-registered proxy-mode servers use to call back into Orthanc (default: the first one).",
    )),
    key(
        "Servers",
        Kind::ServerMap,
        Default::None,
        "The OAuth-protected DICOMweb servers, by name (at least one).",
    ),
];

/// Finds a key of a table by exact name.
pub fn find(table: &'static [KeySpec], name: &str) -> Option<&'static KeySpec> {
    table.iter().find(|k| k.name == name)
}
