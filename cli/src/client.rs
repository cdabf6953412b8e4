//! A minimal HTTP/1.1 client over `std::net` for `faaslet upload` and
//! `faaslet invoke` (and the worker tests): one request per connection,
//! `http://` URLs only.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

/// Largest response this client reads.
const MAX_RESPONSE: u64 = 256 << 20;

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Splits `http://HOST:PORT/PREFIX` into (`HOST:PORT`, `/PREFIX` without
/// a trailing slash).
pub fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("bad URL {url:?}: only http:// is supported"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if host.is_empty() {
        return Err(format!("bad URL {url:?}: no host"));
    }
    let host = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    Ok((host, path.to_string()))
}

/// Sends `method path` to `host` (`HOST:PORT`) with `body`; reads the
/// whole response.
pub fn request(host: &str, method: &str, path: &str, body: &[u8]) -> Result<Response, String> {
    let err = |e: std::io::Error| format!("{host}: {e}");
    let mut s = TcpStream::connect(host).map_err(err)?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).map_err(err)?;
    s.write_all(body).map_err(err)?;
    let mut r = BufReader::new(s.take(MAX_RESPONSE));
    let mut line = String::new();
    r.read_line(&mut line).map_err(err)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{host}: bad status line {line:?}"))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).map_err(err)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line).map_err(err)?;
            let n = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| format!("{host}: bad chunk size {line:?}"))?;
            if n == 0 {
                break;
            }
            let start = body.len();
            body.resize(start + n, 0);
            r.read_exact(&mut body[start..]).map_err(err)?;
            line.clear();
            r.read_line(&mut line).map_err(err)?;
        }
    } else {
        r.read_to_end(&mut body).map_err(err)?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}
