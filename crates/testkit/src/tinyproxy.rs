//! A real forward proxy: Debian's `tinyproxy`, for testing outbound requests
//! that must go through an HTTP proxy (plain requests in absolute form, and
//! `CONNECT` tunnels for HTTPS).
//!
//! Its log (level `Connect`) has one line per proxied request, e.g.
//!
//! ```text
//! CONNECT   Dec 04 20:27:10.983 [10603]: Request (file descriptor 5): GET http://127.0.0.1:18889/x HTTP/1.1
//! CONNECT   Dec 04 20:27:11.003 [10603]: Request (file descriptor 5): CONNECT 127.0.0.1:18889 HTTP/1.1
//! ```
//!
//! so [`Tinyproxy::saw`] tells whether a request really went through the proxy.

use crate::{free_port, wait_for};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tempfile::TempDir;

const TINYPROXY: &str = "/usr/bin/tinyproxy";
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running tinyproxy on `127.0.0.1`; killed on drop.
pub struct Tinyproxy {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl Tinyproxy {
    /// Starts tinyproxy in the foreground with a generated configuration and
    /// waits until its port accepts connections.
    pub fn start() -> Tinyproxy {
        assert!(
            std::path::Path::new(TINYPROXY).exists(),
            "{TINYPROXY} not found: install tinyproxy (scripts/test does)"
        );
        let dir = tempfile::Builder::new()
            .prefix("tinyproxy-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        let log = dir.path().join("tinyproxy.log");
        // No `ConnectPort` line: tinyproxy then allows CONNECT to every port
        // (test servers listen on ephemeral ones). No `User`/`Group`: it keeps
        // the current user (and logs a warning when that is root). The PID
        // file goes in the temp dir, away from /run.
        let config = format!(
            "Port {port}\n\
             Listen 127.0.0.1\n\
             Allow 127.0.0.1\n\
             Timeout 60\n\
             MaxClients 20\n\
             LogLevel Connect\n\
             LogFile \"{log}\"\n\
             PidFile \"{pid}\"\n",
            log = log.display(),
            pid = dir.path().join("tinyproxy.pid").display(),
        );
        let config_path = dir.path().join("tinyproxy.conf");
        std::fs::write(&config_path, config).expect("write tinyproxy.conf");
        // With `LogFile` set it writes nothing useful to stdout/stderr, but
        // keep them (start-up errors before the log is opened) next to it.
        let output = std::fs::File::create(dir.path().join("tinyproxy.out")).expect("output file");
        let mut child = Command::new(TINYPROXY)
            .arg("-d")
            .arg("-c")
            .arg(&config_path)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("output file"))
            .stderr(output)
            .spawn()
            .expect("start tinyproxy");
        let ready = wait_for("tinyproxy to accept connections", START_TIMEOUT, || {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(Err(status));
            }
            TcpStream::connect(("127.0.0.1", port)).ok().map(|_| Ok(()))
        });
        let proxy = Tinyproxy { child, port, dir };
        if let Err(status) = ready {
            panic!(
                "tinyproxy exited during start-up ({status}); its log:\n{}{}",
                proxy.log(),
                std::fs::read_to_string(proxy.dir.path().join("tinyproxy.out")).unwrap_or_default()
            );
        }
        proxy
    }

    /// The free loopback port it was started on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT` (the proxy URL for a client's configuration).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Where it logs (in its temp dir, removed on drop).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("tinyproxy.log")
    }

    /// The log so far (tinyproxy writes each line as it happens).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Whether the log mentions `needle`, e.g. `"CONNECT 127.0.0.1:PORT"` or
    /// `"GET http://127.0.0.1:PORT/path"`.
    pub fn saw(&self, needle: &str) -> bool {
        self.log().contains(needle)
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
