//! The Azure managed identity emulator (fixtures/azure-emulator): IMDS, the App Service /
//! Container Apps identity endpoint and Entra's v2 token path (forwarded to a real provider).

use crate::NodeFixture;
use serde_json::{json, Value};

/// A running emulator; stopped on drop.
pub struct AzureEmulator {
    node: NodeFixture,
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub url: String,
    pub port: u16,
}

impl AzureEmulator {
    /// Starts the emulator with a configuration (see fixtures/azure-emulator/README.md) and
    /// waits for its ready line.
    pub fn start(config: &Value) -> AzureEmulator {
        let node = NodeFixture::start("azure-emulator", config, None);
        AzureEmulator {
            url: node.url.clone(),
            port: node.port,
            node,
        }
    }

    /// The IMDS token endpoint (what `ImdsEndpoint` overrides).
    pub fn imds_endpoint(&self) -> String {
        format!("{}/metadata/identity/oauth2/token", self.url)
    }

    /// The App Service / Container Apps endpoint (what `IDENTITY_ENDPOINT` holds).
    pub fn identity_endpoint(&self) -> String {
        format!("{}/msi/token", self.url)
    }

    /// The authority host (what `AZURE_AUTHORITY_HOST` holds), with its trailing slash.
    pub fn authority_host(&self) -> String {
        format!("{}/", self.url)
    }

    /// `GET /__stats`.
    pub fn stats(&self) -> Value {
        self.node.http.get(&format!("{}/__stats", self.url)).json()
    }

    /// Zeroes the counters and drops queued answers.
    pub fn reset_stats(&self) {
        self.node.http.post(
            &format!("{}/__reset_stats", self.url),
            "application/json",
            b"{}",
        );
    }

    /// The next `count` requests to `route` (`imds`, `appservice`, `entra` or `any`) answer
    /// `status` with `body` (a JSON value, or a string sent as text) and extra `headers`.
    pub fn inject(
        &self,
        route: &str,
        status: u16,
        count: u32,
        body: Option<Value>,
        headers: Value,
    ) {
        self.node.inject_next(route, status, count, body, headers);
    }

    /// Shorthand: the next `count` requests (any route) answer `status` with the default body.
    pub fn fail_next(&self, status: u16, count: u32) {
        self.inject("any", status, count, None, json!({}));
    }

    pub fn log(&self) -> String {
        self.node.log()
    }
}

/// A self-signed X.509 certificate (PEM) for the RSA key `private_pem` (PKCS#8 PEM, e.g. from
/// `Idp::generate_key("RS256", ..)`), as a client certificate credential of an Entra app.
pub fn self_signed_certificate(private_pem: &str, common_name: &str) -> String {
    let key = rcgen::KeyPair::from_pem(private_pem).expect("an RSA PKCS#8 private key (PEM)");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    params.self_signed(&key).expect("self-sign").pem()
}
