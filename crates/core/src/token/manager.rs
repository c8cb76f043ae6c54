//! The token cache of one server: memory hit without I/O, single-flight
//! fetches, retries, circuit breaker, validation, and background refresh.

use super::jwt::{unverified_expiry, JwtValidator};
use crate::config::Resilience;
use crate::credentials::{FetchError, TokenSource};
use crate::error::{Error, ErrorCode};
use crate::metrics::{ErrorLabels, Metrics, ServerStatusLabels};
use crate::resilience::{backoff_delay, CircuitBreaker, CircuitState};
use crate::secret::Secret;
use crate::shared_cache::{SharedToken, SharedTokenStore};
use futures::future::{BoxFuture, FutureExt, Shared};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Lifetime assumed when a provider gives neither `expires_in` nor a JWT `exp`.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// A token is no longer handed out this close to its expiry (at most a tenth of its lifetime).
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// How long the cluster lock on a token request is held at most.
const SHARED_LOCK_TTL: Duration = Duration::from_secs(30);
/// How long an instance waits for the token another instance is fetching.
const SHARED_LOCK_WAIT: Duration = Duration::from_secs(10);
/// How often it looks for that token meanwhile.
const SHARED_POLL: Duration = Duration::from_millis(50);
/// Longest pause between two background refresh attempts after failures.
const MAX_REFRESH_BACKOFF: Duration = Duration::from_secs(60);

/// A cached token and its timing.
#[derive(Debug)]
pub struct CachedToken {
    pub value: Secret,
    pub obtained_at: Instant,
    pub expires_at: Instant,
    /// Wall-clock expiry (seconds since the Unix epoch), for status reports.
    pub expires_at_unix: u64,
    /// When the background refresher replaces it.
    pub refresh_at: Instant,
    /// Until when callers may use it.
    pub usable_until: Instant,
}

impl CachedToken {
    fn new(value: Secret, lifetime: Duration, refresh_buffer: Duration) -> Self {
        let now = Instant::now();
        let margin = EXPIRY_MARGIN.min(lifetime / 10);
        let buffer = refresh_buffer.min(lifetime / 2);
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        CachedToken {
            value,
            obtained_at: now,
            expires_at: now + lifetime,
            expires_at_unix: (unix_now + lifetime).as_secs(),
            refresh_at: now + lifetime - buffer,
            usable_until: now + lifetime - margin,
        }
    }

    pub fn is_usable(&self, now: Instant) -> bool {
        now < self.usable_until
    }

    /// Time left before expiry.
    pub fn expires_in(&self) -> Duration {
        self.expires_at.saturating_duration_since(Instant::now())
    }
}

/// Where a caller's token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenOrigin {
    Cache,
    Provider,
}

/// This server's metric handles (shared with the Prometheus registry), so
/// the hot path increments an atomic without a label lookup.
#[derive(Debug)]
pub struct TokenStats {
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub acquisitions_ok: Counter,
    pub acquisitions_failed: Counter,
    pub retries: Counter,
    pub circuit_rejections: Counter,
    acquisition_duration: Histogram,
}

impl TokenStats {
    fn new(metrics: &Metrics, server: &str) -> Self {
        let labels = Metrics::server(server);
        let outcome = |status: &str| {
            metrics
                .token_acquisitions
                .get_or_create(&ServerStatusLabels {
                    server: server.to_owned(),
                    status: status.to_owned(),
                })
                .clone()
        };
        TokenStats {
            cache_hits: metrics.cache_hits.get_or_create(&labels).clone(),
            cache_misses: metrics.cache_misses.get_or_create(&labels).clone(),
            acquisitions_ok: outcome("success"),
            acquisitions_failed: outcome("failure"),
            retries: metrics.retry_attempts.get_or_create(&labels).clone(),
            circuit_rejections: metrics
                .circuit_breaker_rejections
                .get_or_create(&labels)
                .clone(),
            acquisition_duration: metrics
                .token_acquisition_duration
                .get_or_create(&labels)
                .clone(),
        }
    }
}

/// What a [`TokenManager`] is made of.
pub struct ManagerParts {
    pub server: String,
    pub source: TokenSource,
    pub validator: Option<JwtValidator>,
    pub resilience: Resilience,
    pub refresh_buffer: Duration,
    pub runtime: tokio::runtime::Handle,
    pub metrics: Arc<Metrics>,
    /// The cluster's token cache (`CacheType: redis`).
    pub shared: Option<SharedTokenStore>,
}

/// Told of every new token (header mode pushes it to the DICOMweb plugin).
pub type TokenListener = Box<dyn Fn(&CachedToken) + Send + Sync>;

type SharedFetch = Shared<BoxFuture<'static, Result<Arc<CachedToken>, Error>>>;

pub struct TokenManager {
    server: String,
    source: TokenSource,
    validator: Option<JwtValidator>,
    resilience: Resilience,
    breaker: CircuitBreaker,
    refresh_buffer: Duration,
    runtime: tokio::runtime::Handle,
    current: RwLock<Option<Arc<CachedToken>>>,
    in_flight: Mutex<Option<SharedFetch>>,
    changed: tokio::sync::Notify,
    last_error: Mutex<Option<Error>>,
    listeners: Arc<Mutex<Vec<TokenListener>>>,
    /// The cluster's token cache (`CacheType: redis`).
    shared: Option<SharedTokenStore>,
    /// Expiry of the last token dropped by [`Self::invalidate`]: a shared token
    /// must be newer than it to be used.
    dropped_expiry: Mutex<Option<u64>>,
    metrics: Arc<Metrics>,
    pub stats: TokenStats,
}

impl TokenManager {
    pub fn new(parts: ManagerParts) -> Self {
        let ManagerParts {
            server,
            source,
            validator,
            resilience,
            refresh_buffer,
            runtime,
            metrics,
            shared,
        } = parts;
        let breaker = CircuitBreaker::new(
            resilience.circuit_breaker_enabled,
            resilience.circuit_breaker_failure_threshold,
            resilience.circuit_breaker_timeout,
        );
        let stats = TokenStats::new(&metrics, &server);
        TokenManager {
            server,
            source,
            validator,
            resilience,
            breaker,
            refresh_buffer,
            runtime,
            current: RwLock::new(None),
            in_flight: Mutex::new(None),
            changed: tokio::sync::Notify::new(),
            last_error: Mutex::new(None),
            listeners: Arc::new(Mutex::new(Vec::new())),
            shared,
            dropped_expiry: Mutex::new(None),
            stats,
            metrics,
        }
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    /// The cached token if it is usable: no I/O, no await, no lock contention
    /// beyond a read lock. This is the hot path of every DICOMweb request.
    pub fn cached(&self) -> Option<Arc<CachedToken>> {
        let guard = self.current.read().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(token) if token.is_usable(Instant::now()) => {
                self.stats.cache_hits.inc();
                Some(Arc::clone(token))
            }
            _ => None,
        }
    }

    /// The cached token whatever its state, for status reports.
    pub fn peek(&self) -> Option<Arc<CachedToken>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A usable token: from the cache, or from one shared request to the provider.
    pub async fn token(self: &Arc<Self>) -> Result<(Arc<CachedToken>, TokenOrigin), Error> {
        if let Some(token) = self.cached() {
            return Ok((token, TokenOrigin::Cache));
        }
        self.stats.cache_misses.inc();
        let fetch = match self.join_or_start_fetch() {
            Ok(token) => return Ok((token, TokenOrigin::Cache)),
            Err(fetch) => fetch,
        };
        fetch.await.map(|t| (t, TokenOrigin::Provider))
    }

    /// Calls `listener` with every token this manager obtains from now on
    /// (on a blocking thread of the runtime, after the token is cached).
    pub fn on_new_token(&self, listener: TokenListener) {
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(listener);
    }

    /// Drops the cached token and fetches a new one (joining a fetch already in flight).
    pub async fn force_refresh(self: &Arc<Self>) -> Result<Arc<CachedToken>, Error> {
        self.invalidate();
        let fetch = {
            let mut slot = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            match slot.as_ref() {
                Some(fetch) => fetch.clone(),
                None => self.start_fetch(&mut slot),
            }
        };
        fetch.await
    }

    /// Drops the cached token (the remote answered 401), so the next caller fetches.
    pub fn invalidate(&self) {
        let dropped = self
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(dropped) = dropped {
            // The shared cache may still hold this (refused) token: only a newer
            // one is taken from it. (Not deleted there: a delete racing with the
            // store of a fresh token could remove the fresh one.)
            *self
                .dropped_expiry
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(dropped.expires_at_unix);
        }
        self.changed.notify_waiters();
    }

    /// Counts an error in `dicomweb_oauth_errors_total`.
    fn count_error(&self, error: &Error) {
        let code = error.code();
        self.metrics
            .errors
            .get_or_create(&ErrorLabels {
                server: self.server.clone(),
                error_code: code.as_str().to_owned(),
                category: code.category().to_string(),
            })
            .inc();
    }

    pub fn circuit_state(&self) -> CircuitState {
        self.breaker.state()
    }

    pub fn last_error(&self) -> Option<Error> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Joins the request in flight, or starts one. `Ok` when, under the lock,
    /// the cache turned out to hold a token after all (a fetch just finished).
    fn join_or_start_fetch(self: &Arc<Self>) -> Result<Arc<CachedToken>, SharedFetch> {
        let mut slot = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(fetch) = slot.as_ref() {
            return Err(fetch.clone());
        }
        if let Some(token) = self.cached() {
            return Ok(token);
        }
        Err(self.start_fetch(&mut slot))
    }

    /// Starts a fetch and records it in the (locked) in-flight slot.
    fn start_fetch(self: &Arc<Self>, slot: &mut Option<SharedFetch>) -> SharedFetch {
        let me = Arc::clone(self);
        // Spawned, so that the request completes (and is cached) even if every caller gives up.
        let task = self.runtime.spawn(async move {
            let result = me.acquire().await;
            *me.in_flight.lock().unwrap_or_else(|p| p.into_inner()) = None;
            result
        });
        let fetch = async move {
            task.await.unwrap_or_else(|_| {
                Err(Error::coded(
                    ErrorCode::Int001,
                    "the token request task was cancelled",
                ))
            })
        }
        .boxed()
        .shared();
        *slot = Some(fetch.clone());
        fetch
    }

    /// One acquisition: circuit breaker, attempts with backoff, validation, caching.
    async fn acquire(&self) -> Result<Arc<CachedToken>, Error> {
        if !self.breaker.try_acquire() {
            self.stats.circuit_rejections.inc();
            return Err(Error::coded(
                ErrorCode::Auth003,
                format!(
                    "identity provider of server '{}' is failing: circuit breaker open, not calling it",
                    self.server
                ),
            ));
        }
        let started = Instant::now();
        let result = self.obtain().await;
        self.stats
            .acquisition_duration
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(token) => {
                self.breaker.on_success();
                self.stats.acquisitions_ok.inc();
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
                tracing::info!(
                    server = %self.server,
                    event = "auth_success",
                    operation = "token_acquisition",
                    expires_in_s = token.expires_in().as_secs(),
                    "token acquired"
                );
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&token));
                self.changed.notify_waiters();
                if !self
                    .listeners
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_empty()
                {
                    let (listeners, token) = (Arc::clone(&self.listeners), Arc::clone(&token));
                    self.runtime.spawn_blocking(move || {
                        for listener in listeners.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                            listener(&token);
                        }
                    });
                }
                Ok(token)
            }
            Err(error) => {
                if self.breaker.on_failure() {
                    tracing::warn!(server = %self.server, "circuit breaker opened after repeated token failures");
                }
                self.stats.acquisitions_failed.inc();
                self.count_error(&error);
                let event = match error.code() {
                    ErrorCode::Tok004 => "token_validation_failure",
                    ErrorCode::Net003 => "tls_error",
                    _ => "auth_failure",
                };
                tracing::warn!(
                    server = %self.server,
                    event,
                    code = %error.code(),
                    operation = "token_acquisition",
                    "token acquisition failed: {error}"
                );
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.clone());
                Err(error)
            }
        }
    }

    /// A new token: from the cluster's shared cache when another instance just
    /// fetched one, else from the provider — by one instance of the cluster at a
    /// time (Redis lock), the others waiting for its token. Any Redis failure
    /// falls back to this instance's own request: Redis never fails a request.
    async fn obtain(&self) -> Result<Arc<CachedToken>, Error> {
        let Some(store) = &self.shared else {
            return self.attempts().await;
        };
        let ours = self.peek().map(|t| t.expires_at_unix).or(*self
            .dropped_expiry
            .lock()
            .unwrap_or_else(|p| p.into_inner()));
        if let Some(token) = self.shared_token(store, ours).await {
            return Ok(token);
        }
        match store.try_lock(&self.server, SHARED_LOCK_TTL).await {
            Ok(Some(lock)) => {
                // Whoever held the lock before may have stored a token meanwhile.
                let result = match self.shared_token(store, ours).await {
                    Some(token) => Ok(token),
                    None => {
                        let result = self.attempts().await;
                        if let Ok(token) = &result {
                            let shared = SharedToken {
                                value: token.value.clone(),
                                expires_at_unix: token.expires_at_unix,
                            };
                            // The entry ends when callers stop using the token.
                            let ttl = token.usable_until.saturating_duration_since(Instant::now());
                            let _ = store.put(&self.server, &shared, ttl).await;
                        }
                        result
                    }
                };
                let _ = store.unlock(&self.server, lock).await;
                result
            }
            Ok(None) => {
                // Another instance is fetching: wait (bounded) for its token.
                let deadline = Instant::now() + SHARED_LOCK_WAIT;
                while Instant::now() < deadline && store.available() {
                    tokio::time::sleep(SHARED_POLL).await;
                    if let Some(token) = self.shared_token(store, ours).await {
                        return Ok(token);
                    }
                }
                self.attempts().await
            }
            Err(_) => self.attempts().await,
        }
    }

    /// The shared token, if it is newer than `ours` and not due for refresh yet.
    async fn shared_token(
        &self,
        store: &SharedTokenStore,
        ours: Option<u64>,
    ) -> Option<Arc<CachedToken>> {
        let shared = store.get(&self.server).await.ok()??;
        if ours.is_some_and(|expiry| shared.expires_at_unix <= expiry) {
            return None;
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        let lifetime = Duration::from_secs(shared.expires_at_unix.saturating_sub(now));
        let token = CachedToken::new(shared.value, lifetime, self.refresh_buffer);
        (token.refresh_at > Instant::now()).then(|| Arc::new(token))
    }

    async fn attempts(&self) -> Result<Arc<CachedToken>, Error> {
        let max = self.resilience.retry_max_attempts.max(1);
        let mut attempt = 1;
        loop {
            match self.source.fetch().await {
                Ok(fetched) => {
                    let value = fetched.access_token;
                    if let Some(validator) = &self.validator {
                        validator.validate(value.expose()).await?;
                    }
                    let lifetime = fetched
                        .expires_in
                        .or_else(|| {
                            let exp = unverified_expiry(value.expose())?;
                            let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
                            Some(Duration::from_secs(exp.saturating_sub(now)))
                        })
                        .unwrap_or(DEFAULT_LIFETIME);
                    return Ok(Arc::new(CachedToken::new(
                        value,
                        lifetime,
                        self.refresh_buffer,
                    )));
                }
                Err(FetchError {
                    error,
                    retryable,
                    retry_after,
                }) => {
                    if !retryable || attempt >= max {
                        return Err(error);
                    }
                    let delay =
                        backoff_delay(&self.resilience, attempt, rand::random(), retry_after);
                    tracing::info!(
                        server = %self.server,
                        attempt,
                        delay_ms = delay.as_millis() as u64,
                        "token request failed ({error}); retrying"
                    );
                    self.stats.retries.inc();
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Keeps a fresh token in the cache: fetches one at start, then replaces
    /// it `TokenRefreshBufferSeconds` before expiry, so callers never wait
    /// for the provider while a token is valid. Runs until the task is aborted.
    pub async fn run_refresher(self: Arc<Self>) {
        let mut backoff = Duration::from_secs(1);
        let mut failing = false;
        loop {
            let changed = self.changed.notified();
            let due = self.peek().map(|t| t.refresh_at);
            if let Some(due) = due {
                let now = Instant::now();
                if due > now {
                    tokio::select! {
                        _ = tokio::time::sleep_until(due.into()) => {}
                        _ = changed => continue,
                    }
                }
            }
            let fetch = match self.join_or_start_fetch_forced() {
                Some(fetch) => fetch,
                None => continue,
            };
            match fetch.await {
                Ok(_) => {
                    if failing {
                        tracing::info!(server = %self.server, "background token refresh recovered");
                    }
                    failing = false;
                    backoff = Duration::from_secs(1);
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(
                            server = %self.server,
                            code = "TOK-006",
                            "[TOK-006] background token refresh failed: {error}"
                        );
                    }
                    failing = true;
                    // Retry sooner than the token expires, but do not hammer the provider.
                    let remaining = self
                        .peek()
                        .map(|t| t.usable_until.saturating_duration_since(Instant::now()) / 2)
                        .unwrap_or(backoff);
                    let pause = backoff.min(remaining).max(Duration::from_millis(100));
                    backoff = (backoff * 2).min(MAX_REFRESH_BACKOFF);
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// Like [`Self::join_or_start_fetch`] but fetches even when the cache holds a
    /// usable token (that is what refreshing means). `None` if a token newer than
    /// the one scheduled for refresh arrived meanwhile.
    fn join_or_start_fetch_forced(self: &Arc<Self>) -> Option<SharedFetch> {
        {
            let slot = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(fetch) = slot.as_ref() {
                return Some(fetch.clone());
            }
        }
        if self.peek().is_some_and(|t| t.refresh_at > Instant::now()) {
            return None;
        }
        let mut slot = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(fetch) = slot.as_ref() {
            return Some(fetch.clone());
        }
        Some(self.start_fetch(&mut slot))
    }
}
