//! The pure core of orthanc-dicomweb-oauth.
//!
//! Everything here is testable without Orthanc: the plugin crate is a thin
//! FFI layer that feeds Orthanc's configuration and HTTP requests into these
//! modules and hands their answers back.

pub mod api;
pub mod config;
pub mod credentials;
pub mod error;
pub mod http_client;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod rate_limit;
pub mod registration;
pub mod resilience;
pub mod secret;
pub mod shared_cache;
pub mod token;

pub use error::{Error, ErrorCode};

/// Name under which the plugin registers with Orthanc (`GET /plugins/dicomweb-oauth`).
pub const PLUGIN_NAME: &str = "dicomweb-oauth";

/// Version reported to Orthanc and in every API envelope.
pub const PLUGIN_VERSION: &str = env!("CARGO_PKG_VERSION");
