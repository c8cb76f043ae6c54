//! The token manager with the Redis shared cache (real redis-server): entries
//! that fail authentication are refetched, and a token dropped after a 401 is
//! not taken back from Redis.

mod common;

use common::engine_with;
use serde_json::{json, Value};
use testkit::{Fault, FaultServer, RedisServer};

const KEY: &str = "q0Qf7mLr9sJ3Z1m3l0wq2cB6m2y8WcY3pQe4Rj2t5Ck=";

fn server(endpoint: &FaultServer) -> Value {
    json!({"Url": "https://pacs.invalid/dicom-web", "TokenEndpoint": endpoint.url("/token"),
           "ClientId": "c", "ClientSecret": "shared-secret-77"})
}

fn orthanc_with_redis(redis: &RedisServer) -> Value {
    json!({"DicomWebOAuth": {"CacheType": "redis", "RedisUrl": redis.url(), "CacheEncryptionKey": KEY}})
}

fn answer(token: &str) -> Fault {
    Fault::json(
        200,
        json!({"access_token": token, "token_type": "Bearer", "expires_in": 300}),
    )
}

fn engine(redis: &RedisServer, endpoint: &FaultServer) -> dicomweb_oauth_core::token::Engine {
    engine_with(server(endpoint), orthanc_with_redis(redis))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_entry_is_refetched_and_a_second_instance_shares_the_token() {
    let redis = RedisServer::start();
    let endpoint = FaultServer::start(vec![answer("tok-shared-1")]);
    let first = engine(&redis, &endpoint);
    let (token, _) = first.manager("s").unwrap().token().await.unwrap();
    assert_eq!(token.value.expose(), "tok-shared-1");
    // A second instance takes the token from Redis: no second request.
    let second = engine(&redis, &endpoint);
    let (shared, _) = second.manager("s").unwrap().token().await.unwrap();
    assert_eq!(shared.value.expose(), "tok-shared-1");
    assert_eq!(
        endpoint.request_count(),
        1,
        "{}",
        common::logs()
            .lines()
            .filter(|l| l.contains("edis"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Tamper with the stored entry: a third instance refuses it and fetches.
    let key = redis
        .cli(&["--scan", "--pattern", "*token*"])
        .trim()
        .to_owned();
    assert!(!key.is_empty());
    let raw = redis.cli(&["GET", &key]);
    assert!(!raw.contains("tok-shared-1"), "stored in clear");
    let mut tampered = raw.trim().to_owned();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    redis.cli(&["SET", &key, &tampered]);
    endpoint.set_script(vec![answer("tok-shared-2")]);
    let third = engine(&redis, &endpoint);
    let (fresh, _) = third.manager("s").unwrap().token().await.unwrap();
    assert_eq!(fresh.value.expose(), "tok-shared-2");
    assert_eq!(endpoint.request_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_dropped_after_a_401_is_not_taken_back_from_redis() {
    let redis = RedisServer::start();
    let endpoint = FaultServer::start(vec![answer("tok-revoked")]);
    let engine = engine(&redis, &endpoint);
    let manager = engine.manager("s").unwrap();
    manager.token().await.unwrap();
    endpoint.set_script(vec![answer("tok-new")]);
    manager.invalidate();
    let (token, _) = manager.token().await.unwrap();
    assert_eq!(
        token.value.expose(),
        "tok-new",
        "the refused token came back from Redis"
    );
    assert_eq!(endpoint.request_count(), 2);
}
