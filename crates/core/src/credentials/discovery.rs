//! OIDC discovery: the token endpoint and JWKS URI from the issuer's
//! `/.well-known/openid-configuration` (OpenID Connect Discovery 1.0 §4).

use crate::error::{Error, ErrorCode};
use crate::http_client::transport_error;
use serde_json::Value;
use tokio::sync::OnceCell;
use url::Url;

/// What discovery gives; fetched once, on first use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderMetadata {
    pub token_endpoint: Url,
    pub jwks_uri: Option<Url>,
}

/// Discovery for one issuer, shared by the token request and JWT validation.
pub struct Discovery {
    issuer: Url,
    http: reqwest::Client,
    metadata: OnceCell<ProviderMetadata>,
}

impl Discovery {
    pub fn new(issuer: Url, http: reqwest::Client) -> Self {
        Discovery {
            issuer,
            http,
            metadata: OnceCell::new(),
        }
    }

    pub fn issuer(&self) -> &Url {
        &self.issuer
    }

    /// The metadata; a failed fetch is retried on the next call.
    pub async fn metadata(&self) -> Result<&ProviderMetadata, Error> {
        self.metadata.get_or_try_init(|| self.fetch()).await
    }

    async fn fetch(&self) -> Result<ProviderMetadata, Error> {
        let base = self.issuer.as_str().trim_end_matches('/');
        let url = format!("{base}/.well-known/openid-configuration");
        let response = self
            .http
            .get(&url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| transport_error("OIDC discovery", &e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(Error::coded(
                if status.is_server_error() {
                    ErrorCode::Auth003
                } else {
                    ErrorCode::Tok001
                },
                format!("OIDC discovery at {url} answered HTTP {}", status.as_u16()),
            ));
        }
        let json: Value = response.json().await.map_err(|_| {
            Error::coded(
                ErrorCode::Tok005,
                format!("OIDC discovery at {url} is not JSON"),
            )
        })?;
        parse_metadata(&self.issuer, &json)
    }
}

/// Checks and extracts the metadata; the issuer must match exactly (§4.3).
pub fn parse_metadata(issuer: &Url, json: &Value) -> Result<ProviderMetadata, Error> {
    let bad = |m: &str| Error::coded(ErrorCode::Tok005, format!("OIDC discovery: {m}"));
    let advertised = json
        .get("issuer")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no issuer"))?;
    if advertised.trim_end_matches('/') != issuer.as_str().trim_end_matches('/') {
        return Err(bad(&format!(
            "issuer mismatch: configured {issuer}, provider says {advertised}"
        )));
    }
    let url = |key: &str| -> Result<Option<Url>, Error> {
        match json.get(key).and_then(Value::as_str) {
            None => Ok(None),
            Some(s) => Url::parse(s)
                .map(Some)
                .map_err(|_| bad(&format!("{key} is not a URL"))),
        }
    };
    Ok(ProviderMetadata {
        token_endpoint: url("token_endpoint")?.ok_or_else(|| bad("no token_endpoint"))?,
        jwks_uri: url("jwks_uri")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn issuer_must_match() {
        let issuer = Url::parse("http://127.0.0.1:1").unwrap();
        let ok = parse_metadata(&issuer, &json!({"issuer": "http://127.0.0.1:1", "token_endpoint": "http://127.0.0.1:1/token", "jwks_uri": "http://127.0.0.1:1/jwks"})).unwrap();
        assert_eq!(ok.token_endpoint.as_str(), "http://127.0.0.1:1/token");
        let e = parse_metadata(
            &issuer,
            &json!({"issuer": "http://evil", "token_endpoint": "http://evil/t"}),
        )
        .unwrap_err();
        assert_eq!(e.code(), ErrorCode::Tok005);
    }
}
