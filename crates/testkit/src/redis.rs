//! A real Redis: Debian's `redis-server`, for the shared token cache.
//!
//! Each [`RedisServer`] runs in the foreground on a free loopback port, bound
//! to `127.0.0.1` only, with persistence off (`--save '' --appendonly no`) and
//! its files in a temporary directory. It can be stopped and started again on
//! the same port (an outage and a recovery, as a client sees them), and
//! [`RedisServer::cli`] runs `redis-cli` against it to look at what is stored.

use crate::tls::TestCa;
use crate::{free_port, wait_for};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tempfile::TempDir;

const REDIS_SERVER: &str = "/usr/bin/redis-server";
const REDIS_CLI: &str = "/usr/bin/redis-cli";
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `redis-server` on `127.0.0.1`; killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    password: Option<String>,
    /// The CA PEM file clients must trust, for a TLS-only server.
    tls_ca: Option<PathBuf>,
    dir: TempDir,
}

impl RedisServer {
    /// A server without authentication.
    pub fn start() -> RedisServer {
        Self::launch(None, None)
    }

    /// A server that requires `password` (`--requirepass`, the `default` user).
    pub fn start_with_password(password: &str) -> RedisServer {
        Self::launch(Some(password.to_owned()), None)
    }

    /// A TLS-only server (`rediss://`) presenting a certificate for
    /// `127.0.0.1`/`localhost` signed by `ca`; clients are not asked for one.
    pub fn start_tls(ca: &TestCa) -> RedisServer {
        Self::launch(None, Some(ca))
    }

    fn launch(password: Option<String>, ca: Option<&TestCa>) -> RedisServer {
        assert!(
            std::path::Path::new(REDIS_SERVER).exists(),
            "{REDIS_SERVER} not found: install redis-server (scripts/setup does)"
        );
        let dir = tempfile::Builder::new()
            .prefix("redis-")
            .tempdir()
            .expect("temp dir");
        let tls_ca = ca.map(|ca| {
            let cert = ca.issue_server_cert();
            std::fs::write(dir.path().join("server.pem"), &cert.cert_pem).expect("write cert");
            std::fs::write(dir.path().join("server.key"), &cert.key_pem).expect("write key");
            ca.write_ca_pem(dir.path())
        });
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            password,
            tls_ca,
            dir,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        let dir = self.dir.path();
        let mut command = Command::new(REDIS_SERVER);
        // The `--opt value` form of redis.conf directives; every one a separate argument.
        command
            .args(["--bind", "127.0.0.1", "--protected-mode", "yes"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--databases", "16"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"));
        let port = self.port.to_string();
        if self.tls_ca.is_some() {
            command
                .args(["--port", "0", "--tls-port", &port])
                .arg("--tls-cert-file")
                .arg(dir.join("server.pem"))
                .arg("--tls-key-file")
                .arg(dir.join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(dir.join("test-ca.pem"))
                .args(["--tls-auth-clients", "no"]);
        } else {
            command.args(["--port", &port]);
        }
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        let output = std::fs::File::create(dir.join("redis.out")).expect("output file");
        let child = command
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("output file"))
            .stderr(output)
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let ready = wait_for("redis-server to answer PING", START_TIMEOUT, || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Some(Err(status));
            }
            TcpStream::connect(("127.0.0.1", self.port)).ok()?;
            let pong = self.try_cli(&["PING"]).ok()?;
            (pong.trim() == "PONG").then_some(Ok(()))
        });
        if let Err(status) = ready {
            self.child = None;
            panic!(
                "redis-server exited during start-up ({status}); its log:\n{}{}",
                self.log(),
                std::fs::read_to_string(self.dir.path().join("redis.out")).unwrap_or_default()
            );
        }
    }

    /// The loopback port it listens on (kept across [`stop`](Self::stop) and
    /// [`start_again`](Self::start_again)).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT` (`rediss://` for a TLS server), without
    /// credentials or database number.
    pub fn url(&self) -> String {
        let scheme = if self.tls_ca.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The CA certificate (PEM file) a client must trust, for a TLS server.
    pub fn tls_ca_file(&self) -> Option<PathBuf> {
        self.tls_ca.clone()
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server (SIGKILL: to its clients, a crash) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (empty: nothing is persisted) and
    /// waits until it answers.
    pub fn start_again(&mut self) {
        self.spawn();
    }

    /// Runs `redis-cli` against it (with its password and TLS settings) and
    /// returns what it printed; panics if redis-cli fails.
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args)
            .unwrap_or_else(|e| panic!("redis-cli {args:?} failed: {e}"))
    }

    fn try_cli(&self, args: &[&str]) -> Result<String, String> {
        let mut command = Command::new(REDIS_CLI);
        command.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(ca) = &self.tls_ca {
            command.arg("--tls").arg("--cacert").arg(ca);
        }
        if let Some(password) = &self.password {
            // REDISCLI_AUTH rather than -a: keeps the password off the command line.
            command.env("REDISCLI_AUTH", password);
        }
        let out = command
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run {REDIS_CLI}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
