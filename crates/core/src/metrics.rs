//! Prometheus metrics, with the Python plugin's names (SPEC 3.4) and the
//! proxy's traffic. Uses the official `prometheus-client` crate; counters are
//! shared handles, so the token cache's hot path increments an atomic without
//! any label lookup.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::Mutex;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabels {
    pub server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerStatusLabels {
    pub server: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub server: String,
    pub error_code: String,
    pub category: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub endpoint: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpDurationLabels {
    pub method: String,
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProxyLabels {
    pub server: String,
    pub method: String,
    pub status: String,
}

#[derive(Clone)]
/// Builds the histograms of a family (all share the latency buckets).
pub struct Buckets(fn() -> Histogram);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        (self.0)()
    }
}

/// Latency buckets from 5 ms to ~80 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// Every metric the plugin exposes.
pub struct Metrics {
    registry: Mutex<Registry>,
    pub token_acquisitions: Family<ServerStatusLabels, Counter>,
    pub token_acquisition_duration: Family<ServerLabels, Histogram, Buckets>,
    pub cache_hits: Family<ServerLabels, Counter>,
    pub cache_misses: Family<ServerLabels, Counter>,
    pub circuit_breaker_state: Family<ServerLabels, Gauge>,
    pub circuit_breaker_rejections: Family<ServerLabels, Counter>,
    pub retry_attempts: Family<ServerLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_request_duration: Family<HttpDurationLabels, Histogram, Buckets>,
    pub proxy_requests: Family<ProxyLabels, Counter>,
    pub proxy_request_bytes: Family<ServerLabels, Counter>,
    pub proxy_response_bytes: Family<ServerLabels, Counter>,
    pub proxy_upstream_duration: Family<ServerStatusLabels, Histogram, Buckets>,
    pub shared_cache_available: Gauge,
    pub shared_cache_outages: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            token_acquisitions: Family::default(),
            token_acquisition_duration: Family::new_with_constructor(Buckets(latency_histogram)),
            cache_hits: Family::default(),
            cache_misses: Family::default(),
            circuit_breaker_state: Family::default(),
            circuit_breaker_rejections: Family::default(),
            retry_attempts: Family::default(),
            errors: Family::default(),
            http_requests: Family::default(),
            http_request_duration: Family::new_with_constructor(Buckets(latency_histogram)),
            proxy_requests: Family::default(),
            proxy_request_bytes: Family::default(),
            proxy_response_bytes: Family::default(),
            proxy_upstream_duration: Family::new_with_constructor(Buckets(latency_histogram)),
            shared_cache_available: Gauge::default(),
            shared_cache_outages: Gauge::default(),
        };
        {
            let mut r = m.registry.lock().unwrap_or_else(|p| p.into_inner());
            // prometheus-client appends `_total` to counters; names below are the SPEC's without it.
            r.register(
                "dicomweb_oauth_token_acquisitions",
                "Token requests to identity providers, by outcome",
                m.token_acquisitions.clone(),
            );
            r.register(
                "dicomweb_oauth_token_acquisition_duration_seconds",
                "Time to obtain a token (all attempts)",
                m.token_acquisition_duration.clone(),
            );
            r.register(
                "dicomweb_oauth_cache_hits",
                "Tokens served from the cache",
                m.cache_hits.clone(),
            );
            r.register(
                "dicomweb_oauth_cache_misses",
                "Token requests that found no usable cached token",
                m.cache_misses.clone(),
            );
            r.register(
                "dicomweb_oauth_circuit_breaker_state",
                "Circuit breaker state: 0 closed, 1 open, 2 half-open",
                m.circuit_breaker_state.clone(),
            );
            r.register(
                "dicomweb_oauth_circuit_breaker_rejections",
                "Token requests refused by an open circuit breaker",
                m.circuit_breaker_rejections.clone(),
            );
            r.register(
                "dicomweb_oauth_retry_attempts",
                "Retries of token requests",
                m.retry_attempts.clone(),
            );
            r.register("dicomweb_oauth_errors", "Errors by code", m.errors.clone());
            r.register(
                "dicomweb_oauth_http_requests",
                "Requests to the plugin's routes",
                m.http_requests.clone(),
            );
            r.register(
                "dicomweb_oauth_http_request_duration_seconds",
                "Time to answer the plugin's routes",
                m.http_request_duration.clone(),
            );
            r.register(
                "dicomweb_oauth_proxy_requests",
                "Requests forwarded to remote DICOMweb servers, by remote status",
                m.proxy_requests.clone(),
            );
            r.register(
                "dicomweb_oauth_proxy_request_bytes",
                "Request body bytes sent to remote DICOMweb servers",
                m.proxy_request_bytes.clone(),
            );
            r.register(
                "dicomweb_oauth_proxy_response_bytes",
                "Response body bytes received from remote DICOMweb servers",
                m.proxy_response_bytes.clone(),
            );
            r.register(
                "dicomweb_oauth_shared_cache_available",
                "Whether the Redis token cache answers (1) or the plugin runs on its own cache (0)",
                m.shared_cache_available.clone(),
            );
            r.register(
                "dicomweb_oauth_shared_cache_outages",
                "Redis outages since start",
                m.shared_cache_outages.clone(),
            );
            r.register(
                "dicomweb_oauth_proxy_upstream_duration_seconds",
                "Remote DICOMweb server latency, by status",
                m.proxy_upstream_duration.clone(),
            );
        }
        m
    }

    /// The Prometheus text exposition (version 0.0.4 compatible).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        prometheus_client::encoding::text::encode(&mut text, &registry)
            .expect("writing to a String");
        text
    }

    pub fn server(server: &str) -> ServerLabels {
        ServerLabels {
            server: server.to_owned(),
        }
    }

    /// Records one answer of a plugin route.
    pub fn observe_http(&self, method: &str, endpoint: &str, status: u16, seconds: f64) {
        self.http_requests
            .get_or_create(&HttpLabels {
                method: method.to_owned(),
                endpoint: endpoint.to_owned(),
                status: status.to_string(),
            })
            .inc();
        self.http_request_duration
            .get_or_create(&HttpDurationLabels {
                method: method.to_owned(),
                endpoint: endpoint.to_owned(),
            })
            .observe(seconds);
    }

    /// Records one proxied request.
    pub fn observe_proxy(
        &self,
        server: &str,
        method: &str,
        status: u16,
        sent: u64,
        received: u64,
        seconds: f64,
    ) {
        let labels = Self::server(server);
        self.proxy_requests
            .get_or_create(&ProxyLabels {
                server: server.to_owned(),
                method: method.to_owned(),
                status: status.to_string(),
            })
            .inc();
        self.proxy_request_bytes.get_or_create(&labels).inc_by(sent);
        self.proxy_response_bytes
            .get_or_create(&labels)
            .inc_by(received);
        self.proxy_upstream_duration
            .get_or_create(&ServerStatusLabels {
                server: server.to_owned(),
                status: status.to_string(),
            })
            .observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_uses_the_spec_names() {
        let m = Metrics::new();
        m.cache_hits.get_or_create(&Metrics::server("pacs")).inc();
        m.observe_http("GET", "/dicomweb-oauth/status", 200, 0.01);
        let text = m.encode();
        assert!(
            text.contains("dicomweb_oauth_cache_hits_total{server=\"pacs\"} 1"),
            "{text}"
        );
        assert!(text.contains("dicomweb_oauth_http_requests_total{method=\"GET\",endpoint=\"/dicomweb-oauth/status\",status=\"200\"} 1"), "{text}");
        assert!(
            text.contains("# TYPE dicomweb_oauth_token_acquisition_duration_seconds histogram"),
            "{text}"
        );
    }
}
