//! Tokens: the per-server cache and refresher ([`manager`]), JWT validation
//! ([`jwt`]), and the [`Engine`] that builds them all from the configuration.

pub mod jwt;
pub mod manager;

pub use manager::{CachedToken, ManagerParts, TokenManager, TokenOrigin, TokenStats};

use crate::config::{CacheConfig, ClientAuth, CloudCredential, Config, ServerConfig};
use crate::credentials::azure_managed_identity::ManagedIdentity;
use crate::credentials::client_credentials::{ClientCredentials, Endpoint};
use crate::credentials::discovery::Discovery;
use crate::credentials::TokenSource;
use crate::credentials::{aws, google};
use crate::error::{Error, ErrorCode};
use crate::http_client::{build_client, ClientSettings};
use crate::metrics::Metrics;
use crate::shared_cache::{SharedTokenStore, StoreConfig};
use jwt::JwtValidator;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Every server's token manager, and their background refreshers.
pub struct Engine {
    managers: Vec<Arc<TokenManager>>,
    metrics: Arc<Metrics>,
    shared: Option<SharedTokenStore>,
    runtime: tokio::runtime::Handle,
    refreshers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    clients: HashMap<String, reqwest::Client>,
}

impl Engine {
    /// Builds clients, discovery, credentials and validators for every server.
    /// Anything invalid (a key that does not parse, an unreadable CA bundle) fails here.
    pub fn new(config: &Config, runtime: tokio::runtime::Handle) -> Result<Engine, Error> {
        let metrics = Arc::new(Metrics::new());
        let shared = shared_store(config, &runtime)?;
        let mut shared_clients: HashMap<ClientSettings, reqwest::Client> = HashMap::new();
        let mut managers = Vec::new();
        let mut clients = HashMap::new();
        for server in &config.servers {
            let settings = ClientSettings::for_server(server, &config.orthanc);
            let http = match shared_clients.get(&settings) {
                Some(c) => c.clone(),
                None => {
                    let c = build_client(&settings).map_err(|e| in_server(server, e))?;
                    shared_clients.insert(settings, c.clone());
                    c
                }
            };
            clients.insert(server.name.clone(), http.clone());
            managers.push(Arc::new(build_manager(
                server,
                http,
                runtime.clone(),
                Arc::clone(&metrics),
                shared.clone(),
            )?));
        }
        Ok(Engine {
            managers,
            metrics,
            shared,
            runtime,
            refreshers: Mutex::new(Vec::new()),
            clients,
        })
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The shared (Redis) token cache, when configured.
    pub fn shared_store(&self) -> Option<&SharedTokenStore> {
        self.shared.as_ref()
    }

    /// The Prometheus exposition, with the circuit breaker gauges read now.
    pub fn encode_metrics(&self) -> String {
        if let Some(store) = &self.shared {
            let state = store.state();
            self.metrics
                .shared_cache_available
                .set(i64::from(state.available));
            self.metrics.shared_cache_outages.set(state.outages as i64);
        }
        for manager in &self.managers {
            self.metrics
                .circuit_breaker_state
                .get_or_create(&Metrics::server(manager.server()))
                .set(manager.circuit_state().metric_value());
        }
        self.metrics.encode()
    }

    pub fn managers(&self) -> &[Arc<TokenManager>] {
        &self.managers
    }

    pub fn manager(&self, server: &str) -> Option<&Arc<TokenManager>> {
        self.managers.iter().find(|m| m.server() == server)
    }

    /// The HTTP client of a server (shared with its token requests).
    pub fn http_client(&self, server: &str) -> Option<&reqwest::Client> {
        self.clients.get(server)
    }

    /// Starts one background refresher per server.
    pub fn start_refreshers(&self) {
        let mut refreshers = self.refreshers.lock().unwrap_or_else(|p| p.into_inner());
        for manager in &self.managers {
            refreshers.push(self.runtime.spawn(Arc::clone(manager).run_refresher()));
        }
    }

    /// Stops the refreshers (before the runtime shuts down).
    pub fn stop(&self) {
        for task in self
            .refreshers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}

fn in_server(server: &ServerConfig, error: Error) -> Error {
    match error {
        Error::Coded { code, message } => {
            Error::coded(code, format!("server '{}': {message}", server.name))
        }
        other => other,
    }
}

/// The Redis store of `CacheType: redis` (no I/O here: it connects on first use).
fn shared_store(
    config: &Config,
    runtime: &tokio::runtime::Handle,
) -> Result<Option<SharedTokenStore>, Error> {
    let CacheConfig::Redis {
        url,
        key_prefix,
        encryption_key,
        timeout,
        ca_file,
    } = &config.cache
    else {
        return Ok(None);
    };
    let _entered = runtime.enter();
    let mut store = StoreConfig::new(
        url.clone(),
        StoreConfig::parse_encryption_key(encryption_key.expose())?,
    );
    store.key_prefix = key_prefix.clone();
    store.timeout = *timeout;
    store.ca_file = ca_file.clone();
    SharedTokenStore::new(store).map(Some)
}

/// The token source of a provider that does not use client credentials.
fn cloud_source(server: &ServerConfig, http: &reqwest::Client) -> Result<TokenSource, Error> {
    // Metadata endpoints must be reached directly: they refuse proxied requests.
    let direct = || google::metadata_http_client(server.timeout.unwrap_or(Duration::from_secs(30)));
    let named = |e: Error| in_server(server, e);
    Ok(match &server.cloud {
        CloudCredential::GoogleServiceAccount(file) => TokenSource::GoogleServiceAccount {
            account: google::ServiceAccount::from_file(file).map_err(named)?,
            scope: server.scope.clone(),
            http: http.clone(),
        },
        CloudCredential::GoogleMetadataServer => TokenSource::GoogleMetadata {
            server: google::MetadataServer::new(None, None, None),
            http: direct().map_err(named)?,
        },
        CloudCredential::AzureManagedIdentity {
            client_id,
            imds_endpoint,
        } => {
            let identity = ManagedIdentity::detect(
                &|name| std::env::var(name).ok(),
                client_id.clone(),
                imds_endpoint.clone(),
            )
            .map_err(named)?;
            // Workload identity talks to Entra ID (through the egress proxy if any).
            let http = if identity.kind() == "workloadidentity" {
                http.clone()
            } else {
                direct().map_err(named)?
            };
            TokenSource::AzureManagedIdentity {
                identity,
                scope: server.scope.clone(),
                http,
            }
        }
        CloudCredential::Aws {
            region,
            access_key_id,
            secret_access_key,
            session_token,
            ..
        } => {
            let static_keys = match (access_key_id, secret_access_key) {
                (Some(id), Some(secret)) => Some(aws::AwsCredentials {
                    access_key_id: id.clone(),
                    secret_access_key: secret.clone(),
                    session_token: session_token.clone(),
                    expires_at_unix: None,
                }),
                _ => None,
            };
            let source = aws::CredentialSource::detect(
                &aws::process_env,
                static_keys,
                region,
                &aws::EndpointOverrides::default(),
            )
            .map_err(named)?;
            // Instance and container metadata must be reached directly.
            let http = if matches!(source.kind(), "imds" | "ecs") {
                direct().map_err(named)?
            } else {
                http.clone()
            };
            TokenSource::Aws { source, http }
        }
        CloudCredential::None => {
            return Err(Error::coded(
                ErrorCode::Cfg002,
                format!(
                    "server '{}': provider '{}' is not supported yet",
                    server.name,
                    server.provider.as_str()
                ),
            ))
        }
    })
}

fn build_manager(
    server: &ServerConfig,
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
    metrics: Arc<Metrics>,
    shared: Option<SharedTokenStore>,
) -> Result<TokenManager, Error> {
    let discovery = server
        .issuer
        .clone()
        .map(|issuer| Arc::new(Discovery::new(issuer, http.clone())));
    let source = match server.client_auth {
        ClientAuth::SecretPost(_) | ClientAuth::SecretBasic(_) | ClientAuth::PrivateKeyJwt(_) => {
            let endpoint = match (&server.token_endpoint, &discovery) {
                (Some(url), _) => Endpoint::Fixed(url.clone()),
                (None, Some(d)) => Endpoint::Discovered(Arc::clone(d)),
                (None, None) => {
                    return Err(Error::coded(
                        ErrorCode::Cfg001,
                        format!(
                            "server '{}': TokenEndpoint or Issuer is required",
                            server.name
                        ),
                    ))
                }
            };
            TokenSource::ClientCredentials(ClientCredentials::new(server, http.clone(), endpoint)?)
        }
        ClientAuth::None => cloud_source(server, &http)?,
    };
    let validator = match &server.jwt_validation {
        Some(v) => Some(JwtValidator::new(&server.name, v, discovery, http)?),
        None => None,
    };
    // Long-term AWS keys (configuration, environment) are not fetched from anywhere:
    // sharing them through Redis would only copy secret keys there.
    let shared = match &source {
        TokenSource::Aws { source, .. } if matches!(source.kind(), "static" | "environment") => {
            None
        }
        _ => shared,
    };
    Ok(TokenManager::new(ManagerParts {
        server: server.name.clone(),
        source,
        validator,
        resilience: server.resilience.clone(),
        refresh_buffer: server.refresh_buffer,
        runtime,
        metrics,
        shared,
    }))
}
