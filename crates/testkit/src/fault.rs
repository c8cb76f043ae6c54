//! `FaultServer`: an HTTP/1.1 server that misbehaves on purpose.
//!
//! The real identity provider (`Idp`) answers correctly; to test how the
//! plugin copes with a token endpoint that fails — error statuses, malformed
//! bodies, slow answers, connections dropped mid-request — a test scripts the
//! answers here instead: request `i` gets `script[i]`, and every request after
//! the end of the script gets the last entry again.
//!
//! It is deliberately small and blocking (a thread per connection on a
//! loopback `TcpListener`), but it reads requests the way real clients send
//! them — `Content-Length` and chunked bodies, `Expect: 100-continue`,
//! several requests on one kept-alive connection (HTTP clients pool
//! connections) — and records each request before answering, so a test can
//! check what was sent even when the answer is a dropped connection.

use crate::TestCert;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// Longest request line or header line accepted (bytes, with the CRLF).
const MAX_LINE: u64 = 64 * 1024;
/// Most header (or chunked-trailer) lines accepted in one request.
const MAX_HEADERS: usize = 256;
/// Largest request body accepted.
const MAX_BODY: usize = 64 << 20;
/// Empty lines tolerated before a request line (RFC 9112 §2.2 allows some).
const MAX_LEADING_EMPTY_LINES: usize = 8;
/// Consecutive failed `accept` calls after which the server stops accepting
/// (so a persistent error such as running out of descriptors cannot spin).
const MAX_ACCEPT_ERRORS: usize = 100;

/// What the server does with one request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// A complete response. `Content-Length` is added unless `headers` has one
    /// (so a test can also send a lying length); `Connection: close` is added
    /// when the client asked to close.
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Waits `delay`, then does `then`. The wait ends at once when the server
    /// is dropped (the connection is then closed without an answer), so a
    /// test that times out early does not hang in `Drop`.
    Delay { delay: Duration, then: Box<Fault> },
    /// Reads the whole request, then closes the connection without answering.
    CloseConnection,
    /// Answers with `then` as soon as the request head has arrived, without reading
    /// the body, and closes the connection: what servers that check credentials
    /// before anything else do. The request is recorded with an empty body.
    AnswerBeforeBody(Box<Fault>),
}

impl Fault {
    /// A JSON response (`Content-Type: application/json`).
    pub fn json(status: u16, body: serde_json::Value) -> Fault {
        Fault::Respond {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }

    /// A response with the given content type and text body.
    pub fn text(status: u16, content_type: &str, body: &str) -> Fault {
        Fault::Respond {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.as_bytes().to_vec(),
        }
    }

    /// Adds a response header (to the response at the end of a `Delay`).
    ///
    /// Panics on `CloseConnection`, which has no response: that is a mistake
    /// in the test, better reported than ignored.
    pub fn with_header(self, k: &str, v: &str) -> Fault {
        match self {
            Fault::Respond {
                status,
                mut headers,
                body,
            } => {
                headers.push((k.into(), v.into()));
                Fault::Respond {
                    status,
                    headers,
                    body,
                }
            }
            Fault::Delay { delay, then } => Fault::Delay {
                delay,
                then: Box::new(then.with_header(k, v)),
            },
            Fault::CloseConnection => {
                panic!("Fault::CloseConnection sends no response to add the header {k} to")
            }
            Fault::AnswerBeforeBody(then) => {
                Fault::AnswerBeforeBody(Box::new(then.with_header(k, v)))
            }
        }
    }
}

/// One request as the server received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// The request target as sent: the path with its query (or an absolute
    /// URL, when a proxy forwards it as such).
    pub path: String,
    /// In the order received, names lower-cased, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked if it was sent chunked.
    pub body: Vec<u8>,
    /// Which connection carried it, numbered from 0 in the order accepted:
    /// equal numbers mean the client reused (kept alive) a connection.
    pub connection: usize,
}

impl RecordedRequest {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as `application/x-www-form-urlencoded` (how OAuth2
    /// token requests are sent): percent-decoded, `+` read as a space.
    pub fn form(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(&self.body).into_owned().collect()
    }

    /// The body as text (lossy), for assertions and failure messages.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A scripted HTTP(S) server on `127.0.0.1`; stopped on drop (its threads
/// joined, its listener and connections closed).
pub struct FaultServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    scheme: &'static str,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultServer {
    /// An HTTP server playing `script` (which must not be empty).
    pub fn start(script: Vec<Fault>) -> FaultServer {
        Self::launch(script, None)
    }

    /// The same over TLS, presenting `cert` (clients must trust its CA).
    pub fn start_tls(script: Vec<Fault>, cert: &TestCert) -> FaultServer {
        Self::launch(script, Some(cert.rustls_server_config()))
    }

    fn launch(script: Vec<Fault>, tls: Option<Arc<rustls::ServerConfig>>) -> FaultServer {
        assert!(!script.is_empty(), "a FaultServer script needs a Fault");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().expect("listener address");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                script,
                position: 0,
                requests: Vec::new(),
                broken_bodies: 0,
            }),
            stopping: Mutex::new(false),
            stop_signal: Condvar::new(),
            connections: Mutex::new(Vec::new()),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("fault-server-{}", addr.port()))
                .spawn(move || accept_loop(listener, shared, tls))
                .expect("spawn the accept thread")
        };
        FaultServer {
            shared,
            addr,
            scheme,
            acceptor: Some(acceptor),
        }
    }

    /// `http://127.0.0.1:PORT{path}` (or `https://…` for `start_tls`).
    pub fn url(&self, path: &str) -> String {
        format!("{}://127.0.0.1:{}{path}", self.scheme, self.addr.port())
    }

    /// The ephemeral loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.state).requests.clone()
    }

    /// How many requests have been received (and recorded) so far; poll it
    /// with `wait_for` to know that a request arrived.
    pub fn request_count(&self) -> usize {
        lock(&self.shared.state).requests.len()
    }

    /// How many requests arrived with a body that broke off (the connection
    /// ended mid-body, or the framing was bad); they are not recorded.
    pub fn broken_body_count(&self) -> usize {
        lock(&self.shared.state).broken_bodies
    }

    /// Replaces the script and starts it again from its first entry (the
    /// recorded requests are kept).
    pub fn set_script(&self, script: Vec<Fault>) {
        assert!(!script.is_empty(), "a FaultServer script needs a Fault");
        let mut state = lock(&self.shared.state);
        state.script = script;
        state.position = 0;
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        *lock(&self.shared.stopping) = true;
        // Ends every `Delay` in progress.
        self.shared.stop_signal.notify_all();
        if let Some(acceptor) = self.acceptor.take() {
            // `accept` blocks; a connection of our own wakes it, it sees
            // `stopping` and returns, dropping (closing) the listener. Should
            // that connection fail, the thread is left behind rather than
            // joined forever.
            if TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)).is_ok() {
                let _ = acceptor.join();
            }
        }
        // No connection is added after the acceptor has stopped. Shutting the
        // sockets down ends reads blocked on idle kept-alive connections.
        let connections = std::mem::take(&mut *lock(&self.shared.connections));
        for connection in &connections {
            let _ = connection.socket.shutdown(Shutdown::Both);
        }
        for connection in connections {
            let _ = connection.thread.join();
        }
    }
}

struct State {
    script: Vec<Fault>,
    position: usize,
    requests: Vec<RecordedRequest>,
    /// Requests whose body broke off before it was complete (not recorded).
    broken_bodies: usize,
}

struct Shared {
    state: Mutex<State>,
    stopping: Mutex<bool>,
    stop_signal: Condvar,
    connections: Mutex<Vec<Connection>>,
}

struct Connection {
    /// A handle on the connection's socket, to shut it down from `Drop`.
    socket: TcpStream,
    thread: JoinHandle<()>,
}

impl Shared {
    fn is_stopping(&self) -> bool {
        *lock(&self.stopping)
    }

    /// Whether the script's next answer is a [`Fault::AnswerBeforeBody`].
    fn next_answers_before_body(&self) -> bool {
        let state = lock(&self.state);
        let index = state.position.min(state.script.len() - 1);
        matches!(state.script[index], Fault::AnswerBeforeBody(_))
    }

    /// Records `request` and returns the script's answer to it.
    fn record(&self, request: RecordedRequest) -> Fault {
        let mut state = lock(&self.state);
        state.requests.push(request);
        let index = state.position.min(state.script.len() - 1);
        state.position += 1;
        state.script[index].clone()
    }

    /// Waits `delay` unless the server stops first; false if it stopped.
    fn wait_unless_stopping(&self, delay: Duration) -> bool {
        let stopping = lock(&self.stopping);
        let (stopping, _) = self
            .stop_signal
            .wait_timeout_while(stopping, delay, |stopping| !*stopping)
            .unwrap_or_else(PoisonError::into_inner);
        !*stopping
    }
}

/// A lock that survives a panicked holder: a failing test must still be able
/// to read what was recorded and to stop the server.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, tls: Option<Arc<rustls::ServerConfig>>) {
    let mut errors = 0;
    // Ends when the server stops (see `Drop`), or after too many errors.
    for (number, incoming) in listener.incoming().enumerate() {
        if shared.is_stopping() {
            break;
        }
        let Ok(stream) = incoming else {
            errors += 1;
            if errors >= MAX_ACCEPT_ERRORS {
                break;
            }
            continue;
        };
        errors = 0;
        let Ok(socket) = stream.try_clone() else {
            continue;
        };
        let thread = {
            let shared = Arc::clone(&shared);
            let tls = tls.clone();
            std::thread::Builder::new()
                .name(format!("fault-connection-{number}"))
                .spawn(move || serve_connection(stream, number, &shared, tls))
        };
        let Ok(thread) = thread else {
            continue;
        };
        let mut connections = lock(&shared.connections);
        // Forget finished connections so a long test does not accumulate them.
        connections.retain(|c| !c.thread.is_finished());
        connections.push(Connection { socket, thread });
    }
}

fn serve_connection(
    stream: TcpStream,
    number: usize,
    shared: &Shared,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let _ = stream.set_nodelay(true);
    // `Drop` holds another handle on this socket, so dropping `stream` alone
    // would not close the connection: it is shut down explicitly at the end.
    let socket = stream.try_clone();
    // Errors (a client that goes away, a failed TLS handshake) just end the connection.
    let _ = match tls {
        None => serve(stream, number, shared),
        Some(config) => match rustls::ServerConnection::new(config) {
            Ok(connection) => serve(rustls::StreamOwned::new(connection, stream), number, shared),
            Err(e) => Err(io::Error::other(e)),
        },
    };
    if let Ok(socket) = socket {
        let _ = socket.shutdown(Shutdown::Both);
    }
}

/// A connection's byte stream, plain or TLS.
trait Transport: Read + Write {
    /// Ends the stream politely before the socket is closed.
    fn finish(&mut self) {}
    fn socket(&self) -> &TcpStream;
}

impl Transport for TcpStream {
    fn socket(&self) -> &TcpStream {
        self
    }
}

impl Transport for rustls::StreamOwned<rustls::ServerConnection, TcpStream> {
    fn finish(&mut self) {
        self.conn.send_close_notify();
        let _ = self.flush();
    }

    fn socket(&self) -> &TcpStream {
        &self.sock
    }
}

/// A lingering close after an answer sent before the body was read: stop writing,
/// then read and discard what the client still sends (≤ 5 s), so the unread body
/// does not turn the close into a reset that could destroy the answer in flight.
fn linger<S: Transport>(reader: &mut BufReader<S>) {
    let stream = reader.get_mut();
    stream.finish();
    let _ = stream.socket().shutdown(Shutdown::Write);
    let _ = stream
        .socket()
        .set_read_timeout(Some(Duration::from_millis(500)));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut sink = vec![0; 64 << 10];
    while std::time::Instant::now() < deadline {
        match reader.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut => {
            }
            Err(_) => break,
        }
    }
}

/// Serves requests on one connection until the client closes it, a request
/// or the script says to close, or the server stops.
fn serve<S: Transport>(stream: S, number: usize, shared: &Shared) -> io::Result<()> {
    let mut reader = BufReader::new(stream);
    loop {
        let Some(head) = read_head(&mut reader, number)? else {
            return Ok(());
        };
        if shared.next_answers_before_body() {
            let fault = shared.record(head.request);
            let Some((status, mut headers, body)) = resolve(fault, shared) else {
                return Ok(());
            };
            headers.push(("Connection".into(), "close".into()));
            let stream = reader.get_mut();
            write_response(stream, status, &headers, &body, false, head.head_only)?;
            linger(&mut reader);
            return Ok(());
        }
        let incoming = match read_body(&mut reader, head) {
            Ok(incoming) => incoming,
            Err(e) => {
                lock(&shared.state).broken_bodies += 1;
                return Err(e);
            }
        };
        let fault = shared.record(incoming.request);
        let Some((status, headers, body)) = resolve(fault, shared) else {
            // Dropping the stream closes the socket, with no answer.
            return Ok(());
        };
        let keep_alive = incoming.keep_alive && !has_token(&headers, "connection", "close");
        let stream = reader.get_mut();
        write_response(
            stream,
            status,
            &headers,
            &body,
            keep_alive,
            incoming.head_only,
        )?;
        if !keep_alive {
            stream.finish();
            return Ok(());
        }
    }
}

type Response = (u16, Vec<(String, String)>, Vec<u8>);

/// Plays out `Delay`s; `None` means close without answering.
fn resolve(mut fault: Fault, shared: &Shared) -> Option<Response> {
    // Each turn unwraps one `Delay` of a finite chain.
    loop {
        match fault {
            Fault::Respond {
                status,
                headers,
                body,
            } => return Some((status, headers, body)),
            Fault::CloseConnection => return None,
            Fault::AnswerBeforeBody(then) => fault = *then,
            Fault::Delay { delay, then } => {
                if !shared.wait_unless_stopping(delay) {
                    return None;
                }
                fault = *then;
            }
        }
    }
}

struct Incoming {
    request: RecordedRequest,
    keep_alive: bool,
    head_only: bool,
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

fn truncated() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "request truncated")
}

/// One line without its CRLF (or bare LF); `None` at end of stream before any byte.
fn read_line(reader: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    let n = reader.take(MAX_LINE).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.pop() != Some(b'\n') {
        return Err(invalid("line too long, or cut off"));
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(String::from_utf8_lossy(&line).into_owned()))
}

/// Reads header lines up to the empty line that ends them.
fn read_fields(reader: &mut impl BufRead) -> io::Result<Vec<(String, String)>> {
    let mut fields = Vec::new();
    for _ in 0..=MAX_HEADERS {
        let line = read_line(reader)?.ok_or_else(truncated)?;
        if line.is_empty() {
            return Ok(fields);
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| invalid("header line without a colon"))?;
        fields.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    Err(invalid("too many header lines"))
}

/// Whether a comma-separated header (any of its occurrences) has `token`.
fn has_token(headers: &[(String, String)], name: &str, token: &str) -> bool {
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// A request whose head has been read, its body not yet.
struct Head {
    request: RecordedRequest,
    keep_alive: bool,
    head_only: bool,
    chunked: bool,
    content_length: Option<usize>,
    expects_continue: bool,
}

/// Reads one request head; `None` if the client closed the connection between requests.
fn read_head<S: Transport>(
    reader: &mut BufReader<S>,
    connection: usize,
) -> io::Result<Option<Head>> {
    let mut request_line = None;
    for _ in 0..=MAX_LEADING_EMPTY_LINES {
        match read_line(reader)? {
            None => return Ok(None),
            Some(line) if line.is_empty() => continue,
            Some(line) => {
                request_line = Some(line);
                break;
            }
        }
    }
    let request_line = request_line.ok_or_else(|| invalid("only empty lines"))?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(path), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("malformed request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(invalid("not HTTP/1.x"));
    }
    let (method, path, http10) = (method.to_owned(), path.to_owned(), version == "HTTP/1.0");
    let headers = read_fields(reader)?;

    let chunked = headers
        .iter()
        .filter(|(k, _)| k == "transfer-encoding")
        .flat_map(|(_, v)| v.split(','))
        .last()
        .is_some_and(|coding| coding.trim().eq_ignore_ascii_case("chunked"));
    let content_length = match headers.iter().find(|(k, _)| k == "content-length") {
        Some((_, v)) if !chunked => Some(
            v.parse::<usize>()
                .map_err(|_| invalid("bad Content-Length"))?,
        ),
        _ => None,
    };
    let expects_continue = !http10
        && has_token(&headers, "expect", "100-continue")
        && (chunked || content_length.is_some_and(|n| n > 0));
    let keep_alive = if has_token(&headers, "connection", "close") {
        false
    } else {
        !http10 || has_token(&headers, "connection", "keep-alive")
    };
    Ok(Some(Head {
        head_only: method == "HEAD",
        keep_alive,
        chunked,
        content_length,
        expects_continue,
        request: RecordedRequest {
            method,
            path,
            headers,
            body: Vec::new(),
            connection,
        },
    }))
}

/// Reads the body of the request whose head is `head`.
fn read_body<S: Transport>(reader: &mut BufReader<S>, head: Head) -> io::Result<Incoming> {
    if head.expects_continue {
        let stream = reader.get_mut();
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        stream.flush()?;
    }
    let body = if head.chunked {
        read_chunked(reader)?
    } else if let Some(length) = head.content_length {
        if length > MAX_BODY {
            return Err(invalid("body too large"));
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        body
    } else {
        Vec::new()
    };
    Ok(Incoming {
        head_only: head.head_only,
        keep_alive: head.keep_alive,
        request: RecordedRequest {
            body,
            ..head.request
        },
    })
}

/// A chunked body (RFC 9112 §7.1): extensions ignored, trailers read and dropped.
fn read_chunked(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    // Bounded: every chunk but the last adds at least a byte, up to MAX_BODY.
    loop {
        let line = read_line(reader)?.ok_or_else(truncated)?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| invalid("bad chunk size"))?;
        if size == 0 {
            break;
        }
        if size > MAX_BODY - body.len() {
            return Err(invalid("body too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        if !read_line(reader)?.ok_or_else(truncated)?.is_empty() {
            return Err(invalid("chunk not followed by CRLF"));
        }
    }
    read_fields(reader)?;
    Ok(body)
}

fn write_response(
    stream: &mut impl Write,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
    keep_alive: bool,
    head_only: bool,
) -> io::Result<()> {
    let reason = ureq::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown");
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n").into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    // 1xx, 204 and 304 responses carry no Content-Length unless given a body.
    let bodyless = (status < 200 || status == 204 || status == 304) && body.is_empty();
    if !has("content-length") && !bodyless {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    if !keep_alive && !has("connection") {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(body);
    }
    stream.write_all(&out)?;
    stream.flush()
}
