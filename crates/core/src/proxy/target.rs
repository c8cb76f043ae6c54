//! The upstream URL of a proxied request.

use url::Url;

/// Why a path was refused (answered 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    DotSegment,
    EncodedSlash,
    NulByte,
    Backslash,
    EmptySegment,
}

impl PathError {
    pub fn message(&self) -> &'static str {
        match self {
            PathError::DotSegment => "'.' and '..' path segments are not allowed",
            PathError::EncodedSlash => "encoded slashes are not allowed in the path",
            PathError::NulByte => "NUL bytes are not allowed in the path",
            PathError::Backslash => "backslashes are not allowed in the path",
            PathError::EmptySegment => "empty path segments are not allowed",
        }
    }
}

/// `base` + the DICOMweb path after the server name + the query.
///
/// `rest` is the path below `/oauth-dicom-web/servers/{name}/` (the legacy
/// `stow` alias means `studies`). Each segment is checked and
/// percent-encoded as one segment, so nothing in it can climb out of the
/// base path or name another host. `query` holds the GET arguments as
/// Orthanc passes them — still percent-encoded as the caller sent them — and
/// is forwarded as is (`&`-joined), so QIDO matching values arrive unchanged.
///
/// Orthanc itself resolves `.`/`..` segments, decodes `%2F` into `/` and
/// stops at a decoded NUL before a plugin sees the URL; the checks here are
/// the second line, for whatever reaches the plugin.
pub fn upstream_url(base: &Url, rest: &str, query: &[(String, String)]) -> Result<Url, PathError> {
    check_raw(rest)?;
    let rest = if rest == "stow" { "studies" } else { rest };
    let mut url = base.clone();
    url.set_query(None);
    {
        let mut segments = url.path_segments_mut().expect("http(s) URLs have a path");
        segments.pop_if_empty();
        if !rest.is_empty() {
            for segment in rest.split('/') {
                match segment {
                    "" => return Err(PathError::EmptySegment),
                    "." | ".." => return Err(PathError::DotSegment),
                    s => {
                        segments.push(s);
                    }
                }
            }
        }
    }
    if !query.is_empty() {
        let joined: Vec<String> = query
            .iter()
            .map(|(k, v)| {
                if v.is_empty() {
                    k.clone()
                } else {
                    format!("{k}={v}")
                }
            })
            .collect();
        url.set_query(Some(&joined.join("&")));
    }
    Ok(url)
}

/// Refusals that hold whatever Orthanc did to the URL before us (decoded or not).
pub(crate) fn check_raw(rest: &str) -> Result<(), PathError> {
    if rest.contains('\0') || rest.to_ascii_lowercase().contains("%00") {
        return Err(PathError::NulByte);
    }
    let lower = rest.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") {
        return Err(PathError::EncodedSlash);
    }
    if rest.contains('\\') {
        return Err(PathError::Backslash);
    }
    if lower.contains("%2e") {
        // An encoded dot is only ever used to smuggle "." or ".." segments.
        return Err(PathError::DotSegment);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("https://pacs.example.org:8443/dicom-web/").unwrap()
    }

    #[test]
    fn joins_below_the_base_path() {
        let u = upstream_url(&base(), "studies/1.2.3/series/4.5/metadata", &[]).unwrap();
        assert_eq!(
            u.as_str(),
            "https://pacs.example.org:8443/dicom-web/studies/1.2.3/series/4.5/metadata"
        );
        let q = [
            ("PatientName".to_string(), "Doe%5EJohn".to_string()),
            ("fuzzymatching".into(), "true".into()),
            ("includefield".into(), String::new()),
        ];
        let u = upstream_url(&Url::parse("https://h/dw").unwrap(), "studies", &q).unwrap();
        assert_eq!(
            u.as_str(),
            "https://h/dw/studies?PatientName=Doe%5EJohn&fuzzymatching=true&includefield"
        );
        let u = upstream_url(&base(), "stow", &[]).unwrap();
        assert_eq!(u.path(), "/dicom-web/studies");
        let u = upstream_url(&base(), "", &[]).unwrap();
        assert_eq!(u.as_str(), "https://pacs.example.org:8443/dicom-web");
    }

    #[test]
    fn nothing_in_the_path_changes_scheme_host_or_port() {
        for rest in [
            "http://evil.example/x",
            "//evil.example/x",
            "@evil.example",
            "studies/x?y#z",
            ":80/x",
            "studies/%40evil",
        ] {
            if let Ok(u) = upstream_url(&base(), rest, &[]) {
                assert_eq!(
                    (u.scheme(), u.host_str(), u.port()),
                    ("https", Some("pacs.example.org"), Some(8443)),
                    "{rest}"
                );
                assert!(u.path().starts_with("/dicom-web/"), "{rest}: {u}");
                assert_eq!(u.fragment(), None);
            }
        }
    }

    #[test]
    fn refuses_path_tricks() {
        assert_eq!(
            upstream_url(&base(), "studies/../admin", &[]),
            Err(PathError::DotSegment)
        );
        assert_eq!(upstream_url(&base(), "..", &[]), Err(PathError::DotSegment));
        assert_eq!(
            upstream_url(&base(), "studies/%2e%2e/x", &[]),
            Err(PathError::DotSegment)
        );
        assert_eq!(
            upstream_url(&base(), "studies%2Fx", &[]),
            Err(PathError::EncodedSlash)
        );
        assert_eq!(
            upstream_url(&base(), "studies/a%00b", &[]),
            Err(PathError::NulByte)
        );
        assert_eq!(
            upstream_url(&base(), "studies/a\0b", &[]),
            Err(PathError::NulByte)
        );
        assert_eq!(
            upstream_url(&base(), "studies\\..\\x", &[]),
            Err(PathError::Backslash)
        );
        assert_eq!(
            upstream_url(&base(), "studies//x", &[]),
            Err(PathError::EmptySegment)
        );
    }
}
