//! A small blocking HTTP client for tests (every status is an answer, not an error).

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: Option<String>,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

#[derive(Clone)]
pub struct HttpClient {
    agent: ureq::Agent,
    /// `Authorization` sent with every request (Orthanc with authentication on).
    authorization: Option<String>,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    pub fn new() -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .proxy(None)
            .build()
            .into();
        HttpClient {
            agent,
            authorization: None,
        }
    }

    /// The same client, sending HTTP Basic credentials with every request.
    pub fn with_basic_auth(mut self, user: &str, password: &str) -> Self {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.authorization = Some(format!("Basic {token}"));
        self
    }

    fn finish(
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Reply, String> {
        let mut response = result.map_err(|e| e.to_string())?;
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let body = response
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .map_err(|e| e.to_string())?;
        Ok(Reply {
            status,
            content_type,
            headers,
            body,
        })
    }

    /// Any request, with extra headers and an optional body.
    pub fn try_request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Reply, String> {
        let method: ureq::http::Method = method.parse().expect("HTTP method");
        let mut builder = ureq::http::Request::builder().method(method).uri(url);
        let caller_authorizes = headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("authorization"));
        if let (Some(auth), false) = (&self.authorization, caller_authorizes) {
            builder = builder.header("authorization", auth.as_str());
        }
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let request = builder
            .body(body.map(<[u8]>::to_vec).unwrap_or_default())
            .expect("request");
        Self::finish(self.agent.run(request))
    }

    /// A POST whose body goes out with `Transfer-Encoding: chunked` (no `Content-Length`),
    /// as the DICOMweb plugin sends STOW bodies: Orthanc streams it to a plugin in blocks.
    pub fn post_chunked(&self, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        let mut builder = ureq::http::Request::builder().method("POST").uri(url);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let mut reader = body;
        let request = builder
            .body(ureq::SendBody::from_reader(&mut reader))
            .expect("request");
        Self::finish(self.agent.run(request)).unwrap_or_else(|e| panic!("POST {url}: {e}"))
    }

    pub fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Reply {
        self.try_request(method, url, headers, body)
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
    }

    pub fn try_get(&self, url: &str) -> Result<Reply, String> {
        self.try_request("GET", url, &[], None)
    }

    pub fn get(&self, url: &str) -> Reply {
        self.request("GET", url, &[], None)
    }

    pub fn post(&self, url: &str, content_type: &str, body: &[u8]) -> Reply {
        self.request("POST", url, &[("content-type", content_type)], Some(body))
    }

    pub fn post_json(&self, url: &str, body: &serde_json::Value) -> Reply {
        self.post(url, "application/json", body.to_string().as_bytes())
    }

    pub fn delete(&self, url: &str) -> Reply {
        self.request("DELETE", url, &[], None)
    }
}
