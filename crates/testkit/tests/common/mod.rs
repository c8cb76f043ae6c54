//! A raw HTTP/1.1 client for the testkit's own tests: it writes exactly the
//! bytes a test gives it, so the server's parsing is tested and not a client's.

#![allow(dead_code)] // each test crate uses a different part

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Generous: a timeout here is a hung server, and fails the test instead of hanging it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

pub fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn line(reader: &mut impl BufRead) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).expect("read a line");
    assert!(line.ends_with("\r\n"), "line not ended by CRLF: {line:?}");
    line.truncate(line.len() - 2);
    line
}

/// Reads a status line and headers.
pub fn read_head(reader: &mut impl BufRead) -> (u16, Vec<(String, String)>) {
    let status_line = line(reader);
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut headers = Vec::new();
    for _ in 0..100 {
        let l = line(reader);
        if l.is_empty() {
            return (status, headers);
        }
        let (k, v) = l.split_once(':').expect("header line");
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    panic!("too many headers");
}

/// Reads one response with a Content-Length body (what FaultServer sends).
pub fn read_response(reader: &mut impl BufRead) -> RawResponse {
    let (status, headers) = read_head(reader);
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse().expect("Content-Length"));
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("read the body");
    RawResponse {
        status,
        headers,
        body,
    }
}

/// Asserts that the peer closes the connection with nothing more to read.
pub fn assert_closed(reader: &mut impl Read) {
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).expect("read to the end");
    assert!(
        rest.is_empty(),
        "expected the connection closed, got {:?}",
        String::from_utf8_lossy(&rest)
    );
}

/// Sends `request` on a new connection and reads one response.
pub fn exchange(port: u16, request: &str) -> RawResponse {
    let mut stream = connect(port);
    stream.write_all(request.as_bytes()).unwrap();
    read_response(&mut BufReader::new(stream))
}

/// One GET over TLS on `stream` (`Connection: close`), or the TLS/IO error.
pub fn https_get_on(
    stream: TcpStream,
    config: std::sync::Arc<rustls::ClientConfig>,
    server_name: &str,
    host: &str,
    path: &str,
) -> std::io::Result<RawResponse> {
    let name =
        rustls::pki_types::ServerName::try_from(server_name.to_owned()).expect("server name");
    let connection = rustls::ClientConnection::new(config, name).expect("client connection");
    let mut tls = rustls::StreamOwned::new(connection, stream);
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    tls.flush()?;
    let mut bytes = Vec::new();
    tls.read_to_end(&mut bytes)?;
    Ok(read_response(&mut bytes.as_slice()))
}
