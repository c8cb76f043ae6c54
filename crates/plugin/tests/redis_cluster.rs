//! Three real Orthanc instances share one real Redis (issue 7): one token
//! request per token lifetime for the whole cluster, encrypted entries, and no
//! failed request while Redis is down.

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use testkit::{Fault, FaultServer, Idp, Orthanc, OrthancBuilder, RedisServer};

const SECRET: &str = "cluster-client-secret-4c0b";
const KEY: &str = "q0Qf7mLr9sJ3Z1m3l0wq2cB6m2y8WcY3pQe4Rj2t5Ck="; // base64 of 32 bytes (test only)
const TTL: u64 = 6;

fn cluster(redis: &RedisServer, idp: &Idp) -> Vec<(Orthanc, FaultServer)> {
    (0..3)
        .map(|_| {
            let upstream = FaultServer::start(vec![Fault::json(200, json!([]))]);
            let orthanc = OrthancBuilder::new()
                .oauth(json!({
                    "CacheType": "redis", "RedisUrl": redis.url(), "CacheEncryptionKey": KEY,
                    "Servers": {"cloud": {
                        "Url": upstream.url("/dicom-web"), "TokenEndpoint": idp.token_endpoint(),
                        "ClientId": "orthanc", "ClientSecret": SECRET, "TokenRefreshBufferSeconds": 2,
                        "AutoRegister": false
                    }}
                }))
                .start();
            (orthanc, upstream)
        })
        .collect()
}

fn bearer_tokens(upstream: &FaultServer) -> BTreeSet<String> {
    upstream
        .requests()
        .iter()
        .filter_map(|r| {
            r.header("authorization")
                .map(|a| a.trim_start_matches("Bearer ").to_owned())
        })
        .collect()
}

/// The pace of `traffic` per instance: enough to keep every token in use, bounded so
/// three debug Orthancs on a 2-core CI machine leave room for the other test's processes.
const REQUEST_INTERVAL: Duration = Duration::from_millis(40);

/// Sends proxied requests from every instance (one per `REQUEST_INTERVAL` at most) for
/// `duration`, asserting each succeeds.
fn traffic(nodes: &[(Orthanc, FaultServer)], duration: Duration) -> usize {
    let stop = AtomicBool::new(false);
    let count = std::thread::scope(|scope| {
        let workers: Vec<_> = nodes
            .iter()
            .map(|(orthanc, _)| {
                let stop = &stop;
                scope.spawn(move || {
                    let mut sent = 0;
                    let mut next = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        let reply = orthanc.get("/oauth-dicom-web/servers/cloud/studies");
                        assert_eq!(reply.status, 200, "a request failed: {}", reply.text());
                        sent += 1;
                        next += REQUEST_INTERVAL;
                        std::thread::sleep(next.saturating_duration_since(Instant::now()));
                    }
                    sent
                })
            })
            .collect();
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    count
}

#[test]
fn one_token_request_per_lifetime_for_the_whole_cluster() {
    let redis = RedisServer::start();
    let idp = Idp::start(
        &json!({"accessTokenTtl": TTL, "clients": [{"client_id": "orthanc", "client_secret": SECRET,
        "token_endpoint_auth_method": "client_secret_post"}]}),
    );
    let nodes = cluster(&redis, &idp);
    let started = Instant::now();
    let sent = traffic(&nodes, Duration::from_secs(3 * TTL));
    let elapsed = started.elapsed().as_secs_f64();
    let requests = idp.token_requests() as usize;
    // A token is replaced 2 s before it expires: one request per (TTL - 2) s, plus the first.
    let max = (elapsed / (TTL - 2) as f64).ceil() as usize + 1;
    assert!(
        requests >= 3,
        "{requests} token requests: no refresh happened"
    );
    assert!(
        requests <= max,
        "{requests} token requests in {elapsed:.1} s for the cluster (at most {max})"
    );
    let per_node: Vec<BTreeSet<String>> = nodes.iter().map(|(_, up)| bearer_tokens(up)).collect();
    let union: BTreeSet<&String> = per_node.iter().flatten().collect();
    assert_eq!(
        union.len(),
        requests,
        "every token the provider issued was the cluster's"
    );
    let shared_by_all = per_node[0]
        .iter()
        .filter(|t| per_node[1].contains(*t) && per_node[2].contains(*t))
        .count();
    assert!(
        shared_by_all + 1 >= requests,
        "instances used different tokens: {shared_by_all} shared of {requests}"
    );
    assert!(sent > 100);

    // What Redis holds: encrypted, no token, no secret.
    let keys = redis.cli(&["--scan"]);
    assert!(keys.contains("orthanc:dicomweb-oauth:"), "{keys}");
    for key in keys.lines().filter(|k| !k.is_empty()) {
        let raw = redis.cli(&["GET", key]);
        for token in &union {
            assert!(
                !raw.contains(token.as_str()),
                "a token is stored in clear under {key}"
            );
        }
        testkit::assert_no_secrets("Redis", &raw, &[SECRET, KEY]);
    }
    for (orthanc, _) in &nodes {
        testkit::assert_no_secrets("the Orthanc log", &orthanc.log(), &[SECRET, KEY]);
    }
}

fn shared_cache_state(orthanc: &Orthanc) -> Value {
    orthanc.get("/dicomweb-oauth/status").json()["data"]["shared_cache"].clone()
}

#[test]
fn no_request_fails_while_redis_is_down_and_redis_is_used_again_when_back() {
    let mut redis = RedisServer::start();
    let idp = Idp::start(
        &json!({"accessTokenTtl": 4, "clients": [{"client_id": "orthanc", "client_secret": SECRET,
        "token_endpoint_auth_method": "client_secret_post"}]}),
    );
    let nodes = cluster(&redis, &idp);
    traffic(&nodes, Duration::from_secs(2));
    assert_eq!(shared_cache_state(&nodes[0].0)["available"], true);

    redis.stop();
    // Through at least one token lifetime without Redis: every request still succeeds.
    traffic(&nodes, Duration::from_secs(6));
    testkit::wait_for(
        "the outage to show in the status",
        Duration::from_secs(10),
        || (shared_cache_state(&nodes[0].0)["available"] == false).then_some(()),
    );
    let metrics = nodes[0].0.get("/dicomweb-oauth/metrics").text();
    assert!(
        metrics.contains("dicomweb_oauth_shared_cache_available 0"),
        "{metrics}"
    );
    let outage_warnings = testkit::plugin_log_lines(&nodes[0].0.log())
        .iter()
        .filter(|l| {
            l["level"] == "WARNING"
                && l["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("Redis unavailable")
        })
        .count();
    assert_eq!(
        outage_warnings, 1,
        "one warning per outage, not per request"
    );

    redis.start_again();
    testkit::wait_for(
        "instances to use Redis again",
        Duration::from_secs(20),
        || {
            let back = nodes
                .iter()
                .all(|(o, _)| shared_cache_state(o)["available"] == true);
            if !back {
                // Token refreshes are what touch Redis: keep traffic flowing.
                for (o, _) in &nodes {
                    assert_eq!(o.get("/oauth-dicom-web/servers/cloud/studies").status, 200);
                }
            }
            back.then_some(())
        },
    );
    let state = shared_cache_state(&nodes[0].0);
    assert!(state["outages"].as_u64().unwrap() >= 1, "{state}");
    testkit::wait_for(
        "a token stored in Redis again",
        Duration::from_secs(15),
        || {
            redis
                .cli(&["--scan"])
                .contains("orthanc:dicomweb-oauth:")
                .then_some(())
        },
    );
}
