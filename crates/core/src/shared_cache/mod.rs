//! The Redis store behind `CacheType: "redis"` (SPEC 4.5, issue 7, ADR 0008).
//!
//! [`SharedTokenStore`] keeps one token per configured server in Redis, so
//! that the Orthanc instances of a cluster share it, and a lock per server so
//! that only one of them fetches a new token when it expires:
//!
//! - `{prefix}token:{server}` — the token, encrypted and authenticated with
//!   AES-256-GCM (the Redis key is the associated data), with a TTL that the
//!   caller makes end before the token's own expiry;
//! - `{prefix}lock:{server}` — `SET NX PX` with a random value, released only
//!   by its owner (compare-and-delete in a Lua script).
//!
//! Redis is an optimisation, never a dependency: every operation is bounded
//! by [`StoreConfig::timeout`]; a failure or a timeout marks the store
//! unavailable (one warning per outage) and, until a probe succeeds, the
//! operations fail at once without I/O, one probe at most every second. The
//! caller then uses its local cache and its own token requests.
//!
//! Nothing here logs or formats a token, the encryption key or the Redis
//! URL (which may hold a password).

mod codec;

use crate::error::{Error, ErrorCode};
use crate::secret::{Secret, REDACTED};
use codec::Codec;
use futures::future::{BoxFuture, FutureExt, Shared};
use redis::aio::ConnectionLike;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, FromRedisValue, RedisError, Value};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use zeroize::Zeroizing;

/// Default `RedisKeyPrefix`.
pub const DEFAULT_KEY_PREFIX: &str = "orthanc:dicomweb-oauth:";
/// Default bound on one operation (connection wait and command included).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);
/// Default bound on establishing a connection (TCP, TLS, AUTH, SELECT). A
/// connection attempt runs in a task of its own and may outlive the
/// operation that started it, so a slow TLS handshake still completes.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// During an outage, at most one operation per interval goes to Redis.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Compare-and-delete: the lock is deleted only if it still holds our value.
const UNLOCK_SCRIPT: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/// An AES-256 key (32 bytes), wiped from memory when dropped; prints redacted.
#[derive(Clone)]
pub struct EncryptionKey(Zeroizing<[u8; 32]>);

impl EncryptionKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        EncryptionKey(Zeroizing::new(bytes))
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncryptionKey({REDACTED})")
    }
}

/// How to reach Redis and protect what is stored there.
#[derive(Clone)]
pub struct StoreConfig {
    /// `redis://[[user]:password@]host[:port][/db]` or `rediss://…` (TLS).
    pub url: Secret,
    /// Prefix of every key (`RedisKeyPrefix`), default [`DEFAULT_KEY_PREFIX`].
    pub key_prefix: String,
    /// `None` only when `CacheEncryptionKey` is explicitly `"none"`.
    pub encryption_key: Option<EncryptionKey>,
    /// Bound on each operation, default [`DEFAULT_TIMEOUT`].
    pub timeout: Duration,
    /// Bound on establishing a connection, default [`DEFAULT_CONNECT_TIMEOUT`].
    pub connect_timeout: Duration,
    /// For `rediss://`: a PEM file of the CA certificates to trust instead of
    /// the system's. `None`: the system trust store.
    pub ca_file: Option<PathBuf>,
}

impl StoreConfig {
    /// A configuration with the default prefix and timeouts.
    pub fn new(url: Secret, encryption_key: Option<EncryptionKey>) -> Self {
        StoreConfig {
            url,
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            encryption_key,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            ca_file: None,
        }
    }

    /// Reads `CacheEncryptionKey`: the base64 encoding (standard or URL-safe,
    /// padded or not) of 32 bytes, e.g. `openssl rand -base64 32`; `"none"`
    /// (any case) turns encryption off and gives `Ok(None)`. Anything else is
    /// CFG-002, without the value in the message.
    pub fn parse_encryption_key(text: &str) -> Result<Option<EncryptionKey>, Error> {
        use base64::engine::general_purpose::{
            STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD,
        };
        use base64::Engine as _;
        let text = text.trim();
        if text.eq_ignore_ascii_case("none") {
            return Ok(None);
        }
        let invalid = || {
            Error::coded(
                ErrorCode::Cfg002,
                "CacheEncryptionKey must be the base64 encoding of 32 random bytes \
                 (e.g. the output of `openssl rand -base64 32`), or \"none\" to store \
                 tokens in Redis unencrypted",
            )
        };
        if text.is_empty() {
            return Err(invalid());
        }
        for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
            let Ok(bytes) = engine.decode(text).map(Zeroizing::new) else {
                continue;
            };
            let Ok(array) = <[u8; 32]>::try_from(bytes.as_slice()) else {
                return Err(invalid());
            };
            return Ok(Some(EncryptionKey::from_bytes(array)));
        }
        Err(invalid())
    }
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &self.url)
            .field("key_prefix", &self.key_prefix)
            .field(
                "encryption",
                &if self.encryption_key.is_some() {
                    "aes-256-gcm"
                } else {
                    "none"
                },
            )
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// A token as shared through Redis.
#[derive(Debug, Clone)]
pub struct SharedToken {
    pub value: Secret,
    /// Wall-clock expiry, seconds since the Unix epoch.
    pub expires_at_unix: u64,
}

/// Proof of holding a server's lock; give it back to [`SharedTokenStore::unlock`].
pub struct LockToken {
    value: String,
}

impl fmt::Debug for LockToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LockToken(..)")
    }
}

/// Why a Redis operation failed. The messages hold no secret (passwords
/// are scrubbed from what the Redis client reports).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store is in an outage and this was not the moment to probe it:
    /// failed at once, without I/O.
    #[error("Redis unavailable (probed again at most once per second)")]
    Unavailable,
    /// No answer within the operation's timeout.
    #[error("Redis did not answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// TLS handshake or certificate verification failed.
    #[error("Redis TLS error: {0}")]
    Tls(String),
    /// Anything else: connection refused or dropped, authentication, an error reply.
    #[error("Redis error: {0}")]
    Redis(String),
}

impl StoreError {
    pub fn code(&self) -> ErrorCode {
        match self {
            StoreError::Timeout(_) => ErrorCode::Net001,
            StoreError::Tls(_) => ErrorCode::Net003,
            StoreError::Unavailable | StoreError::Redis(_) => ErrorCode::Net002,
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Error::coded(e.code(), e.to_string())
    }
}

/// The store's health, for `/dicomweb-oauth/status` and metrics.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoreState {
    /// False during an outage.
    pub available: bool,
    /// Outages since start (each counted once, when it begins).
    pub outages: u64,
    /// The error that began the current outage (`None` while available).
    pub last_error: Option<String>,
    /// Entries read from Redis and not used: tampered with, truncated,
    /// written with another key, or not in a known format.
    pub rejected_entries: u64,
}

/// Client of the shared token cache. Cheap to clone (one shared connection).
#[derive(Clone)]
pub struct SharedTokenStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    codec: Codec,
    prefix: String,
    timeout: Duration,
    connect_timeout: Duration,
    /// `scheme://host:port/db`, without credentials: for Debug and logs.
    endpoint: String,
    scrub: Arc<Scrubber>,
    slot: Mutex<Slot>,
    next_connection: AtomicU64,
    available: AtomicBool,
    outages: AtomicU64,
    rejected: AtomicU64,
    health: Mutex<Health>,
}

#[derive(Default)]
struct Health {
    /// During an outage: the earliest time the next probe may go out.
    next_probe: Option<Instant>,
    outage_started: Option<Instant>,
    last_error: Option<String>,
}

type Connecting = Shared<BoxFuture<'static, Result<Connection, StoreError>>>;

enum Slot {
    Idle,
    Connecting { id: u64, attempt: Connecting },
    Ready(Connection),
}

#[derive(Clone)]
struct Connection {
    id: u64,
    con: MultiplexedConnection,
}

/// Removes secrets (the password, the URL) from messages of the Redis client.
struct Scrubber(Vec<Zeroizing<String>>);

impl Scrubber {
    fn scrub(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for secret in &self.0 {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), REDACTED);
            }
        }
        text
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn invalid_url(detail: &str) -> Error {
    Error::coded(
        ErrorCode::Cfg002,
        format!(
            "RedisUrl is invalid: {detail} (expected redis://[[user]:password@]host[:port][/db] \
             or rediss://…; the value is not shown since it may hold a password)"
        ),
    )
}

impl SharedTokenStore {
    /// Checks the configuration and prepares the client; no network I/O (a
    /// `ca_file` is read here). Needs no runtime: the connection is made on
    /// first use, on the tokio runtime of that call.
    pub fn new(config: StoreConfig) -> Result<Self, Error> {
        let parsed = url::Url::parse(config.url.expose()).map_err(|_| invalid_url("not a URL"))?;
        let tls = match parsed.scheme() {
            "redis" => false,
            "rediss" => true,
            _ => return Err(invalid_url("the scheme must be redis:// or rediss://")),
        };
        let host = match parsed.host_str() {
            Some(h) if !h.is_empty() => h.to_owned(),
            _ => return Err(invalid_url("no host")),
        };
        let db = match parsed.path().trim_start_matches('/') {
            "" => 0,
            db => db
                .parse::<u32>()
                .map_err(|_| invalid_url("the path must be a database number"))?,
        };
        if parsed.fragment().is_some() {
            // redis-rs reads `#insecure` as "skip certificate verification".
            return Err(invalid_url(
                "a #fragment is not supported (certificate verification cannot be turned off)",
            ));
        }
        if config.timeout.is_zero() || config.connect_timeout.is_zero() {
            return Err(Error::coded(
                ErrorCode::Cfg002,
                "the Redis timeouts must be greater than zero",
            ));
        }
        let port = parsed.port().unwrap_or(6379);
        let endpoint = format!("{}://{host}:{port}/{db}", parsed.scheme());

        let mut secrets = vec![Zeroizing::new(config.url.expose().to_owned())];
        if let Some(password) = parsed.password() {
            secrets.push(Zeroizing::new(password.to_owned()));
            if let Ok(decoded) = percent_decode(password) {
                secrets.push(Zeroizing::new(decoded));
            }
        }
        secrets.retain(|s| !s.is_empty());
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));

        let client = match (&config.ca_file, tls) {
            (Some(_), false) => {
                return Err(Error::coded(
                    ErrorCode::Cfg002,
                    "a Redis CA file is only used with a rediss:// RedisUrl",
                ))
            }
            (Some(path), true) => {
                let pem = std::fs::read(path).map_err(|e| {
                    Error::coded(
                        ErrorCode::Cfg002,
                        format!("cannot read the Redis CA file {}: {e}", path.display()),
                    )
                })?;
                redis::Client::build_with_tls(
                    config.url.expose(),
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem),
                    },
                )
            }
            (None, _) => redis::Client::open(config.url.expose()),
        }
        .map_err(|_| invalid_url("the Redis client does not accept it"))?;

        Ok(SharedTokenStore {
            inner: Arc::new(Inner {
                client,
                codec: Codec::new(config.encryption_key.as_ref()),
                prefix: config.key_prefix.clone(),
                timeout: config.timeout,
                connect_timeout: config.connect_timeout,
                endpoint,
                scrub: Arc::new(Scrubber(secrets)),
                slot: Mutex::new(Slot::Idle),
                next_connection: AtomicU64::new(1),
                available: AtomicBool::new(true),
                outages: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
                health: Mutex::new(Health::default()),
            }),
        })
    }

    /// The Redis key of a server's token.
    pub fn token_key(&self, server: &str) -> String {
        format!("{}token:{server}", self.inner.prefix)
    }

    /// The Redis key of a server's lock.
    pub fn lock_key(&self, server: &str) -> String {
        format!("{}lock:{server}", self.inner.prefix)
    }

    /// Whether entries are encrypted (false only with `CacheEncryptionKey: "none"`).
    pub fn encrypts(&self) -> bool {
        self.inner.codec.encrypts()
    }

    /// The server's shared token, if Redis holds a valid, authentic, unexpired
    /// one. An entry that fails authentication or is not in a known format is
    /// `Ok(None)` with a warning (the caller fetches a new token and `put`s it).
    pub async fn get(&self, server: &str) -> Result<Option<SharedToken>, StoreError> {
        let key = self.token_key(server);
        let mut cmd = redis::cmd("GET");
        cmd.arg(&key);
        let decoded = match self.run(cmd).await? {
            Value::Nil => return Ok(None),
            // Something other than a string under our key: not ours to read
            // (the next `put` overwrites it).
            Value::ServerError(_) => Err(codec::Rejection::UnknownFormat),
            value => {
                let stored = Zeroizing::new(convert::<Vec<u8>>(value)?);
                self.inner.codec.decode(&key, &stored)
            }
        };
        match decoded {
            Ok((value, expires_at_unix)) => {
                if Duration::from_secs(expires_at_unix) <= unix_now() {
                    return Ok(None);
                }
                Ok(Some(SharedToken {
                    value,
                    expires_at_unix,
                }))
            }
            Err(rejection) => {
                self.inner.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    server = %server,
                    event = "shared_token_rejected",
                    operation = "shared_cache",
                    reason = rejection.as_str(),
                    "token entry in Redis rejected; a new token will be fetched"
                );
                Ok(None)
            }
        }
    }

    /// Stores the server's token for `ttl` (`SET … PX`), capped at the token's
    /// remaining lifetime. Nothing is stored if that leaves less than 1 ms.
    pub async fn put(
        &self,
        server: &str,
        token: &SharedToken,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let remaining = Duration::from_secs(token.expires_at_unix).saturating_sub(unix_now());
        let ttl = millis(ttl.min(remaining));
        if ttl == 0 {
            return Ok(());
        }
        let key = self.token_key(server);
        let stored = Zeroizing::new(self.inner.codec.encode(
            &key,
            &token.value,
            token.expires_at_unix,
        ));
        let mut cmd = redis::cmd("SET");
        cmd.arg(&key).arg(stored.as_bytes()).arg("PX").arg(ttl);
        convert::<()>(self.run(cmd).await?)
    }

    /// Deletes the server's token (e.g. after the remote rejected it with 401,
    /// so that no instance keeps using it).
    pub async fn remove(&self, server: &str) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.token_key(server));
        convert::<i64>(self.run(cmd).await?).map(|_| ())
    }

    /// Takes the server's lock for `ttl` (`SET NX PX` with a random value):
    /// `Some` if this caller now holds it, `None` if someone else does.
    pub async fn try_lock(
        &self,
        server: &str,
        ttl: Duration,
    ) -> Result<Option<LockToken>, StoreError> {
        use rand::RngCore;
        let mut random = [0u8; 16];
        rand::rng().fill_bytes(&mut random);
        let value: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.lock_key(server))
            .arg(&value)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl).max(1));
        let reply = convert::<Option<String>>(self.run(cmd).await?)?;
        Ok(reply.map(|_| LockToken { value }))
    }

    /// Releases the lock if this caller still holds it (compare-and-delete,
    /// atomic in a Lua script): `true` if it was released, `false` if it had
    /// expired or belongs to someone else by now (then it is left alone).
    pub async fn unlock(&self, server: &str, lock: LockToken) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(UNLOCK_SCRIPT)
            .arg(1)
            .arg(self.lock_key(server))
            .arg(&lock.value);
        match self.run(cmd).await? {
            // The lock key holds something else than a string: not our lock.
            Value::ServerError(_) => Ok(false),
            value => Ok(convert::<i64>(value)? == 1),
        }
    }

    /// False during an outage.
    pub fn available(&self) -> bool {
        self.inner.available.load(Ordering::Acquire)
    }

    pub fn state(&self) -> StoreState {
        let health = lock(&self.inner.health);
        StoreState {
            available: self.available(),
            outages: self.inner.outages.load(Ordering::Relaxed),
            last_error: health.last_error.clone(),
            rejected_entries: self.inner.rejected.load(Ordering::Relaxed),
        }
    }

    /// Runs one command within the timeout, with the outage bookkeeping.
    ///
    /// An error reply is a failure (OOM, READONLY, NOAUTH… Redis cannot serve
    /// us), except WRONGTYPE, which says that a key holds something that is
    /// not ours and is passed on as `Value::ServerError`.
    async fn run(&self, cmd: redis::Cmd) -> Result<Value, StoreError> {
        let probe = self.admit()?;
        let mut used = None;
        let attempt = async {
            let mut retried = false;
            loop {
                let (connection, fresh) = self.connection().await?;
                used = Some(connection.id);
                let mut con = connection.con.clone();
                match con.req_packed_command(&cmd).await {
                    Ok(Value::ServerError(e)) if e.code() == "WRONGTYPE" => {
                        return Ok(Value::ServerError(e));
                    }
                    Ok(Value::ServerError(e)) => {
                        return Err(StoreError::Redis(self.inner.scrub.scrub(&e.to_string())));
                    }
                    Ok(value) => return Ok(value),
                    Err(e) => {
                        self.discard(connection.id);
                        // A connection kept from before may have died in the
                        // meantime (Redis restarted): one retry on a new one.
                        if !fresh && !retried && (e.is_io_error() || e.is_connection_dropped()) {
                            retried = true;
                            continue;
                        }
                        return Err(self.classify(&e));
                    }
                }
            }
        };
        let result = match tokio::time::timeout(self.inner.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => {
                if let Some(id) = used {
                    self.discard(id);
                }
                Err(StoreError::Timeout(self.inner.timeout))
            }
        };
        match &result {
            Ok(_) => self.on_success(probe),
            Err(e) => self.on_failure(e),
        }
        result
    }

    /// Whether an operation may go to Redis now: `Ok(false)` when available,
    /// `Ok(true)` for the one probe per interval during an outage.
    fn admit(&self) -> Result<bool, StoreError> {
        if self.available() {
            return Ok(false);
        }
        let mut health = lock(&self.inner.health);
        if self.available() {
            return Ok(false);
        }
        let now = Instant::now();
        match health.next_probe {
            Some(at) if now < at => Err(StoreError::Unavailable),
            _ => {
                health.next_probe = Some(now + PROBE_INTERVAL);
                Ok(true)
            }
        }
    }

    fn on_success(&self, probe: bool) {
        // Only a probe ends an outage: an operation that began before it and
        // happened to succeed says nothing about Redis now.
        if !probe {
            return;
        }
        let mut health = lock(&self.inner.health);
        if !self.inner.available.swap(true, Ordering::AcqRel) {
            let outage = health
                .outage_started
                .take()
                .map(|t| t.elapsed())
                .unwrap_or_default();
            health.next_probe = None;
            health.last_error = None;
            tracing::info!(
                event = "redis_available",
                operation = "shared_cache",
                endpoint = %self.inner.endpoint,
                outage_ms = millis(outage),
                "Redis available again, using shared tokens"
            );
        }
    }

    fn on_failure(&self, error: &StoreError) {
        if *error == StoreError::Unavailable {
            return;
        }
        let mut health = lock(&self.inner.health);
        let now = Instant::now();
        health.next_probe = Some(now + PROBE_INTERVAL);
        if self.inner.available.swap(false, Ordering::AcqRel) {
            self.inner.outages.fetch_add(1, Ordering::Relaxed);
            health.outage_started = Some(now);
            health.last_error = Some(error.to_string());
            tracing::warn!(
                event = "redis_unavailable",
                operation = "shared_cache",
                endpoint = %self.inner.endpoint,
                code = %error.code(),
                error = %error,
                "Redis unavailable, falling back to local tokens"
            );
        }
    }

    /// The current connection, or one being made (joined, or started in a
    /// task of its own that outlives this call if need be). The flag tells
    /// whether it was made for this call.
    async fn connection(&self) -> Result<(Connection, bool), StoreError> {
        let attempt = {
            let mut slot = lock(&self.inner.slot);
            match &*slot {
                Slot::Ready(connection) => return Ok((connection.clone(), false)),
                Slot::Connecting { attempt, .. } => attempt.clone(),
                Slot::Idle => {
                    let id = self.inner.next_connection.fetch_add(1, Ordering::Relaxed);
                    let attempt = self.connect(id);
                    *slot = Slot::Connecting {
                        id,
                        attempt: attempt.clone(),
                    };
                    attempt
                }
            }
        };
        attempt.await.map(|connection| (connection, true))
    }

    fn connect(&self, id: u64) -> Connecting {
        let client = self.inner.client.clone();
        let bound = self.inner.connect_timeout;
        let scrub = Arc::clone(&self.inner.scrub);
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(bound))
            .set_response_timeout(Some(bound));
        let task = tokio::spawn(async move {
            let result = match tokio::time::timeout(
                bound,
                client.get_multiplexed_async_connection_with_config(&config),
            )
            .await
            {
                Ok(Ok(con)) => Ok(Connection { id, con }),
                Ok(Err(e)) => Err(classify(&scrub, &e, bound)),
                Err(_) => Err(StoreError::Timeout(bound)),
            };
            if let Some(inner) = weak.upgrade() {
                let mut slot = lock(&inner.slot);
                if matches!(&*slot, Slot::Connecting { id: current, .. } if *current == id) {
                    *slot = match &result {
                        Ok(connection) => Slot::Ready(connection.clone()),
                        Err(_) => Slot::Idle,
                    };
                }
            }
            result
        });
        async move {
            task.await.unwrap_or_else(|_| {
                Err(StoreError::Redis(
                    "the connection task ended early".to_owned(),
                ))
            })
        }
        .boxed()
        .shared()
    }

    /// Forgets connection `id` (after it failed) so the next call makes a new one.
    fn discard(&self, id: u64) {
        let mut slot = lock(&self.inner.slot);
        if matches!(&*slot, Slot::Ready(c) if c.id == id) {
            *slot = Slot::Idle;
        }
    }

    fn classify(&self, e: &RedisError) -> StoreError {
        classify(&self.inner.scrub, e, self.inner.timeout)
    }
}

/// The typed reply (a reply of an unexpected type is an error, not an outage).
fn convert<T: FromRedisValue>(value: Value) -> Result<T, StoreError> {
    redis::from_redis_value(value)
        .map_err(|_| StoreError::Redis("unexpected reply type".to_owned()))
}

fn classify(scrub: &Scrubber, e: &RedisError, timeout: Duration) -> StoreError {
    if e.is_timeout() {
        return StoreError::Timeout(timeout);
    }
    let message = scrub.scrub(&e.to_string());
    let lower = message.to_ascii_lowercase();
    if ["certificate", "tls", "handshake", "invalid peer"]
        .iter()
        .any(|w| lower.contains(w))
    {
        StoreError::Tls(message)
    } else {
        StoreError::Redis(message)
    }
}

/// `%XX` decoding of a URL's password, as the Redis client does it (an
/// invalid sequence is kept as it is).
fn percent_decode(text: &str) -> Result<String, std::string::FromUtf8Error> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|_| bytes[i] == b'%')
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
}

impl fmt::Debug for SharedTokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedTokenStore")
            .field("endpoint", &self.inner.endpoint)
            .field("key_prefix", &self.inner.prefix)
            .field("encrypted", &self.encrypts())
            .field("timeout", &self.inner.timeout)
            .field("available", &self.available())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    const KEY_B64: &str = "q83vEjRWeJASNFZ4kKvN7xI0VniQq83vEjRWeJCrze8=";

    fn config(url: &str) -> StoreConfig {
        StoreConfig::new(
            Secret::new(url),
            StoreConfig::parse_encryption_key(KEY_B64).unwrap(),
        )
    }

    #[test]
    fn parses_encryption_keys_without_echoing_them() {
        let key = StoreConfig::parse_encryption_key(KEY_B64).unwrap().unwrap();
        assert_eq!(
            base64::engine::general_purpose::STANDARD.encode(key.bytes()),
            KEY_B64
        );
        let url_safe = KEY_B64.replace('+', "-").replace('/', "_");
        let unpadded = url_safe.trim_end_matches('=');
        assert!(StoreConfig::parse_encryption_key(unpadded)
            .unwrap()
            .is_some());
        assert!(StoreConfig::parse_encryption_key(" none ")
            .unwrap()
            .is_none());
        assert!(StoreConfig::parse_encryption_key("NONE").unwrap().is_none());
        let short = base64::engine::general_purpose::STANDARD.encode([9u8; 16]);
        for bad in [
            "",
            "not-base64-S3CRET!!",
            short.as_str(),
            "S3CRETS3CRETS3CRET",
        ] {
            let e = StoreConfig::parse_encryption_key(bad).unwrap_err();
            assert_eq!(e.code(), ErrorCode::Cfg002);
            if !bad.is_empty() {
                assert!(!e.to_string().contains(bad));
                assert!(!format!("{e:?}").contains(bad));
            }
        }
        assert_eq!(format!("{key:?}"), "EncryptionKey([REDACTED])");
    }

    #[test]
    fn bad_urls_are_cfg_002_without_the_url() {
        for url in [
            "http://:S3CRET@127.0.0.1:6379",
            "redis://:S3CRET@127.0.0.1:6379/x",
            "redis://:S3CRET@127.0.0.1:6379/0#insecure",
            "rediss://:S3CRET@127.0.0.1:6379/0#insecure",
            "redis://:S3CRET@127.0.0.1:99999",
            "S3CRET",
            "redis+unix:///tmp/S3CRET.sock",
        ] {
            let e = SharedTokenStore::new(config(url)).unwrap_err();
            assert_eq!(e.code(), ErrorCode::Cfg002, "{url}");
            assert!(!e.to_string().contains("S3CRET"), "{e}");
        }
        let mut with_ca = config("redis://127.0.0.1:6379");
        with_ca.ca_file = Some("/nonexistent/ca.pem".into());
        assert_eq!(
            SharedTokenStore::new(with_ca).unwrap_err().code(),
            ErrorCode::Cfg002
        );
        let mut zero = config("redis://127.0.0.1");
        zero.timeout = Duration::ZERO;
        assert!(SharedTokenStore::new(zero).is_err());
    }

    #[test]
    fn new_needs_no_runtime_and_prints_no_secret() {
        let cfg = config("rediss://user:S3CRET%40pw@redis.example:6380/3");
        let printed = format!("{cfg:?}");
        assert!(!printed.contains("S3CRET"), "{printed}");
        assert!(!printed.contains("q83v"), "{printed}");
        let store = SharedTokenStore::new(cfg).unwrap();
        let printed = format!("{store:?}");
        assert!(!printed.contains("S3CRET"), "{printed}");
        assert!(
            printed.contains("rediss://redis.example:6380/3"),
            "{printed}"
        );
        assert!(store.available());
        assert_eq!(store.token_key("a"), "orthanc:dicomweb-oauth:token:a");
        assert_eq!(store.lock_key("a"), "orthanc:dicomweb-oauth:lock:a");
        assert_eq!(
            store.state(),
            StoreState {
                available: true,
                outages: 0,
                last_error: None,
                rejected_entries: 0
            }
        );
    }

    #[test]
    fn scrubs_raw_and_decoded_passwords() {
        let store = SharedTokenStore::new(config("redis://u:S3CRET%40pw@127.0.0.1:6379")).unwrap();
        let scrub = &store.inner.scrub;
        assert_eq!(scrub.scrub("x S3CRET@pw y"), "x [REDACTED] y");
        assert_eq!(scrub.scrub("x S3CRET%40pw y"), "x [REDACTED] y");
        assert_eq!(percent_decode("a%40b%2"), Ok("a@b%2".to_owned()));
    }

    #[test]
    fn error_codes() {
        assert_eq!(
            StoreError::Timeout(DEFAULT_TIMEOUT).code(),
            ErrorCode::Net001
        );
        assert_eq!(StoreError::Unavailable.code(), ErrorCode::Net002);
        assert_eq!(StoreError::Tls("x".into()).code(), ErrorCode::Net003);
        let e: Error = StoreError::Timeout(DEFAULT_TIMEOUT).into();
        assert_eq!(
            e.to_string(),
            "[NET-001] Redis did not answer within 250 ms"
        );
    }
}
