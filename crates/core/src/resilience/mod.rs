//! Retries with backoff and a circuit breaker around token requests (SPEC 3.1 `ResilienceConfig`).

mod circuit_breaker;
mod retry;

pub use circuit_breaker::{CircuitBreaker, CircuitState};
pub use retry::{backoff_delay, parse_retry_after, MAX_RETRY_AFTER};
