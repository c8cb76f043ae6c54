//! The status page (GET /dicomweb-oauth/ui) in a real browser: Debian's headless
//! Chromium driven by playwright-core (fixtures/browser/check-ui.js) against a
//! real Orthanc with the plugin and the real identity provider. The page must
//! list the configured servers, its Test button must obtain a token through the
//! plugin, errors must be shown, and the browser must log no error.
//!
//! Needs the Debian package `chromium` and `npm ci` in fixtures/browser:
//! scripts/setup installs both. Set STATUS_PAGE_SCREENSHOT_OUT=/abs/path.png to
//! keep a copy of the screenshot (docs/status-page.png is made that way).

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testkit::{Idp, OrthancBuilder};

const SECRET: &str = "status-page-secret-8d41";
const CHROMIUM: &str = "/usr/bin/chromium";
/// check-ui.js bounds itself to 30 s; this is only a backstop.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

/// A scratch directory removed on drop (kept, and named, when the test fails).
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!("status-page-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a scratch directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "status_page: screenshot and check-ui.js output kept in {}",
                self.0.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The browser fixture, or a failure that says how to install it.
fn browser_fixture() -> PathBuf {
    let setup = "run scripts/setup (it installs the Debian package chromium and runs npm ci in fixtures/browser)";
    let fixture = testkit::workspace_root().join("fixtures/browser");
    let chromium =
        std::env::var_os("CHROMIUM_PATH").map_or_else(|| PathBuf::from(CHROMIUM), PathBuf::from);
    assert!(
        chromium.exists(),
        "{} not found: the status page test needs headless Chromium: {setup}",
        chromium.display()
    );
    assert!(
        fixture
            .join("node_modules/playwright-core/package.json")
            .exists(),
        "{}/node_modules/playwright-core missing: {setup}",
        fixture.display()
    );
    fixture.join("check-ui.js")
}

/// Runs check-ui.js; returns its exit success, its JSON report and its stderr.
fn check_ui(script: &Path, scratch: &Path, args: &[&str]) -> (bool, Value, String) {
    let stdout_path = scratch.join("check-ui.stdout");
    let stderr_path = scratch.join("check-ui.stderr");
    let mut child = Command::new("node")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run node ({e}): run scripts/setup"));
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for check-ui.js") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "check-ui.js did not finish within {SCRIPT_TIMEOUT:?}; stderr:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let report = stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str::<Value>(line).ok())
        .unwrap_or_else(|| {
            panic!("check-ui.js printed no JSON report ({status}); stdout:\n{stdout}\nstderr:\n{stderr}")
        });
    (status.success(), report, stderr)
}

/// Width and height from a PNG's IHDR chunk, after checking its signature.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(
        bytes.len() > 24 && bytes.starts_with(b"\x89PNG\r\n\x1a\n") && &bytes[12..16] == b"IHDR",
        "the screenshot is not a PNG file"
    );
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

#[test]
fn the_status_page_lists_servers_and_its_test_button_gets_a_token() {
    let script = browser_fixture();
    let idp = Idp::start(&json!({
        "accessTokenTtl": 300,
        "clients": [{"client_id": "orthanc", "client_secret": SECRET,
                     "token_endpoint_auth_method": "client_secret_post", "scope": "dicom.read"}]
    }));
    let closed_port = testkit::free_port();
    let orthanc = OrthancBuilder::new()
        .oauth(json!({"Servers": {
            "cloud-pacs": {
                "Url": "https://pacs.example.org/dicom-web",
                "TokenEndpoint": idp.token_endpoint(),
                "ClientId": "orthanc",
                "ClientSecret": SECRET,
                "Scope": "dicom.read"
            },
            "offline-archive": {
                "Url": "https://archive.example.org/dicom-web",
                "TokenEndpoint": format!("http://127.0.0.1:{closed_port}/token"),
                "ClientId": "orthanc",
                "ClientSecret": SECRET,
                "ResilienceConfig": {"RetryMaxAttempts": 1}
            }
        }}))
        .start();

    // The page itself: HTML, self-contained, nothing secret in it.
    let page = orthanc.get("/dicomweb-oauth/ui");
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(
        page.content_type
            .as_deref()
            .is_some_and(|t| t.starts_with("text/html")),
        "content type {:?}",
        page.content_type
    );
    let html = page.text();
    testkit::assert_no_secrets("the status page", &html, &[SECRET]);
    let lower = html.to_ascii_lowercase();
    for external in [
        "src=\"http",
        "href=\"http",
        "src=\"//",
        "href=\"//",
        "url(http",
        "@import",
    ] {
        assert!(
            !lower.contains(external),
            "the page loads something external ({external})"
        );
    }

    // The plugin's background refreshers fetch a token for each server at
    // start-up: wait until both have a settled state the page can show.
    testkit::wait_for(
        "the refreshers' first results",
        Duration::from_secs(30),
        || {
            let status = orthanc.get("/dicomweb-oauth/status").json();
            let servers = status["data"]["servers"].as_array()?.clone();
            let settled = servers.len() == 2
                && servers[0]["has_cached_token"] == true
                && servers[1]["last_error"]["error_code"].is_string();
            settled.then_some(())
        },
    );

    let scratch = Scratch::new();
    let screenshot = scratch.0.join("status-page.png");
    let url = orthanc.url("/dicomweb-oauth/ui");
    let (ok, report, stderr) = check_ui(
        &script,
        &scratch.0,
        &[
            &url,
            screenshot.to_str().unwrap(),
            "cloud-pacs",
            "offline-archive",
        ],
    );
    assert!(ok, "check-ui.js failed: {stderr}\nreport: {report:#}");
    eprintln!("check-ui.js report: {report}");

    // Both servers are listed, in the configuration's order.
    assert_eq!(
        report["servers"],
        json!(["cloud-pacs", "offline-archive"]),
        "{report:#}"
    );
    // The click went through the plugin, which answered with a token.
    let result = report["test_result"].as_str().unwrap_or_default();
    assert!(
        result.starts_with("Success: token from ") && result.contains("expires in"),
        "test result of cloud-pacs: {result:?}"
    );
    let log = orthanc.log();
    for server in ["cloud-pacs", "offline-archive"] {
        assert!(
            log.contains(&format!("POST /dicomweb-oauth/servers/{server}/test")),
            "the browser's Test click for {server} never reached Orthanc"
        );
    }
    let rows = &report["rows"];
    let token = rows["cloud-pacs"]["token"].as_str().unwrap_or_default();
    assert!(
        token.contains("cached") && token.contains("expires in"),
        "token cell: {token:?}"
    );
    let countdown = &report["countdown"];
    assert!(
        countdown[0].is_string() && countdown[0] != countdown[1],
        "the expiry countdown does not tick: {countdown}"
    );
    assert_eq!(rows["cloud-pacs"]["circuit"], "closed", "{report:#}");
    assert_eq!(rows["cloud-pacs"]["last_error"], "none", "{report:#}");
    assert_eq!(rows["cloud-pacs"]["provider"], "generic", "{report:#}");

    // The failing server: its recorded error and its own test's error, with a code.
    let last_error = rows["offline-archive"]["last_error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        last_error.starts_with("NET-"),
        "last error cell: {last_error:?}"
    );
    let failed = report["failing_test_result"].as_str().unwrap_or_default();
    assert!(
        failed.starts_with("Failed: ") && failed.contains("NET-"),
        "test result of offline-archive: {failed:?}"
    );
    assert_eq!(report["health"], "degraded", "{report:#}");

    assert_eq!(
        report["console_errors"],
        json!([]),
        "the browser logged errors"
    );
    let text = report["page_text"].as_str().unwrap_or_default();
    assert!(text.contains("pacs.example.org"), "{text}");
    testkit::assert_no_secrets("the rendered status page", text, &[SECRET]);

    let png = std::fs::read(&screenshot).expect("the screenshot was not written");
    let (width, height) = png_size(&png);
    assert!(
        width >= 1000 && height >= 300,
        "screenshot is {width}x{height}"
    );
    if let Some(out) = std::env::var_os("STATUS_PAGE_SCREENSHOT_OUT") {
        std::fs::copy(&screenshot, &out).expect("copy the screenshot");
    }
}
