//! Plain-Rust views of Orthanc's HTTP requests and answers, so that routes
//! never see a raw pointer.

pub use dicomweb_oauth_core::proxy::forward::Bytes;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }
}

/// A request Orthanc routed to the plugin (copied out of Orthanc's memory).
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    /// The path as Orthanc matched it (no query string).
    pub url: String,
    /// The regular expression's groups.
    pub groups: Vec<String>,
    /// GET arguments, decoded by Orthanc.
    pub query: Vec<(String, String)>,
    /// Header names are lower-case (Orthanc lowers them).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn query_value(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An answer to send back through Orthanc.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    /// Shared, not copied: a proxied answer is held once.
    pub body: Bytes,
}

impl Response {
    pub fn json(status: u16, value: &Value) -> Self {
        Response {
            status,
            content_type: "application/json".into(),
            headers: Vec::new(),
            body: Bytes::from(serde_json::to_vec_pretty(value).unwrap_or_default()),
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// A request body arriving in chunks (POST/PUT on a chunked route).
pub trait Upload: Send {
    /// One chunk of the body; an `Err` answer ends the request. `data` points into
    /// Orthanc's buffer: the call returns to Orthanc only once every clone is dropped,
    /// so keep it no longer than it takes to send it on (copy what must outlive that).
    fn add_chunk(&mut self, data: Bytes) -> Result<(), Response>;
    /// The body is complete: produce the answer.
    fn finish(self: Box<Self>) -> Response;
}

/// The status to send when Orthanc refuses `status`: 429 (too many requests)
/// becomes 503 (its `Retry-After` header is kept), others their class's base.
pub fn fallback_status(status: u16) -> u16 {
    match status {
        429 => 503,
        400..=499 => 400,
        _ => 500,
    }
}
