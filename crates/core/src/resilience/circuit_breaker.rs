//! A circuit breaker per server: after repeated failures, fail fast (AUTH-003)
//! instead of hammering a provider that is down, then let one trial through.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The breaker's state; the metric value is the SPEC 3.4 encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    /// `dicomweb_oauth_circuit_breaker_state`: 0 closed, 1 open, 2 half-open.
    pub fn metric_value(self) -> i64 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::Open => 1,
            CircuitState::HalfOpen => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half-open",
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: CircuitState,
    consecutive_failures: u32,
    opened_at: Option<Instant>,
    trial_in_flight: bool,
}

#[derive(Debug)]
pub struct CircuitBreaker {
    enabled: bool,
    threshold: u32,
    open_for: Duration,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    pub fn new(enabled: bool, threshold: u32, open_for: Duration) -> Self {
        CircuitBreaker {
            enabled,
            threshold: threshold.max(1),
            open_for,
            inner: Mutex::new(Inner {
                state: CircuitState::Closed,
                consecutive_failures: 0,
                opened_at: None,
                trial_in_flight: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current state (an open breaker whose timeout passed reports half-open).
    pub fn state(&self) -> CircuitState {
        let inner = self.lock();
        match inner.state {
            CircuitState::Open
                if inner
                    .opened_at
                    .is_some_and(|t| t.elapsed() >= self.open_for) =>
            {
                CircuitState::HalfOpen
            }
            s => s,
        }
    }

    /// Whether a request may go to the provider now. In half-open state only
    /// one trial request is let through at a time.
    pub fn try_acquire(&self) -> bool {
        if !self.enabled {
            return true;
        }
        let mut inner = self.lock();
        match inner.state {
            CircuitState::Closed => true,
            CircuitState::Open => {
                if inner
                    .opened_at
                    .is_some_and(|t| t.elapsed() >= self.open_for)
                {
                    inner.state = CircuitState::HalfOpen;
                    inner.trial_in_flight = true;
                    true
                } else {
                    false
                }
            }
            CircuitState::HalfOpen => {
                if inner.trial_in_flight {
                    false
                } else {
                    inner.trial_in_flight = true;
                    true
                }
            }
        }
    }

    pub fn on_success(&self) {
        let mut inner = self.lock();
        inner.state = CircuitState::Closed;
        inner.consecutive_failures = 0;
        inner.opened_at = None;
        inner.trial_in_flight = false;
    }

    /// Records a failed request; returns true when this failure opened the circuit.
    pub fn on_failure(&self) -> bool {
        if !self.enabled {
            return false;
        }
        let mut inner = self.lock();
        inner.trial_in_flight = false;
        inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
        let reopen = inner.state == CircuitState::HalfOpen;
        if reopen
            || (inner.state == CircuitState::Closed && inner.consecutive_failures >= self.threshold)
        {
            inner.state = CircuitState::Open;
            inner.opened_at = Some(Instant::now());
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_half_opens_after_timeout() {
        let b = CircuitBreaker::new(true, 2, Duration::ZERO);
        assert!(b.try_acquire());
        assert!(!b.on_failure());
        assert!(b.on_failure());
        // zero timeout: immediately eligible for one trial
        assert_eq!(b.state(), CircuitState::HalfOpen);
        assert!(b.try_acquire());
        assert!(!b.try_acquire(), "only one trial at a time");
        assert!(b.on_failure(), "a failed trial reopens");
        assert!(b.try_acquire());
        b.on_success();
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[test]
    fn stays_open_until_timeout() {
        let b = CircuitBreaker::new(true, 1, Duration::from_secs(3600));
        b.on_failure();
        assert_eq!(b.state(), CircuitState::Open);
        assert!(!b.try_acquire());
    }

    #[test]
    fn disabled_breaker_never_opens() {
        let b = CircuitBreaker::new(false, 1, Duration::from_secs(3600));
        for _ in 0..10 {
            b.on_failure();
        }
        assert!(b.try_acquire());
        assert_eq!(b.state(), CircuitState::Closed);
    }
}
