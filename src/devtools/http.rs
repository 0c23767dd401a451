//! A tiny threaded HTTP/1.1 server and client on `std::net`, enough for dev servers (JWKS,
//! echo upstream) and for talking to Envoy (listeners and admin API) in tests. Not a general
//! HTTP implementation: no pipelining, no trailers, no TLS (TLS tests use curl).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Requests and responses larger than this are refused (the dev servers face only tests).
const MAX_BODY: usize = 64 << 20;
const MAX_HEAD_LINE: usize = 64 << 10;

/// A request as the server saw it.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    /// The request target exactly as sent (path and query).
    pub target: String,
    pub version: String,
    /// Header names lower-cased, in arrival order, duplicates kept.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// A response, built by a handler or parsed by the client.
#[derive(Debug, Clone, Default)]
pub struct Response {
    pub status: u16,
    /// Header names lower-cased when parsed by the client; as given when built by a handler.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            body: body.into(),
        }
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Self::new(status, "application/json", value.to_string())
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body as text (lossy), for assertions and messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json_body(&self) -> io::Result<serde_json::Value> {
        serde_json::from_slice(&self.body).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("body is not JSON ({e}): {}", self.text()),
            )
        })
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// What a handler answers: a response, or `None` to drop the connection without one
/// (simulates a server that resets connections).
pub type Handler = Arc<dyn Fn(&Request) -> Option<Response> + Send + Sync>;

/// A running server. Stops (and joins its accept thread) on drop.
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `bind` (e.g. `127.0.0.1:0`) and serves every connection on its own thread.
    pub fn start(bind: &str, handler: Handler) -> io::Result<Self> {
        let listener = TcpListener::bind(bind)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let accept = std::thread::Builder::new()
            .name(format!("http-{addr}"))
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop_flag.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let handler = handler.clone();
                    let stop_flag = stop_flag.clone();
                    // A failed spawn only loses this connection.
                    let _ = std::thread::Builder::new()
                        .name("http-conn".into())
                        .spawn(move || serve_connection(conn, &handler, &stop_flag));
                }
            })?;
        Ok(Self {
            addr,
            stop,
            accept: Some(accept),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting. Connections in progress finish their current request.
    pub fn stop(&mut self) {
        if self.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        // Wake the blocking accept() so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve_connection(conn: TcpStream, handler: &Handler, stop: &AtomicBool) {
    let _ = conn.set_nodelay(true);
    let Ok(write_half) = conn.try_clone() else {
        return;
    };
    let mut writer = write_half;
    let mut reader = BufReader::new(conn);
    // Keep-alive: Envoy reuses upstream connections, which matters for load tests.
    while !stop.load(Ordering::SeqCst) {
        let req = match read_request(&mut reader) {
            Ok(Some(req)) => req,
            _ => return,
        };
        let close = req
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
            || req.version == "HTTP/1.0";
        let Some(resp) = handler(&req) else {
            let _ = writer.shutdown(Shutdown::Both);
            return;
        };
        // A response to HEAD has the length of the body it would have, but no body.
        let head = req.method.eq_ignore_ascii_case("HEAD");
        if write_response(&mut writer, &resp, close, head).is_err() || close {
            return;
        }
    }
}

fn read_line(reader: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    let n = reader
        .by_ref()
        .take(MAX_HEAD_LINE as u64)
        .read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if !line.ends_with(b"\n") {
        return Err(invalid("header line too long or truncated"));
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    Ok(Some(String::from_utf8_lossy(&line).into_owned()))
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn read_headers(reader: &mut impl BufRead) -> io::Result<Vec<(String, String)>> {
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?.ok_or_else(|| invalid("eof in headers"))?;
        if line.is_empty() {
            return Ok(headers);
        }
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| invalid(format!("bad header line {line:?}")))?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
}

fn is_chunked(headers: &[(String, String)]) -> bool {
    find_header(headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
}

/// Reads a body framed by content-length or chunked encoding; `None` framing reads to EOF.
fn read_body(
    reader: &mut impl BufRead,
    headers: &[(String, String)],
    to_eof: bool,
) -> io::Result<Vec<u8>> {
    if is_chunked(headers) {
        let mut body = Vec::new();
        loop {
            let size_line = read_line(reader)?.ok_or_else(|| invalid("eof in chunk size"))?;
            let size_hex = size_line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|_| invalid(format!("bad chunk size {size_line:?}")))?;
            if size == 0 {
                // Trailers, then the final empty line.
                while read_line(reader)?.is_some_and(|l| !l.is_empty()) {}
                return Ok(body);
            }
            if body.len() + size > MAX_BODY {
                return Err(invalid("body too large"));
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..])?;
            read_line(reader)?;
        }
    }
    if let Some(len) = find_header(headers, "content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| invalid(format!("bad content-length {len:?}")))?;
        if len > MAX_BODY {
            return Err(invalid("body too large"));
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        return Ok(body);
    }
    let mut body = Vec::new();
    if to_eof {
        reader.take(MAX_BODY as u64).read_to_end(&mut body)?;
    }
    Ok(body)
}

pub(crate) fn read_request(reader: &mut impl BufRead) -> io::Result<Option<Request>> {
    let Some(line) = read_line(reader)? else {
        return Ok(None);
    };
    let mut parts = line.splitn(3, ' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid(format!("bad request line {line:?}")));
    };
    let headers = read_headers(reader)?;
    let body = read_body(reader, &headers, false)?;
    Ok(Some(Request {
        method: method.to_string(),
        target: target.to_string(),
        version: version.to_string(),
        headers,
        body,
    }))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

pub(crate) fn write_response(
    w: &mut impl Write,
    resp: &Response,
    close: bool,
    head: bool,
) -> io::Result<()> {
    let mut head_text = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (k, v) in &resp.headers {
        if k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("connection") {
            continue;
        }
        head_text.push_str(&format!("{k}: {v}\r\n"));
    }
    head_text.push_str(&format!("content-length: {}\r\n", resp.body.len()));
    if close {
        head_text.push_str("connection: close\r\n");
    }
    head_text.push_str("\r\n");
    w.write_all(head_text.as_bytes())?;
    if !head {
        w.write_all(&resp.body)?;
    }
    w.flush()
}

/// Parses a whole HTTP/1.x response (status line, headers, body). Also reads curl's `-i`
/// output, where curl has already removed the chunked framing.
pub fn parse_response(raw: &[u8]) -> io::Result<Response> {
    parse(raw, false).map(|(resp, _)| resp)
}

/// The response in `raw` when all of it has arrived by its framing (content-length, chunked,
/// or no body by definition); None while more is to come. For keep-alive clients.
pub fn complete_response(raw: &[u8]) -> Option<Response> {
    match parse(raw, false) {
        Ok((resp, true)) => Some(resp),
        _ => None,
    }
}

/// Parses a response; the flag tells whether its length was known from its framing
/// (content-length, chunked, or no body by definition) rather than from the end of input.
fn parse(raw: &[u8], head_only: bool) -> io::Result<(Response, bool)> {
    let mut reader = BufReader::new(raw);
    loop {
        let line = read_line(&mut reader)?.ok_or_else(|| invalid("empty response"))?;
        let status = parse_status(&line)?;
        let headers = read_headers(&mut reader)?;
        if (100..200).contains(&status) {
            // Interim response (e.g. `100 Continue`): the real one follows.
            continue;
        }
        if head_only || status == 204 || status == 304 {
            let resp = Response {
                status,
                headers,
                body: Vec::new(),
            };
            return Ok((resp, true));
        }
        let framed = find_header(&headers, "content-length").is_some() || is_chunked(&headers);
        let body = read_body(&mut reader, &headers, true)?;
        return Ok((
            Response {
                status,
                headers,
                body,
            },
            framed,
        ));
    }
}

fn parse_status(line: &str) -> io::Result<u16> {
    line.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line {line:?}")))
}

/// A request for [`send`].
#[derive(Debug, Clone)]
pub struct Call<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: Vec<(&'a str, String)>,
    pub body: &'a [u8],
    pub timeout: Duration,
}

impl<'a> Call<'a> {
    pub fn get(path: &'a str) -> Self {
        Self {
            method: "GET",
            path,
            headers: Vec::new(),
            body: b"",
            timeout: Duration::from_secs(30),
        }
    }

    pub fn method(mut self, method: &'a str) -> Self {
        self.method = method;
        self
    }

    pub fn header(mut self, name: &'a str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", format!("Bearer {token}"))
    }

    pub fn body(mut self, body: &'a [u8]) -> Self {
        self.body = body;
        self
    }
}

/// Sends one request on a fresh connection (`connection: close`) and reads the response.
/// A `host` header is added (the target address) unless the call sets one.
pub fn send(addr: impl ToSocketAddrs, call: &Call<'_>) -> io::Result<Response> {
    let addr = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| invalid("no address"))?;
    let mut conn = TcpStream::connect_timeout(&addr, call.timeout)?;
    conn.set_read_timeout(Some(call.timeout))?;
    conn.set_write_timeout(Some(call.timeout))?;
    let mut head = format!("{} {} HTTP/1.1\r\n", call.method, call.path);
    if !call
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("host"))
    {
        head.push_str(&format!("host: {addr}\r\n"));
    }
    for (k, v) in &call.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !call.body.is_empty() || !matches!(call.method, "GET" | "HEAD" | "OPTIONS" | "DELETE") {
        head.push_str(&format!("content-length: {}\r\n", call.body.len()));
    }
    head.push_str("connection: close\r\n\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(call.body);
    // One write: a server that answers before reading the body (a local reply) must not get
    // body bytes after it closed, or the kernel resets the connection under the response.
    conn.write_all(&request)?;
    let head_only = call.method == "HEAD";
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if raw.len() > MAX_BODY {
                    return Err(invalid("response too large"));
                }
                // Done as soon as the framing says so: Envoy closes only after its
                // delayed_close_timeout (1 s) following a local reply.
                if let Ok((resp, true)) = parse(&raw, head_only) {
                    return Ok(resp);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && !raw.is_empty() => break,
            Err(e) => return Err(e),
        }
    }
    parse(&raw, head_only).map(|(resp, _)| resp)
}

/// `GET path` on `addr`.
pub fn get(addr: impl ToSocketAddrs, path: &str) -> io::Result<Response> {
    send(addr, &Call::get(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo_server() -> Server {
        Server::start(
            "127.0.0.1:0",
            Arc::new(|req: &Request| {
                if req.target == "/drop" {
                    return None;
                }
                let mut r = Response::new(201, "text/plain", req.body.clone());
                r.headers.push(("x-target".into(), req.target.clone()));
                r.headers.push((
                    "x-seen".into(),
                    req.header("x-test").unwrap_or("-").to_string(),
                ));
                Some(r)
            }),
        )
        .unwrap()
    }

    #[test]
    fn round_trip() {
        let srv = echo_server();
        let resp = send(
            srv.addr(),
            &Call::get("/a?b=c")
                .method("POST")
                .header("X-Test", "yes")
                .body(b"hello"),
        )
        .unwrap();
        assert_eq!(resp.status, 201);
        assert_eq!(resp.header("X-TARGET"), Some("/a?b=c"));
        assert_eq!(resp.header("x-seen"), Some("yes"));
        assert_eq!(resp.text(), "hello");
    }

    #[test]
    fn dropped_connection_is_an_error() {
        let srv = echo_server();
        assert!(get(srv.addr(), "/drop").is_err());
    }

    #[test]
    fn keep_alive_serves_several_requests() {
        let srv = echo_server();
        let mut conn = TcpStream::connect(srv.addr()).unwrap();
        conn.write_all(b"GET /one HTTP/1.1\r\nhost: x\r\n\r\nGET /two HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .unwrap();
        let mut raw = String::new();
        conn.read_to_string(&mut raw).unwrap();
        assert!(
            raw.contains("x-target: /one") && raw.contains("x-target: /two"),
            "{raw}"
        );
    }

    #[test]
    fn parses_chunked_and_interim_responses() {
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        let resp = parse_response(raw).unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("x-a"), Some("1"));
        assert_eq!(resp.text(), "hello world");
    }

    #[test]
    fn stopped_server_refuses() {
        let mut srv = echo_server();
        let addr = srv.addr();
        srv.stop();
        assert!(get(addr, "/").is_err());
    }
}
