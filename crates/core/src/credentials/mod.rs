//! Where tokens come from: one module per way of obtaining credentials.
//!
//! - [`client_credentials`]: OAuth2 client credentials (RFC 6749 §4.4) with
//!   `client_secret_post`, `client_secret_basic` or `private_key_jwt`, for any
//!   OIDC provider (Keycloak, Auth0, Okta, Entra ID, …).
//! - [`discovery`]: OIDC discovery (token endpoint, JWKS URI from the issuer).
//! - [`token_response`]: reading a token endpoint's answer, success or error.

pub mod aws;
pub mod azure;
pub mod azure_managed_identity;
pub mod client_credentials;
pub mod discovery;
pub mod google;
pub mod token_response;

/// A fake environment for the credential sources' detection tests.
#[cfg(test)]
pub(crate) fn fake_env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: std::collections::HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

use crate::error::Error;
use crate::secret::Secret;
use std::time::Duration;

/// A token as an endpoint returned it.
#[derive(Debug, Clone)]
pub struct FetchedToken {
    pub access_token: Secret,
    /// `expires_in`, if the endpoint gave it.
    pub expires_in: Option<Duration>,
}

/// A failed attempt, with what the retry logic needs to know.
#[derive(Debug, Clone)]
pub struct FetchError {
    pub error: Error,
    /// Network errors, 5xx and 429 are worth retrying; 4xx and bad answers are not.
    pub retryable: bool,
    /// The provider's `Retry-After`, if any.
    pub retry_after: Option<Duration>,
}

impl FetchError {
    pub fn fatal(error: Error) -> Self {
        FetchError {
            error,
            retryable: false,
            retry_after: None,
        }
    }

    pub fn transient(error: Error, retry_after: Option<Duration>) -> Self {
        FetchError {
            error,
            retryable: true,
            retry_after,
        }
    }
}

/// How one server obtains its tokens.
pub enum TokenSource {
    /// OAuth2 client credentials (generic, Keycloak, Entra ID with a secret or a certificate).
    ClientCredentials(client_credentials::ClientCredentials),
    /// A Google service account (JWT-bearer grant).
    GoogleServiceAccount {
        account: google::ServiceAccount,
        scope: String,
        http: reqwest::Client,
    },
    /// The GCE/GKE metadata server.
    GoogleMetadata {
        server: google::MetadataServer,
        http: reqwest::Client,
    },
    /// Azure managed identity (IMDS, App Service / Container Apps, workload identity).
    AzureManagedIdentity {
        identity: azure_managed_identity::ManagedIdentity,
        scope: String,
        http: reqwest::Client,
    },
    /// AWS credentials for SigV4 signing. They travel through the token cache
    /// (refresh before expiry, single-flight, Redis) as a JSON secret; see
    /// [`aws_credentials_from_secret`].
    Aws {
        source: aws::CredentialSource,
        http: reqwest::Client,
    },
}

/// AWS credentials as the token cache holds them.
pub fn aws_credentials_to_secret(credentials: &aws::AwsCredentials) -> Secret {
    Secret::new(
        serde_json::json!({
            "AccessKeyId": credentials.access_key_id,
            "SecretAccessKey": credentials.secret_access_key.expose(),
            "SessionToken": credentials.session_token.as_ref().map(Secret::expose),
            "Expiration": credentials.expires_at_unix,
        })
        .to_string(),
    )
}

/// The AWS credentials inside a cached "token" of an `aws` server.
pub fn aws_credentials_from_secret(secret: &Secret) -> Result<aws::AwsCredentials, Error> {
    let bad = || {
        Error::coded(
            crate::error::ErrorCode::Int001,
            "cached AWS credentials are unreadable",
        )
    };
    let json: serde_json::Value = serde_json::from_str(secret.expose()).map_err(|_| bad())?;
    Ok(aws::AwsCredentials {
        access_key_id: json["AccessKeyId"].as_str().ok_or_else(bad)?.to_owned(),
        secret_access_key: Secret::new(json["SecretAccessKey"].as_str().ok_or_else(bad)?),
        session_token: json["SessionToken"].as_str().map(Secret::new),
        expires_at_unix: json["Expiration"].as_u64(),
    })
}

impl TokenSource {
    /// One attempt (no retry): the resilience layer above decides what follows.
    pub async fn fetch(&self) -> Result<FetchedToken, FetchError> {
        match self {
            TokenSource::ClientCredentials(c) => c.fetch().await,
            TokenSource::GoogleServiceAccount {
                account,
                scope,
                http,
            } => account.fetch(http, scope).await,
            TokenSource::GoogleMetadata { server, http } => server.fetch(http).await,
            TokenSource::AzureManagedIdentity {
                identity,
                scope,
                http,
            } => identity.fetch(http, scope).await,
            TokenSource::Aws { source, http } => {
                let credentials = source.fetch(http, &aws::process_env).await?;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                Ok(FetchedToken {
                    access_token: aws_credentials_to_secret(&credentials),
                    // Long-lived keys are re-read every hour (environment changes, rotation).
                    expires_in: Some(Duration::from_secs(
                        credentials
                            .expires_at_unix
                            .map_or(3600, |at| at.saturating_sub(now)),
                    )),
                })
            }
        }
    }
}
