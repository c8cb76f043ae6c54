//! The cache-hit path that every DICOMweb request takes: `TokenManager::cached()`.
//! Target (issue 3): under 1 µs. Run: `cargo bench -p dicomweb-oauth-core --bench token_cache`.

use criterion::{criterion_group, criterion_main, Criterion};
use dicomweb_oauth_core::config;
use dicomweb_oauth_core::token::Engine;
use serde_json::json;
use std::hint::black_box;
use testkit::{Fault, FaultServer};

fn cache_hit(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let endpoint = FaultServer::start(vec![Fault::json(
        200,
        json!({"access_token": "bench-token", "token_type": "Bearer", "expires_in": 3600}),
    )]);
    let config = config::load(
        &json!({"DicomWebOAuth": {"Servers": {"bench": {
            "Url": "https://pacs.invalid/dicom-web",
            "TokenEndpoint": endpoint.url("/token"),
            "ClientId": "bench", "ClientSecret": "bench-secret"
        }}}}),
        &|_| None,
    )
    .unwrap()
    .unwrap();
    let engine = Engine::new(&config, runtime.handle().clone()).unwrap();
    let manager = engine.manager("bench").unwrap().clone();
    runtime.block_on(manager.token()).unwrap();

    let mut group = c.benchmark_group("token_cache");
    group.bench_function("cached_hit", |b| {
        b.iter(|| black_box(manager.cached()).expect("cached"))
    });
    group.bench_function("token_async_hit", |b| {
        b.iter(|| {
            runtime
                .block_on(black_box(&manager).token())
                .expect("token")
        })
    });
    group.finish();
}

criterion_group!(benches, cache_hit);
criterion_main!(benches);
