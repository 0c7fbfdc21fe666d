//! URL templates (`http://host:port/whip/{stream}`) and the small HTTP/1.1
//! client the generator signals with.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// An `http://` URL split into what a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub authority: String,
    pub path: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum UrlError {
    #[error("only http:// URLs are supported: {0}")]
    Scheme(String),
    #[error("URL has no host: {0}")]
    Host(String),
}

/// Fills `{stream}` in a template.
pub fn expand(template: &str, stream: &str) -> String {
    template.replace("{stream}", stream)
}

impl HttpUrl {
    pub fn parse(url: &str) -> Result<HttpUrl, UrlError> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| UrlError::Scheme(url.to_string()))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(UrlError::Host(url.to_string()));
        }
        let authority = if authority.contains(':') {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        Ok(HttpUrl {
            authority,
            path: path.to_string(),
        })
    }

    /// Resolves a `Location` (absolute path or absolute URL) against this URL.
    pub fn join(&self, location: &str) -> HttpUrl {
        if let Ok(u) = HttpUrl::parse(location) {
            return u;
        }
        HttpUrl {
            authority: self.authority.clone(),
            path: location.to_string(),
        }
    }
}

/// One HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

/// Sends one request (`Connection: close`) and reads the answer, waiting
/// at most 10 s for it.
pub fn request(
    url: &HttpUrl,
    method: &str,
    content_type: Option<&str>,
    token: Option<&str>,
    body: &[u8],
) -> std::io::Result<Response> {
    request_within(
        url,
        method,
        content_type,
        token,
        body,
        Duration::from_secs(10),
    )
}

/// [`request`] that waits up to `wait` for the answer (a long poll).
pub fn request_within(
    url: &HttpUrl,
    method: &str,
    content_type: Option<&str>,
    token: Option<&str>,
    body: &[u8],
    wait: Duration,
) -> std::io::Result<Response> {
    let addr: SocketAddr = url
        .authority
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("host did not resolve"))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(wait))?;
    s.set_nodelay(true)?;
    let mut req = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        url.path,
        url.authority,
        body.len()
    );
    if let Some(ct) = content_type {
        req.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(&str, &str)> = lines.filter_map(|l| l.split_once(':')).collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    };
    let location = header("location").map(str::to_string);
    let body = if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(body).ok_or_else(|| std::io::Error::other("bad chunked body"))?
    } else {
        body.to_string()
    };
    Ok(Response {
        status,
        location,
        body,
    })
}

/// The body of a chunked transfer encoding (Janus answers that way).
fn dechunk(mut rest: &str) -> Option<String> {
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(body);
        }
        body.push_str(after.get(..size)?);
        rest = after.get(size..)?.strip_prefix("\r\n")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_expand_and_urls_parse() {
        let u = expand("http://127.0.0.1:8080/whip/{stream}", "s7");
        let p = HttpUrl::parse(&u).unwrap();
        assert_eq!(p.authority, "127.0.0.1:8080");
        assert_eq!(p.path, "/whip/s7");
        assert_eq!(
            HttpUrl::parse("http://host/x").unwrap().authority,
            "host:80"
        );
        assert!(matches!(
            HttpUrl::parse("https://h/x"),
            Err(UrlError::Scheme(_))
        ));
        assert!(matches!(
            HttpUrl::parse("http:///x"),
            Err(UrlError::Host(_))
        ));
        let loc = p.join("/whip/s7/abc");
        assert_eq!(loc.path, "/whip/s7/abc");
        assert_eq!(loc.authority, "127.0.0.1:8080");
        assert_eq!(p.join("http://10.0.0.1:9/x").authority, "10.0.0.1:9");
    }

    #[test]
    fn chunked_bodies_decode() {
        assert_eq!(
            dechunk("5\r\nhello\r\n1;x=y\r\n!\r\n0\r\n\r\n").as_deref(),
            Some("hello!")
        );
        assert_eq!(dechunk("0\r\n\r\n").as_deref(), Some(""));
        assert_eq!(dechunk("5\r\nhel"), None);
        assert_eq!(dechunk("zz\r\nhello\r\n"), None);
        assert_eq!(dechunk("2\r\nhello\r\n0\r\n"), None);
    }
}
