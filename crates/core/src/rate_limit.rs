//! Per-client rate limiting of the plugin's routes (`RateLimitRequests` per
//! `RateLimitWindowSeconds`), with the `governor` crate (GCRA): a client may
//! burst up to the limit, then gets one more request per window/limit.

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

pub struct RateLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

impl RateLimiter {
    /// `None` when `requests` is 0 (no limit).
    pub fn new(requests: u32, window: Duration) -> Option<Self> {
        let burst = NonZeroU32::new(requests)?;
        let period = (window / requests).max(Duration::from_nanos(1));
        let quota = Quota::with_period(period)?.allow_burst(burst);
        Some(RateLimiter {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            clock: DefaultClock::default(),
        })
    }

    /// `Err(retry_after)` when `client` is over its limit.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        self.limiter.check_key(&client).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            wait.max(Duration::from_secs(1))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_after_the_limit_is_refused_per_client() {
        let limiter = RateLimiter::new(3, Duration::from_secs(60)).unwrap();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "::1".parse().unwrap();
        for _ in 0..3 {
            assert!(limiter.check(a).is_ok());
        }
        let retry = limiter.check(a).unwrap_err();
        assert!(
            retry >= Duration::from_secs(1) && retry <= Duration::from_secs(20),
            "{retry:?}"
        );
        assert!(limiter.check(b).is_ok(), "other clients are not affected");
        assert!(RateLimiter::new(0, Duration::from_secs(60)).is_none());
    }
}
