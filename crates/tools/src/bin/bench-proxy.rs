//! Proxy benchmark (`scripts/bench-proxy`): sends studies of ≥ 100 MB from
//! Orthanc A to an OAuth-protected DICOMweb server four ways — straight from
//! the DICOMweb plugin with a static bearer header (the no-proxy limit),
//! through the plugin's proxy in proxy mode (its loopback listener, the
//! default, and Orthanc's route with `"ProxyListener": false`), and in the
//! plugin's header mode — with 1 and 4 parallel senders, interleaved in one run.
//! Reports throughput (until the remote holds every instance, polled every
//! 10 ms), CPU seconds used by Orthanc A (/proc/PID/stat) and A's peak RSS
//! during the sends (VmHWM, reset before each send).
//!
//! Usage: bench-proxy [STUDY_MB (100)] [REPETITIONS (3)] [SENDERS (4,1)]
//!
//! `BENCH_PROFILE=1` prints each Orthanc's role and PID first (for `perf record -p`);
//! `BENCH_BASELINE_PLUGIN=PATH` adds a fifth path: proxy mode with another build of the
//! plugin (e.g. the previous commit's), to measure a change side by side.

use serde_json::json;
use std::time::Instant;
use testkit::{create_study, Gateway, HttpClient, Idp, Orthanc, OrthancBuilder, Study};

const INSTANCE_MB: usize = 5;

struct Sample {
    seconds: f64,
    cpu_seconds: f64,
    peak_rss_mb: f64,
}

fn clock_ticks() -> f64 {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(100.0)
}

fn cpu_seconds(pid: u32, ticks: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields[11].parse().unwrap();
    let stime: f64 = fields[12].parse().unwrap();
    (utime + stime) / ticks
}

fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024.0
}

fn reset_peak_rss(pid: u32) {
    // "5" resets VmHWM to the current RSS (Linux ≥ 4.0; needs the right to ptrace the process).
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset VmHWM (run as root)");
}

/// Sends `studies` from `a` to the remote (Orthanc B behind the gateway) and measures it.
///
/// The duration runs from the request to the moment B holds every instance, polled every
/// 10 ms: Orthanc's own job timestamps and synchronous sends move in ~0.5 s steps, too coarse
/// for sends of a few seconds. The send must still end in success.
fn send(a: &Orthanc, b: &Orthanc, server: &str, studies: &[Study], ticks: f64) -> Sample {
    let pid = a.pid();
    let expected: usize = studies.iter().map(|s| s.instance_ids.len()).sum();
    reset_peak_rss(pid);
    let cpu0 = cpu_seconds(pid, ticks);
    let started = Instant::now();
    let seconds = std::thread::scope(|scope| {
        let sending = scope.spawn(|| {
            if let [study] = studies {
                // One sender: a synchronous send.
                let reply = a.post_json(
                    &format!("/dicom-web/servers/{server}/stow"),
                    &json!({"Resources": [study.id], "Synchronous": true}),
                );
                assert_eq!(reply.status, 200, "{server}: {}", reply.text());
                return;
            }
            // Several senders: asynchronous jobs, as Orthanc Explorer's "Send to DICOMweb
            // server" posts them (concurrent synchronous sends crash the DICOMweb plugin 1.7).
            let jobs: Vec<String> = studies
                .iter()
                .map(|study| {
                    let reply = a.post_json(
                        &format!("/dicom-web/servers/{server}/stow"),
                        &json!({"Resources": [study.id], "Synchronous": false}),
                    );
                    assert_eq!(reply.status, 200, "{server}: {}", reply.text());
                    reply.json()["ID"].as_str().unwrap().to_owned()
                })
                .collect();
            for job in jobs {
                let info =
                    testkit::wait_for("a send job", std::time::Duration::from_secs(600), || {
                        let info = a.get(&format!("/jobs/{job}")).json();
                        matches!(info["State"].as_str(), Some("Success" | "Failure"))
                            .then_some(info)
                    });
                assert_eq!(info["State"], "Success", "{server}: job {job}");
            }
        });
        // A benchmark's clock, not a test's synchronisation: bounded by the send's own end.
        let mut delivered = None;
        while delivered.is_none() && !sending.is_finished() {
            if remote_instances(b) >= expected {
                delivered = Some(started.elapsed().as_secs_f64());
            } else {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        sending.join().expect("the send");
        delivered.unwrap_or_else(|| {
            assert_eq!(
                remote_instances(b),
                expected,
                "{server}: instances at the remote"
            );
            started.elapsed().as_secs_f64()
        })
    });
    Sample {
        seconds,
        cpu_seconds: cpu_seconds(pid, ticks) - cpu0,
        peak_rss_mb: peak_rss_mb(pid),
    }
}

fn remote_instances(b: &Orthanc) -> usize {
    b.get("/statistics").json()["CountInstances"]
        .as_u64()
        .unwrap_or(0) as usize
}

fn clear_remote(b: &Orthanc) {
    let studies = b.get("/studies").json();
    for id in studies.as_array().unwrap() {
        b.http()
            .delete(&b.url(&format!("/studies/{}", id.as_str().unwrap())));
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let study_mb: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100);
    let repetitions: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let senders: Vec<usize> = args.get(3).map_or_else(
        || vec![4, 1],
        |list| {
            list.split(',')
                .map(|n| n.parse().expect("SENDERS: a comma-separated list of 1..=4"))
                .filter(|n| (1..=4).contains(n))
                .collect()
        },
    );
    let instances = study_mb.div_ceil(INSTANCE_MB);
    let ticks = clock_ticks();
    let secret = "bench-secret";

    let idp = Idp::start(&json!({
        "accessTokenTtl": 3600,
        "clients": [{"client_id": "bench", "client_secret": secret,
                     "token_endpoint_auth_method": "client_secret_post", "scope": "dicom.read dicom.write"}]
    }));
    let b = OrthancBuilder::new()
        .without_oauth_plugin()
        .set("HttpTimeout", json!(600))
        .start();
    let gateway = Gateway::start(&json!({
        "upstream": b.url(""), "jwksUri": format!("{}/jwks", idp.issuer), "issuer": idp.issuer,
        "audience": "https://dicom.example", "requiredScope": "dicom.read", "writeScope": "dicom.write", "mode": "jwt",
    }));
    // The direct path's static header: a token from the same provider, valid for the whole run.
    let form = format!("grant_type=client_credentials&client_id=bench&client_secret={secret}&scope=dicom.read%20dicom.write");
    let token = HttpClient::new()
        .post(
            &idp.token_endpoint(),
            "application/x-www-form-urlencoded",
            form.as_bytes(),
        )
        .json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut direct = OrthancBuilder::new()
        .without_oauth_plugin()
        .set("HttpTimeout", json!(600))
        .set("ConcurrentJobs", json!(4))
        .set(
            "DicomWeb",
            json!({"Enable": true, "Root": "/dicom-web/", "Servers": {"remote": {
                "Url": format!("{}/dicom-web/", gateway.url),
                "HttpHeaders": {"Authorization": format!("Bearer {token}")}
            }}}),
        )
        .start();
    // Proxy mode: the plugin registers "remote" itself, pointing at its loopback listener
    // (the default) or, with "ProxyListener": false, at its route on Orthanc's own port.
    let proxy_orthanc = |plugin: Option<&std::path::Path>, listener: Option<bool>| {
        let server = json!({
            "Url": format!("{}/dicom-web", gateway.url), "TokenEndpoint": idp.token_endpoint(),
            "ClientId": "bench", "ClientSecret": secret, "Scope": "dicom.read dicom.write"
        });
        let mut section = json!({});
        if let Some(listener) = listener {
            section["ProxyListener"] = json!(listener);
        }
        section["Servers"] = json!({ "remote": server });
        let mut builder = OrthancBuilder::new()
            .set("HttpTimeout", json!(600))
            .set("ConcurrentJobs", json!(4))
            .oauth(section);
        if let Some(plugin) = plugin {
            builder = builder.oauth_plugin_at(plugin);
        }
        builder.start()
    };
    let mut proxied = proxy_orthanc(None, None);
    let mut routed = proxy_orthanc(None, Some(false));
    // Another build of the plugin side by side (BENCH_BASELINE_PLUGIN), to measure a change.
    let baseline_plugin = std::env::var_os("BENCH_BASELINE_PLUGIN").map(std::path::PathBuf::from);
    let mut baseline = baseline_plugin
        .as_deref()
        .map(|p| proxy_orthanc(Some(p), None));

    // Header mode: the plugin registers "remote" itself, with a fresh Authorization header.
    let mut header = OrthancBuilder::new()
        .set("HttpTimeout", json!(600))
        .set("ConcurrentJobs", json!(4))
        .oauth(json!({"Servers": {"remote": {
            "Url": format!("{}/dicom-web", gateway.url), "TokenEndpoint": idp.token_endpoint(),
            "ClientId": "bench", "ClientSecret": secret, "Scope": "dicom.read dicom.write",
            "Mode": "header"
        }}}))
        .start();
    eprintln!(
        "creating 4 studies of {study_mb} MB ({instances} × {INSTANCE_MB} MB) in each Orthanc A…"
    );
    let make = |a: &Orthanc| -> Vec<Study> {
        (0..4)
            .map(|i| create_study(a, &format!("BENCH-{i}"), instances, INSTANCE_MB << 20))
            .collect()
    };
    let direct_studies = make(&direct);
    let proxied_studies = make(&proxied);
    let routed_studies = make(&routed);
    let header_studies = make(&header);
    let baseline_studies = baseline.as_ref().map(make);
    // Fresh processes: every Orthanc A starts the sends without the memory that creating
    // its studies left behind (peak RSS would otherwise measure that history).
    for a in [&mut direct, &mut proxied, &mut routed, &mut header]
        .into_iter()
        .chain(baseline.as_mut())
    {
        a.restart();
    }
    for a in [&proxied, &routed].into_iter().chain(baseline.as_ref()) {
        testkit::wait_for(
            "proxy mode registration",
            std::time::Duration::from_secs(30),
            || {
                let servers = a.get("/dicom-web/servers").json();
                servers.to_string().contains("remote").then_some(())
            },
        );
    }
    testkit::wait_for(
        "header mode registration",
        std::time::Duration::from_secs(30),
        || {
            let servers = header.get("/dicom-web/servers?expand").json();
            servers["remote"]["HttpHeaders"]
                .to_string()
                .contains("Authorization")
                .then_some(())
        },
    );
    let mut paths: Vec<(&str, &Orthanc, Vec<Study>)> = vec![
        ("direct (static header)", &direct, direct_studies),
        ("proxy mode (plugin)", &proxied, proxied_studies),
        ("proxy mode via Orthanc's route", &routed, routed_studies),
        ("header mode (plugin)", &header, header_studies),
    ];
    if let (Some(baseline), Some(studies)) = (&baseline, baseline_studies) {
        paths.push(("proxy mode (baseline build)", baseline, studies));
    }

    println!("| senders | path | throughput MB/s | Orthanc A CPU s | Orthanc A peak RSS MB |");
    println!("|---|---|---|---|---|");
    let mut summary = Vec::new();
    if std::env::var_os("BENCH_PROFILE").is_some() {
        for (name, a, _) in &paths {
            eprintln!("Orthanc A, {name}: pid {}", a.pid());
        }
        eprintln!("Orthanc B: pid {}", b.pid());
    }
    // One unmeasured send of all four studies from every Orthanc A first: a fresh process
    // grows its heap over its first sends (glibc keeps what the DICOMweb plugin freed), and
    // its first send pays one-off costs; no path should be measured in that phase.
    eprintln!("warming up: one unmeasured 4-study send from each Orthanc A…");
    for (_, a, studies) in &paths {
        send(a, &b, "remote", studies, ticks);
        clear_remote(&b);
    }
    for parallel in senders {
        let mut results: Vec<Vec<Sample>> = paths.iter().map(|_| Vec::new()).collect();
        for rep in 0..repetitions {
            // Rotate which path goes first, so drift on a noisy machine hits all of them.
            for k in 0..paths.len() {
                let which = (k + rep) % paths.len();
                let (name, a, studies) = &paths[which];
                let sample = send(a, &b, "remote", &studies[..parallel], ticks);
                // Every repetition on stderr: the medians below hide how noisy the machine was.
                eprintln!(
                    "{parallel} sender(s), repetition {rep}, {name}: {:.2} s, CPU {:.2} s, peak RSS {:.0} MB",
                    sample.seconds, sample.cpu_seconds, sample.peak_rss_mb
                );
                results[which].push(sample);
                clear_remote(&b);
            }
        }
        let mb = (study_mb * parallel) as f64;
        let mut medians = Vec::new();
        for (which, (name, _, _)) in paths.iter().enumerate() {
            let r = &results[which];
            let throughput = median(r.iter().map(|s| mb / s.seconds).collect());
            let cpu = median(r.iter().map(|s| s.cpu_seconds).collect());
            let rss = median(r.iter().map(|s| s.peak_rss_mb).collect());
            println!("| {parallel} | {name} | {throughput:.1} | {cpu:.2} | {rss:.0} |");
            medians.push((throughput, cpu, rss));
        }
        for which in 1..paths.len() {
            // Each repetition against the direct send of the same repetition (same moment
            // of the machine's drift), then the median of those ratios.
            let paired = |value: fn(&Sample) -> f64| {
                median(
                    results[which]
                        .iter()
                        .zip(&results[0])
                        .map(|(s, direct)| value(s) / value(direct))
                        .collect(),
                )
            };
            summary.push((
                parallel,
                paths[which].0,
                [
                    medians[which].0 / medians[0].0,
                    medians[which].1 / medians[0].1,
                    medians[which].2 / medians[0].2,
                ],
                [
                    paired(|s| 1.0 / s.seconds),
                    paired(|s| s.cpu_seconds),
                    paired(|s| s.peak_rss_mb),
                ],
            ));
        }
    }
    println!("\n| senders | path | throughput / direct (target ≥ 0.9) | CPU / direct (≤ 1.5) | peak RSS / direct (≤ 1.15) |");
    println!("|---|---|---|---|---|");
    for (parallel, name, [t, c, r], [pt, pc, pr]) in summary {
        println!("| {parallel} | {name} | {t:.2} (paired {pt:.2}) | {c:.2} (paired {pc:.2}) | {r:.2} (paired {pr:.2}) |");
    }
    println!("\n(ratio of the medians; \"paired\": median of each repetition's ratio to the direct send of the same repetition)");
    println!(
        "\n(medians of {repetitions} interleaved runs; studies of {study_mb} MB; token requests at the provider: {})",
        idp.token_requests()
    );
}
