//! A minimal HTTP/1.1 client for load generation: one keep-alive TCP
//! connection, GET requests, bodies read (by `Content-Length`, chunked, or
//! to the end) into a scratch buffer and counted, never decompressed. Only
//! what the servers measured here send is understood.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};

/// Size of the read buffers: large, so a body costs few syscalls.
const BUFFER: usize = 256 << 10;

/// What came back, minus the discarded body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Body bytes on the wire (after chunked decoding, before any
    /// content decoding).
    pub body_len: u64,
    /// The body itself, when asked for.
    pub body: Vec<u8>,
    pub content_encoding: Option<String>,
}

/// How the body's end is known.
enum Framing {
    Length(u64),
    Chunked,
    Close,
}

pub struct Connection {
    addr: SocketAddr,
    reader: Option<BufReader<TcpStream>>,
    scratch: Vec<u8>,
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl Connection {
    /// A connection to `addr`, opened at the first request.
    pub fn new(addr: SocketAddr) -> Connection {
        Connection {
            addr,
            reader: None,
            scratch: vec![0; BUFFER],
        }
    }

    /// GET `target` with extra request headers; keep the body if `keep`.
    /// Reconnects when the server closed the previous connection.
    pub fn get(
        &mut self,
        target: &str,
        headers: &[(&str, &str)],
        keep: bool,
    ) -> io::Result<Response> {
        let mut request = format!("GET {target} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        let reader = match &mut self.reader {
            Some(reader) => reader,
            None => {
                let stream = TcpStream::connect(self.addr)?;
                stream.set_nodelay(true)?;
                self.reader.insert(BufReader::with_capacity(BUFFER, stream))
            }
        };
        reader.get_mut().write_all(request.as_bytes())?;
        let (mut response, framing, close) = read_head(reader)?;
        let mut sink = if keep { Some(&mut response.body) } else { None };
        response.body_len = match framing {
            Framing::Length(len) => copy_exact(reader, len, &mut self.scratch, &mut sink)?,
            Framing::Chunked => read_chunked(reader, &mut self.scratch, &mut sink)?,
            Framing::Close => copy_to_end(reader, &mut self.scratch, &mut sink)?,
        };
        if close || matches!(framing, Framing::Close) {
            self.reader = None;
        }
        Ok(response)
    }
}

/// Status line and headers: the response so far, its framing, and whether
/// the server will close the connection.
fn read_head(reader: &mut BufReader<TcpStream>) -> io::Result<(Response, Framing, bool)> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line {line:?}")))?;
    let mut response = Response {
        status,
        body_len: 0,
        body: Vec::new(),
        content_encoding: None,
    };
    let (mut framing, mut close) = (Framing::Close, false);
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(invalid("connection closed in the headers".to_owned()));
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| invalid(format!("bad header {header:?}")))?;
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => {
                let len = value
                    .parse()
                    .map_err(|_| invalid(format!("bad length {value:?}")))?;
                if !matches!(framing, Framing::Chunked) {
                    framing = Framing::Length(len);
                }
            }
            "transfer-encoding" if value.eq_ignore_ascii_case("chunked") => {
                framing = Framing::Chunked
            }
            "connection" => close = value.eq_ignore_ascii_case("close"),
            "content-encoding" => response.content_encoding = Some(value.to_owned()),
            _ => {}
        }
    }
    if status == 204 || status == 304 {
        framing = Framing::Length(0);
    }
    Ok((response, framing, close))
}

/// Reads exactly `len` body bytes.
fn copy_exact(
    reader: &mut impl Read,
    len: u64,
    scratch: &mut [u8],
    sink: &mut Option<&mut Vec<u8>>,
) -> io::Result<u64> {
    let mut left = len;
    while left > 0 {
        let want = scratch
            .len()
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = reader.read(&mut scratch[..want])?;
        if n == 0 {
            return Err(invalid(format!("body ended {left} bytes early")));
        }
        if let Some(body) = sink {
            body.extend_from_slice(&scratch[..n]);
        }
        left -= n as u64;
    }
    Ok(len)
}

fn copy_to_end(
    reader: &mut impl Read,
    scratch: &mut [u8],
    sink: &mut Option<&mut Vec<u8>>,
) -> io::Result<u64> {
    let mut total = 0;
    loop {
        let n = reader.read(scratch)?;
        if n == 0 {
            return Ok(total);
        }
        if let Some(body) = sink {
            body.extend_from_slice(&scratch[..n]);
        }
        total += n as u64;
    }
}

fn read_chunked(
    reader: &mut BufReader<TcpStream>,
    scratch: &mut [u8],
    sink: &mut Option<&mut Vec<u8>>,
) -> io::Result<u64> {
    let mut total = 0;
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let size = line.trim_end().split(';').next().unwrap_or("");
        let size = u64::from_str_radix(size, 16)
            .map_err(|_| invalid(format!("bad chunk size line {line:?}")))?;
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                line.clear();
                if reader.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
                    return Ok(total);
                }
            }
        }
        total += copy_exact(reader, size, scratch, sink)?;
        line.clear();
        reader.read_line(&mut line)?;
        if line != "\r\n" {
            return Err(invalid(format!("chunk not followed by CRLF: {line:?}")));
        }
    }
}

/// One download read piece by piece (`Connection: close`, so it ends at
/// EOF), for loads that are stopped part-way.
pub struct Streaming {
    stream: TcpStream,
    scratch: Vec<u8>,
}

impl Streaming {
    /// Sends the request and checks that the answer is a 200.
    pub fn open(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> io::Result<Streaming> {
        let mut stream = TcpStream::connect(addr)?;
        let mut request = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes())?;
        let mut status = [0; 12];
        stream.read_exact(&mut status)?;
        if &status != b"HTTP/1.1 200" {
            return Err(invalid(format!(
                "GET {target}: {}",
                String::from_utf8_lossy(&status)
            )));
        }
        Ok(Streaming {
            stream,
            scratch: vec![0; BUFFER],
        })
    }

    /// Reads what is there (headers included); 0 at the end.
    pub fn read_some(&mut self) -> io::Result<usize> {
        self.stream.read(&mut self.scratch)
    }
}
