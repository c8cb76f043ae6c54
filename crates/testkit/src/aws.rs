//! The AWS emulator (fixtures/aws-emulator): IMDSv2, the container credential provider, STS
//! `AssumeRoleWithWebIdentity` and a SigV4-verifying service (`/sigv4/…`), on loopback.

use crate::NodeFixture;
use serde_json::{json, Value};

/// A running emulator; stopped on drop.
pub struct AwsEmulator {
    node: NodeFixture,
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub url: String,
    pub port: u16,
}

impl AwsEmulator {
    /// Starts the emulator with a configuration (see fixtures/aws-emulator/README.md; `{}` gives
    /// the defaults) and waits for its ready line.
    pub fn start(config: &Value) -> AwsEmulator {
        let node = NodeFixture::start("aws-emulator", config, None);
        AwsEmulator {
            url: node.url.clone(),
            port: node.port,
            node,
        }
    }

    /// The IMDS endpoint (what `AWS_EC2_METADATA_SERVICE_ENDPOINT` or an override holds).
    pub fn imds_endpoint(&self) -> String {
        format!("{}/", self.url)
    }

    /// The base `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` is relative to (instead of
    /// `http://169.254.170.2`).
    pub fn ecs_base(&self) -> String {
        self.url.clone()
    }

    /// The STS endpoint, `{url}/`.
    pub fn sts_endpoint(&self) -> String {
        format!("{}/", self.url)
    }

    /// The SigV4-protected service's base URL, `{url}/sigv4` (append any path).
    pub fn sigv4_url(&self) -> String {
        format!("{}/sigv4", self.url)
    }

    /// `GET /__stats` (counters, the credentials issued, the last SigV4 verification).
    pub fn stats(&self) -> Value {
        self.node.admin_get("/__stats")
    }

    /// Zeroes the counters and drops queued answers (issued credentials stay valid).
    pub fn reset_stats(&self) {
        self.node.admin_post("/__reset_stats", &json!({}));
    }

    /// `POST /__config`: `credentialLifetime`, `ecsAuthorization`, `imdsRole`,
    /// `stsWebIdentityTokens` changed at run time.
    pub fn configure(&self, changes: Value) {
        self.node.admin_post("/__config", &changes);
    }

    /// The next `count` requests to `route` (`imds`, `ecs`, `sts`, `sigv4` or `any`) answer
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

    /// The emulator's stderr so far.
    pub fn log(&self) -> String {
        self.node.log()
    }
}
