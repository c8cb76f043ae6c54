//! The shared token store (`shared_cache`) against a real `redis-server`
//! (testkit's `RedisServer`, on loopback): round trips and TTLs, what Redis
//! holds (never a token or a secret in clear), rejected entries, the lock,
//! passwords and database numbers, TLS, outages and recovery, and that no
//! secret reaches a log line, an error or a Debug output.

mod common;

use base64::Engine as _;
use common::{capture_logs, logs};
use dicomweb_oauth_core::secret::Secret;
use dicomweb_oauth_core::shared_cache::{
    SharedToken, SharedTokenStore, StoreConfig, StoreError, DEFAULT_KEY_PREFIX,
};
use dicomweb_oauth_core::ErrorCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use testkit::{wait_for, RedisServer, TestCa};

// Every token, key and password of this file carries a marker, so that the
// secret checks catch any of them, whichever test leaked it.
const TOKEN_MARK: &str = "AT-shared-";
const SECRET_MARK: &str = "S3CRET-shared";
/// 32 bytes, base64: the `CacheEncryptionKey` of these tests.
const KEY_B64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const OTHER_KEY_B64: &str = "HxwdHhscGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=";
const PASSWORD: &str = "S3CRET-shared-pass:w@rd";
const PASSWORD_IN_URL: &str = "S3CRET-shared-pass%3Aw%40rd";
const TIMEOUT: Duration = Duration::from_millis(250);

/// Log lines that mention `needle` and the store of `port` (each test has its own).
fn log_lines_with(needle: &str, port: u16) -> usize {
    let endpoint = format!("127.0.0.1:{port}/");
    logs()
        .lines()
        .filter(|l| l.contains(needle) && l.contains(&endpoint))
        .count()
}

/// No secret of this file in the logs so far, nor in `texts`.
fn assert_secret_free(texts: &[String]) {
    let key_hex: String = base64::engine::general_purpose::STANDARD
        .decode(KEY_B64)
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let secrets = [
        TOKEN_MARK,
        SECRET_MARK,
        KEY_B64,
        OTHER_KEY_B64,
        PASSWORD,
        PASSWORD_IN_URL,
        key_hex.as_str(),
    ];
    testkit::assert_no_secrets("the core's logs", &logs(), &secrets);
    for text in texts {
        testkit::assert_no_secrets("an error or Debug output", text, &secrets);
    }
}

// ---- helpers ----

fn key(b64: &str) -> Option<dicomweb_oauth_core::shared_cache::EncryptionKey> {
    StoreConfig::parse_encryption_key(b64).unwrap()
}

fn store_at(url: &str, key_b64: &str) -> SharedTokenStore {
    capture_logs();
    let mut config = StoreConfig::new(Secret::new(url), key(key_b64));
    config.timeout = TIMEOUT;
    SharedTokenStore::new(config).expect("a valid store configuration")
}

fn new_store(redis: &RedisServer) -> SharedTokenStore {
    store_at(&redis.url(), KEY_B64)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(name: &str, lifetime: Duration) -> SharedToken {
    SharedToken {
        value: Secret::new(format!("{TOKEN_MARK}{name}-eyJhbGciOi.payload.sig")),
        expires_at_unix: unix_now() + lifetime.as_secs(),
    }
}

const HOUR: Duration = Duration::from_secs(3600);

// ---- tests ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_with_ttl_and_expiry() {
    let redis = RedisServer::start();
    let store = new_store(&redis);
    assert!(store.get("a").await.unwrap().is_none());

    let t = token("a", HOUR);
    store.put("a", &t, Duration::from_secs(60)).await.unwrap();
    let got = store
        .get("a")
        .await
        .unwrap()
        .expect("the token just stored");
    assert_eq!(got.value, t.value);
    assert_eq!(got.expires_at_unix, t.expires_at_unix);
    // Another server's entry is separate.
    assert!(store.get("b").await.unwrap().is_none());
    // A second client (another Orthanc) reads the same token.
    let other = new_store(&redis);
    assert_eq!(other.get("a").await.unwrap().unwrap().value, t.value);

    // The TTL is applied…
    let key = format!("{DEFAULT_KEY_PREFIX}token:a");
    assert_eq!(store.token_key("a"), key);
    let pttl: i64 = redis.cli(&["PTTL", &key]).trim().parse().unwrap();
    assert!(pttl > 0 && pttl <= 60_000, "PTTL {pttl}");
    // …and capped at the token's own remaining life.
    let short = token("short", Duration::from_secs(5));
    store.put("s", &short, HOUR).await.unwrap();
    let pttl: i64 = redis
        .cli(&["PTTL", &store.token_key("s")])
        .trim()
        .parse()
        .unwrap();
    assert!(pttl > 0 && pttl <= 5_000, "PTTL {pttl}");
    // An already expired token is not stored.
    let expired = SharedToken {
        value: Secret::new(format!("{TOKEN_MARK}expired")),
        expires_at_unix: unix_now() - 1,
    };
    store.put("x", &expired, HOUR).await.unwrap();
    assert_eq!(redis.cli(&["EXISTS", &store.token_key("x")]).trim(), "0");

    // An entry is gone once its TTL ends.
    store
        .put("e", &token("e", HOUR), Duration::from_millis(300))
        .await
        .unwrap();
    assert!(store.get("e").await.unwrap().is_some());
    let started = Instant::now();
    loop {
        if store.get("e").await.unwrap().is_none() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "entry outlived its TTL"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started.elapsed() >= Duration::from_millis(100));

    // remove() deletes it for everyone.
    store.remove("a").await.unwrap();
    assert!(other.get("a").await.unwrap().is_none());
    assert!(store.available());
    assert_secret_free(&[format!("{store:?}"), format!("{got:?}")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_holds_no_token_or_secret_in_clear() {
    let redis = RedisServer::start();
    let store = new_store(&redis);
    let servers = ["azure", "google", "keycloak"];
    for s in servers {
        store.put(s, &token(s, HOUR), HOUR).await.unwrap();
    }
    let lock = store.try_lock("azure", HOUR).await.unwrap().unwrap();

    let keys = redis.cli(&["--scan"]);
    let mut seen = 0;
    let mut dump = keys.clone();
    for key in keys.lines().filter(|k| !k.is_empty()) {
        assert!(key.starts_with(DEFAULT_KEY_PREFIX), "{key}");
        let value = redis.cli(&["GET", key]);
        if key.contains(":token:") {
            assert!(value.starts_with("v1:aes256gcm:"), "{value}");
            seen += 1;
        }
        dump.push_str(&value);
    }
    assert_eq!(seen, servers.len(), "{keys}");
    // The raw bytes too (redis-cli --no-raw escapes what is not printable).
    for s in servers {
        dump.push_str(&redis.cli(&["--no-raw", "GET", &store.token_key(s)]));
    }
    // Nor anything that decodes to the token: every base64 payload is ciphertext.
    for line in dump.lines() {
        if let Some(b64) = line.trim().strip_prefix("v1:aes256gcm:") {
            let blob = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap();
            assert!(!String::from_utf8_lossy(&blob).contains(TOKEN_MARK));
        }
    }
    assert_secret_free(&[dump]);
    assert!(store.unlock("azure", lock).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_tampered_and_truncated_entries_are_rejected() {
    let redis = RedisServer::start();
    let store = new_store(&redis);
    let foreign = store_at(&redis.url(), OTHER_KEY_B64);
    let key_a = store.token_key("a");

    // Written with another key.
    foreign.put("a", &token("a", HOUR), HOUR).await.unwrap();
    assert!(store.get("a").await.unwrap().is_none());
    assert_eq!(store.state().rejected_entries, 1);
    // The owner of that key can still read it.
    assert!(foreign.get("a").await.unwrap().is_some());

    // Copied to another server's key: the key is authenticated too.
    store.put("a", &token("a", HOUR), HOUR).await.unwrap();
    let valid = redis.cli(&["GET", &key_a]).trim().to_owned();
    redis.cli(&["SET", &store.token_key("b"), &valid]);
    assert!(store.get("b").await.unwrap().is_none());
    assert!(store.get("a").await.unwrap().is_some());

    // One flipped bit, anywhere in nonce, ciphertext or tag.
    let blob = base64::engine::general_purpose::STANDARD
        .decode(valid.strip_prefix("v1:aes256gcm:").unwrap())
        .unwrap();
    for i in [0, 11, 12, blob.len() / 2, blob.len() - 1] {
        let mut bad = blob.clone();
        bad[i] ^= 0x80;
        let text = format!(
            "v1:aes256gcm:{}",
            base64::engine::general_purpose::STANDARD.encode(&bad)
        );
        redis.cli(&["SET", &key_a, &text]);
        assert!(store.get("a").await.unwrap().is_none(), "flipped byte {i}");
    }
    // Truncated, at several lengths.
    for len in [valid.len() - 1, valid.len() - 4, valid.len() / 2, 14, 3, 0] {
        redis.cli(&["SET", &key_a, &valid[..len]]);
        assert!(
            store.get("a").await.unwrap().is_none(),
            "truncated to {len}"
        );
    }
    // Garbage, and a clear entry planted by someone with access to Redis.
    for text in [
        "hello",
        "v2:something",
        "v1:aes256gcm:!!!not base64!!!",
        "v1:plain:{\"token\":\"AT-shared-planted\",\"expires_at_unix\":99999999999}",
    ] {
        redis.cli(&["SET", &key_a, text]);
        assert!(store.get("a").await.unwrap().is_none(), "{text}");
    }
    // Not a string at all (WRONGTYPE): not ours, and no outage either.
    redis.cli(&["DEL", &key_a]);
    redis.cli(&["RPUSH", &key_a, "x"]);
    assert!(store.get("a").await.unwrap().is_none());
    assert!(store.available());
    let rejected = store.state().rejected_entries;
    assert!(rejected >= 18, "{rejected}");
    assert!(logs().contains("token entry in Redis rejected"));

    // The caller then refetches and stores a good one, which works again.
    let fresh = token("fresh", HOUR);
    store.put("a", &fresh, HOUR).await.unwrap();
    assert_eq!(store.get("a").await.unwrap().unwrap().value, fresh.value);
    assert!(store.available());
    assert_secret_free(&[format!("{:?}", store.state())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encryption_disabled_stores_versioned_json() {
    let redis = RedisServer::start();
    let clear = store_at(&redis.url(), "none");
    assert!(!clear.encrypts());
    let t = SharedToken {
        value: Secret::new("clear-token-value"),
        expires_at_unix: unix_now() + 3600,
    };
    clear.put("a", &t, HOUR).await.unwrap();
    let raw = redis.cli(&["GET", &clear.token_key("a")]);
    assert_eq!(
        raw.trim(),
        format!(
            "v1:plain:{{\"token\":\"clear-token-value\",\"expires_at_unix\":{}}}",
            t.expires_at_unix
        )
    );
    assert_eq!(clear.get("a").await.unwrap().unwrap().value, t.value);
    // An encrypting store never accepts a clear entry.
    let encrypting = new_store(&redis);
    assert!(encrypting.get("a").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_is_exclusive_owned_and_expires() {
    let redis = RedisServer::start();
    let one = new_store(&redis);
    let two = new_store(&redis);
    let lock_key = one.lock_key("a");

    let held = one.try_lock("a", HOUR).await.unwrap().expect("free lock");
    assert!(two.try_lock("a", HOUR).await.unwrap().is_none());
    assert!(one.try_lock("a", HOUR).await.unwrap().is_none());
    // Another server's lock is separate.
    let other = two.try_lock("b", HOUR).await.unwrap().expect("free lock");
    let pttl: i64 = redis.cli(&["PTTL", &lock_key]).trim().parse().unwrap();
    assert!(pttl > 0 && pttl <= 3_600_000, "{pttl}");
    // Owner unlock frees it.
    assert!(one.unlock("a", held).await.unwrap());
    assert_eq!(redis.cli(&["EXISTS", &lock_key]).trim(), "0");
    assert!(two.unlock("b", other).await.unwrap());

    // Expiry frees it, and a stale owner cannot release the next holder's lock.
    let stale = one
        .try_lock("a", Duration::from_millis(200))
        .await
        .unwrap()
        .unwrap();
    let started = Instant::now();
    let current = loop {
        if let Some(lock) = two.try_lock("a", HOUR).await.unwrap() {
            break lock;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "lock never expired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(started.elapsed() >= Duration::from_millis(100));
    let holder = redis.cli(&["GET", &lock_key]);
    assert!(
        !one.unlock("a", stale).await.unwrap(),
        "non-owner released it"
    );
    assert_eq!(redis.cli(&["GET", &lock_key]), holder);
    assert!(one.try_lock("a", HOUR).await.unwrap().is_none());
    assert!(two.unlock("a", current).await.unwrap());

    // Lock values are random: two acquisitions store different values.
    let a = one.try_lock("a", HOUR).await.unwrap().unwrap();
    let first = redis.cli(&["GET", &lock_key]);
    assert!(one.unlock("a", a).await.unwrap());
    let b = one.try_lock("a", HOUR).await.unwrap().unwrap();
    assert_ne!(redis.cli(&["GET", &lock_key]), first);
    assert_eq!(format!("{b:?}"), "LockToken(..)");
    assert!(one.unlock("a", b).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_and_database_number() {
    let redis = RedisServer::start_with_password(PASSWORD);
    let port = redis.port();
    let url = format!("redis://:{PASSWORD_IN_URL}@127.0.0.1:{port}/3");
    let store = store_at(&url, KEY_B64);
    let t = token("db3", HOUR);
    store.put("a", &t, HOUR).await.unwrap();
    assert_eq!(store.get("a").await.unwrap().unwrap().value, t.value);
    // It went to database 3, not 0.
    let key = store.token_key("a");
    assert_eq!(redis.cli(&["-n", "3", "EXISTS", &key]).trim(), "1");
    assert_eq!(redis.cli(&["-n", "0", "EXISTS", &key]).trim(), "0");
    // An ACL user with a password.
    redis.cli(&[
        "ACL",
        "SETUSER",
        "orthanc",
        "on",
        &format!(">{PASSWORD}-acl"),
        "~orthanc:*",
        "+@all",
    ]);
    let acl_url = format!("redis://orthanc:{PASSWORD_IN_URL}-acl@127.0.0.1:{port}/3");
    let acl = store_at(&acl_url, KEY_B64);
    assert_eq!(acl.get("a").await.unwrap().unwrap().value, t.value);

    // Wrong password, or none: an error, without the password, and an outage.
    let mut errors = Vec::new();
    for url in [
        format!("redis://:{SECRET_MARK}-wrong@127.0.0.1:{port}/3"),
        format!("redis://orthanc:{SECRET_MARK}-wrong@127.0.0.1:{port}/3"),
        format!("redis://127.0.0.1:{port}/3"),
    ] {
        let bad = store_at(&url, KEY_B64);
        let e = bad.get("a").await.unwrap_err();
        assert!(matches!(e, StoreError::Redis(_)), "{e:?}");
        assert_eq!(e.code(), ErrorCode::Net002);
        assert!(!bad.available());
        let state = bad.state();
        assert_eq!(state.outages, 1);
        errors.push(format!("{e} {e:?} {state:?} {bad:?}"));
        let as_error: dicomweb_oauth_core::Error = e.into();
        errors.push(format!("{as_error} {as_error:?}"));
    }
    // Each says what went wrong (authentication), still without the password.
    for text in [&errors[0], &errors[2], &errors[4]] {
        assert!(text.to_ascii_lowercase().contains("auth"), "{text}");
    }
    assert_secret_free(&errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca() {
    let ca = TestCa::new();
    let redis = RedisServer::start_tls(&ca);
    assert!(redis.url().starts_with("rediss://127.0.0.1:"));
    let mut config = StoreConfig::new(Secret::new(redis.url()), key(KEY_B64));
    config.ca_file = redis.tls_ca_file();
    let store = SharedTokenStore::new(config).unwrap();
    let t = token("tls", HOUR);
    store.put("a", &t, HOUR).await.unwrap();
    assert_eq!(store.get("a").await.unwrap().unwrap().value, t.value);
    assert!(redis
        .cli(&["GET", &store.token_key("a")])
        .starts_with("v1:aes256gcm:"));

    // Another CA: the certificate is not trusted (NET-003), nothing is sent.
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(Secret::new(redis.url()), key(KEY_B64));
    config.ca_file = Some(TestCa::new().write_ca_pem(dir.path()));
    let untrusting = SharedTokenStore::new(config).unwrap();
    let e = untrusting.get("a").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Net003, "{e:?}");
    // The system store does not know the private CA either.
    let system = store_at(&redis.url(), KEY_B64);
    assert_eq!(system.get("a").await.unwrap_err().code(), ErrorCode::Net003);
    // Plain redis:// to a TLS port: an error within the timeout, not a hang.
    let started = Instant::now();
    let plain = store_at(&redis.url().replace("rediss://", "redis://"), KEY_B64);
    assert!(plain.get("a").await.is_err());
    assert!(started.elapsed() < 2 * TIMEOUT + Duration::from_millis(100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_fails_fast_logs_once_and_recovers() {
    let mut redis = RedisServer::start();
    let port = redis.port();
    let store = new_store(&redis);
    let t = token("a", HOUR);
    store.put("a", &t, HOUR).await.unwrap();
    assert!(store.get("a").await.unwrap().is_some());
    assert_eq!(log_lines_with("Redis unavailable", port), 0);

    redis.stop();
    // Every operation answers quickly with an error, across several probe intervals.
    let started = Instant::now();
    let mut failures = 0;
    let mut fast_fails = 0;
    let mut round = 0u32;
    while started.elapsed() < Duration::from_millis(2_500) {
        let op = Instant::now();
        let result = match round % 4 {
            0 => store.get("a").await.map(|_| ()),
            1 => store.put("a", &t, HOUR).await,
            2 => store.try_lock("a", HOUR).await.map(|_| ()),
            _ => store.remove("a").await,
        };
        round += 1;
        let took = op.elapsed();
        assert!(took < 2 * TIMEOUT, "an operation took {took:?}");
        let e = result.expect_err("Redis is down");
        failures += 1;
        if e == StoreError::Unavailable {
            fast_fails += 1;
            assert!(
                took < Duration::from_millis(50),
                "a fast failure took {took:?}"
            );
        }
        assert!(!store.available());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Most calls failed without I/O: Redis saw at most one probe per second.
    let probes = failures - fast_fails;
    assert!(probes <= 4, "{probes} probes in 2.5 s");
    assert!(fast_fails > 20, "{fast_fails} of {failures}");
    let state = store.state();
    assert!(!state.available);
    assert_eq!(state.outages, 1);
    assert!(state.last_error.is_some());
    assert_eq!(
        log_lines_with("Redis unavailable, falling back to local tokens", port),
        1
    );
    assert!(logs().contains("WARN"));

    redis.start_again();
    let recovered = Instant::now();
    let runtime = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| {
        wait_for(
            "the store to use Redis again",
            Duration::from_secs(5),
            || runtime.block_on(store.get("a")).ok(),
        )
    });
    assert!(recovered.elapsed() < Duration::from_secs(3));
    assert!(store.available());
    // Redis came back empty: the caller refills it.
    store.put("a", &t, HOUR).await.unwrap();
    assert_eq!(store.get("a").await.unwrap().unwrap().value, t.value);
    let state = store.state();
    assert!(state.available && state.outages == 1 && state.last_error.is_none());
    assert_eq!(log_lines_with("Redis available again", port), 1);
    assert_eq!(log_lines_with("Redis unavailable", port), 1);

    // A restart between two operations goes unnoticed (one retry on a new connection).
    redis.stop();
    redis.start_again();
    store.put("a", &t, HOUR).await.unwrap();
    assert!(store.available());
    assert_eq!(store.state().outages, 1);
    assert_secret_free(&[format!("{store:?}"), format!("{state:?}")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresponsive_redis_times_out_within_the_bound() {
    // A listener that accepts connections and never answers (a hung Redis).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&accepted);
    std::thread::spawn(move || {
        for stream in listener.incoming().take(20) {
            match stream {
                Ok(s) => keep.lock().unwrap().push(s),
                Err(_) => break,
            }
        }
    });
    let store = store_at(&format!("redis://127.0.0.1:{port}"), KEY_B64);
    let started = Instant::now();
    let e = store.get("a").await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(e, StoreError::Timeout(TIMEOUT));
    assert!(!store.available());
    assert_eq!(e.code(), ErrorCode::Net001);
    assert!(took >= TIMEOUT && took < 2 * TIMEOUT, "{took:?}");
    // Until the next probe, calls fail at once.
    let started = Instant::now();
    assert_eq!(store.get("a").await.unwrap_err(), StoreError::Unavailable);
    assert!(started.elapsed() < Duration::from_millis(50));
    assert_eq!(store.state().outages, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_connection() {
    let redis = RedisServer::start();
    let store = new_store(&redis);
    let t = token("a", HOUR);
    store.put("a", &t, HOUR).await.unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.get("a").await })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap().unwrap().is_some());
    }
    // One client connection (plus redis-cli's own, for this command).
    let clients = redis.cli(&["CLIENT", "LIST"]);
    assert_eq!(clients.lines().count(), 2, "{clients}");
}
