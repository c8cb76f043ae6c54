//! Which headers cross the proxy.
//!
//! Upstream: only what a DICOMweb server needs to understand the request
//! (an allow-list). The caller's `Authorization` (Orthanc's own credentials),
//! `Cookie`, `Host` and hop-by-hop headers never leave. Downstream: the
//! content type and the few headers DICOMweb answers carry meaning in.

/// Request headers forwarded upstream (lower-case names).
pub const FORWARDED_REQUEST_HEADERS: &[&str] = &[
    "accept",
    "content-type",
    "content-length",
    "accept-charset",
    "if-none-match",
    "if-modified-since",
    "x-request-id",
    "x-correlation-id",
];

/// Response headers passed back to the caller besides `Content-Type`.
pub const PASSED_RESPONSE_HEADERS: &[&str] = &[
    "warning",
    "location",
    "content-location",
    "retry-after",
    "etag",
    "last-modified",
    "allow",
];

/// The caller's headers that may go upstream.
pub fn forwardable(headers: &[(String, String)]) -> impl Iterator<Item = (&str, &str)> {
    headers.iter().filter_map(|(name, value)| {
        let lower = name.to_ascii_lowercase();
        FORWARDED_REQUEST_HEADERS
            .iter()
            .any(|allowed| *allowed == lower)
            .then_some((name.as_str(), value.as_str()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_hop_by_hop_headers_stay_behind() {
        let headers: Vec<(String, String)> = [
            ("accept", "multipart/related; type=\"application/dicom\""),
            ("Authorization", "Basic b3J0aGFuYzpvcnRoYW5j"),
            ("cookie", "session=1"),
            ("connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("host", "127.0.0.1:8042"),
            ("proxy-authorization", "x"),
            ("content-type", "application/dicom"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let names: Vec<&str> = forwardable(&headers).map(|(k, _)| k).collect();
        assert_eq!(names, vec!["accept", "content-type"]);
    }
}
