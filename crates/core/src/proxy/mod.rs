//! The DICOMweb proxy: maps a request on `/oauth-dicom-web/servers/{name}/…`
//! to the configured server, adds credentials, forwards it, and passes the
//! answer back unchanged.
//!
//! - [`target`]: the upstream URL — scheme, host and port come from the
//!   configuration only; path tricks are refused.
//! - [`headers`]: which headers cross the proxy, in each direction.
//! - [`forward`]: sending (streamed or replayable bodies), the 401 retry.

pub mod forward;
pub mod headers;
pub mod listener;
pub mod request;
pub mod target;

pub use forward::{
    body_pipe, forward_buffered, BodySender, BodyStream, ForwardRequest, ProxyResponse,
    StreamedRequest,
};
pub use target::{upstream_url, PathError};
