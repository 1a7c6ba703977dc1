//! A download the test interrupts: a raw HTTP/1.1 GET on a connection
//! with a small receive buffer, so that the server is held back by the
//! client. The test reads the head and the first bytes of the body, does
//! something to the server's world (deletes the path, makes a file
//! unreadable, kills the server), then reads to the end, and learns
//! whether the body it got is complete: the whole `Content-Length`, or a
//! chunked body that ended with its last chunk. A short body that looks
//! complete is what the Nix client must never see (design: "a 200 whose
//! body ends early is a hard failure with no fallback").

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use socket2::{Domain, Socket, Type};

/// What a client got.
#[derive(Debug)]
pub struct Download {
    /// 0 when the connection closed before a response head.
    pub status: u16,
    /// The head, as sent (lower-cased header names are not promised).
    pub head: String,
    /// The body as sent: chunked framing removed, content encoding kept.
    pub body: Vec<u8>,
    /// The body ended as its framing says a whole body ends.
    pub complete: bool,
}

impl Download {
    /// A header's value (names case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// GET `target` from `url` (`http://127.0.0.1:PORT`) with extra header
/// lines; after the head and `first` body bytes, call `during`, then read
/// until the server closes (or 60 s pass without a byte: a hang fails the
/// test).
pub fn get_interrupted(
    url: &str,
    target: &str,
    headers: &[(&str, &str)],
    first: usize,
    during: impl FnOnce(),
) -> Download {
    let addr: SocketAddr = url
        .trim_start_matches("http://")
        .parse()
        .expect("http://IP:PORT");
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    // Small, so that the kernel buffers hold little of the body and the
    // server is still reading files when `during` runs.
    socket.set_recv_buffer_size(16 * 1024).expect("SO_RCVBUF");
    socket.connect(&addr.into()).expect("connect");
    let mut stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut request = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("send request");

    let mut raw = Vec::new();
    let mut buf = vec![0u8; 8192];
    let mut during = Some(during);
    let mut head_end = None;
    loop {
        if let Some(end) = head_end
            && raw.len() >= end + first
            && let Some(f) = during.take()
        {
            f();
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                panic!(
                    "no byte for 60 s: the server hangs ({} bytes read)",
                    raw.len()
                )
            }
            // A reset is how an aborted response may end.
            Err(_) => break,
        }
        if head_end.is_none() {
            head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
        }
    }
    if let Some(f) = during.take() {
        // The whole answer came before `first` bytes: still run it, so
        // that the test's later checks hold.
        f();
    }
    let Some(end) = head_end else {
        return Download {
            status: 0,
            head: String::from_utf8_lossy(&raw).into_owned(),
            body: Vec::new(),
            complete: false,
        };
    };
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    let mut download = Download {
        status,
        head,
        body: Vec::new(),
        complete: false,
    };
    let rest = &raw[end..];
    let chunked = download
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if chunked {
        let (body, complete) = dechunk(rest);
        download.body = body;
        download.complete = complete;
    } else {
        let length: Option<usize> = download
            .header("content-length")
            .map(|v| v.parse().unwrap());
        download.body = rest.to_vec();
        download.complete = length == Some(rest.len());
    }
    download
}

/// The data of a chunked body, and whether its last (empty) chunk came.
fn dechunk(mut raw: &[u8]) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = raw.windows(2).position(|w| w == b"\r\n") else {
            return (body, false);
        };
        let size_text = String::from_utf8_lossy(&raw[..line_end]);
        let Ok(size) = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
        else {
            return (body, false);
        };
        raw = &raw[line_end + 2..];
        if size == 0 {
            return (body, raw.starts_with(b"\r\n"));
        }
        if raw.len() < size + 2 {
            body.extend_from_slice(&raw[..size.min(raw.len())]);
            return (body, false);
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}
