//! Backoff between attempts.

use crate::config::{Resilience, RetryStrategy};
use std::time::{Duration, SystemTime};

/// The longest `Retry-After` honoured; a longer one is cut to this, so one
/// provider answer cannot stall token requests for hours.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

/// The delay before retry number `retry` (1 for the first retry).
///
/// `jitter` in `[0, 1)` spreads the delay over ±20% so that many Orthanc
/// instances do not retry in lock-step; the result never exceeds `RetryMaxDelay`.
/// A `Retry-After` from the provider is a floor.
pub fn backoff_delay(
    config: &Resilience,
    retry: u32,
    jitter: f64,
    retry_after: Option<Duration>,
) -> Duration {
    let n = retry.saturating_sub(1);
    let initial = config.retry_initial_delay.as_secs_f64();
    let base = match config.retry_strategy {
        RetryStrategy::Fixed => initial,
        RetryStrategy::Linear { increment } => initial + increment.as_secs_f64() * f64::from(n),
        RetryStrategy::Exponential { multiplier } => initial * multiplier.powi(n.min(60) as i32),
    };
    let jittered = base * (0.8 + 0.4 * jitter.clamp(0.0, 1.0));
    let capped = jittered.min(config.retry_max_delay.as_secs_f64()).max(0.0);
    let delay = Duration::from_secs_f64(capped);
    match retry_after {
        Some(floor) => delay.max(floor.min(MAX_RETRY_AFTER)),
        None => delay,
    }
}

/// Parses a `Retry-After` header: delta-seconds or an HTTP-date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(strategy: RetryStrategy) -> Resilience {
        Resilience {
            circuit_breaker_enabled: false,
            circuit_breaker_failure_threshold: 5,
            circuit_breaker_timeout: Duration::from_secs(60),
            retry_max_attempts: 5,
            retry_strategy: strategy,
            retry_initial_delay: Duration::from_secs(1),
            retry_max_delay: Duration::from_secs(5),
        }
    }

    fn secs(d: Duration) -> f64 {
        (d.as_secs_f64() * 1000.0).round() / 1000.0
    }

    #[test]
    fn strategies_without_jitter() {
        // jitter 0.5 is the midpoint: factor 1.0
        let exp = config(RetryStrategy::Exponential { multiplier: 2.0 });
        let got: Vec<f64> = (1..=4)
            .map(|n| secs(backoff_delay(&exp, n, 0.5, None)))
            .collect();
        assert_eq!(got, vec![1.0, 2.0, 4.0, 5.0]);
        let lin = config(RetryStrategy::Linear {
            increment: Duration::from_millis(1500),
        });
        let got: Vec<f64> = (1..=4)
            .map(|n| secs(backoff_delay(&lin, n, 0.5, None)))
            .collect();
        assert_eq!(got, vec![1.0, 2.5, 4.0, 5.0]);
        let fixed = config(RetryStrategy::Fixed);
        assert_eq!(secs(backoff_delay(&fixed, 3, 0.5, None)), 1.0);
    }

    #[test]
    fn jitter_spreads_within_twenty_percent_and_retry_after_is_a_floor() {
        let fixed = config(RetryStrategy::Fixed);
        assert_eq!(secs(backoff_delay(&fixed, 1, 0.0, None)), 0.8);
        assert!(secs(backoff_delay(&fixed, 1, 0.999, None)) <= 1.2);
        let d = backoff_delay(&fixed, 1, 0.5, Some(Duration::from_secs(7)));
        assert_eq!(d, Duration::from_secs(7));
        let d = backoff_delay(&fixed, 1, 0.5, Some(Duration::from_secs(100_000)));
        assert_eq!(d, MAX_RETRY_AFTER);
    }

    #[test]
    fn retry_after_forms() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
