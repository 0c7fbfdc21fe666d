//! SIP messages (RFC 3261 §7): parsing a datagram or a framed stream message
//! into a request or a response, an owned [`Summary`] of the header fields
//! the layers above read, building responses (§8.2.6) and the ACK and CANCEL
//! a UAC derives from its INVITE (§17.1.1.3, §9.1), and printing back to
//! bytes.
//!
//! Header lines are cut and named by `ezk-sip-types` (compact forms such as
//! `v:` and `i:`, any case, folded continuation lines), and the header fields
//! in the summary are decoded with its typed headers. Header values are kept
//! as they came and printed back as they came, under their full names;
//! `Content-Length` is always printed from the body actually carried.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use bytesstr::BytesStr;
use ezk_sip_types::header::typed::{
    CSeq, CallID, Contact, ContentLength, ContentType, Expires, FromTo, MaxForwards, Via,
};
use ezk_sip_types::header::{DecodeValues, HeaderParse};
use ezk_sip_types::msg::{Line, PullParser};
use ezk_sip_types::print::AppendCtx;
use ezk_sip_types::uri::SipUri;
use ezk_sip_types::{Headers, Name, StatusCode};

/// The largest datagram (UDP) accepted, in bytes: 8 KiB. RFC 3261 §18.1.1
/// asks that requests near the path MTU go over TCP, so phones keep UDP
/// messages well under this (an INVITE with a rich SDP is 1–3 KiB); anything
/// larger is refused before parsing.
pub const MAX_DATAGRAM_LEN: usize = 8 * 1024;

/// The largest message accepted from a stream transport (TCP, TLS), head and
/// body, in bytes: 64 KiB.
pub const MAX_STREAM_MESSAGE_LEN: usize = 64 * 1024;

/// The prefix of every RFC 3261 branch parameter (§8.1.1.7).
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// How the bytes of one message were delimited by the transport (§18.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One UDP datagram: at most [`MAX_DATAGRAM_LEN`]; without a
    /// `Content-Length` the body is the rest of the datagram, bytes past
    /// `Content-Length` are ignored.
    Datagram,
    /// One message cut from a stream (see [`frame_len`]): at most
    /// [`MAX_STREAM_MESSAGE_LEN`]; `Content-Length` is required.
    Stream,
}

impl Framing {
    /// The size limit of this framing.
    pub fn max_len(self) -> usize {
        match self {
            Framing::Datagram => MAX_DATAGRAM_LEN,
            Framing::Stream => MAX_STREAM_MESSAGE_LEN,
        }
    }
}

/// Why bytes are not a SIP message corecast accepts, or why a message could
/// not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Larger than the framing's limit; refused unread.
    #[error("message of {len} bytes is over the limit of {max}")]
    TooLarge {
        /// The size of the input.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The head does not end with an empty line, or the body is shorter
    /// than `Content-Length`.
    #[error("message is incomplete")]
    Incomplete,
    /// A line of the head is not UTF-8.
    #[error("message head is not UTF-8")]
    NotUtf8,
    /// The request line or status line is not one.
    #[error("bad start line")]
    StartLine,
    /// A header line has no name or no colon.
    #[error("bad header line")]
    HeaderLine,
    /// A header field the transaction layer needs is absent.
    #[error("missing {0} header")]
    Missing(&'static str),
    /// A header field is present but does not parse.
    #[error("malformed {0} header")]
    Malformed(&'static str),
    /// The CSeq method of a request is not its method (§8.1.1.5).
    #[error("CSeq method does not match the request method")]
    CSeqMismatch,
    /// A status code outside 100–699.
    #[error("status code {0} is outside 100-699")]
    Status(u16),
    /// A response was asked of something that is not a request, or an ACK
    /// or CANCEL of something that is not an INVITE.
    #[error("not the kind of message this needs")]
    WrongKind,
    /// A header name or value given to a builder would break the framing
    /// (CR, LF, an empty or non-token name, `Content-Length`).
    #[error("header name or value not allowed")]
    BadHeader,
}

/// A SIP method. RFC 3261 methods are case-sensitive; known ones parse in
/// any case (as `ezk-sip-types` does) and print in upper case.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Register,
    Options,
    Info,
    Update,
    Prack,
    Subscribe,
    Notify,
    Refer,
    Message,
    Publish,
    /// Any other token, as it came.
    Other(String),
}

impl Method {
    /// The method named by `token` (case-insensitive for the known ones).
    pub fn from_token(token: &str) -> Method {
        let known = [
            Method::Invite,
            Method::Ack,
            Method::Bye,
            Method::Cancel,
            Method::Register,
            Method::Options,
            Method::Info,
            Method::Update,
            Method::Prack,
            Method::Subscribe,
            Method::Notify,
            Method::Refer,
            Method::Message,
            Method::Publish,
        ];
        known
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(token))
            .unwrap_or_else(|| Method::Other(token.to_owned()))
    }

    /// The method as printed.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Register => "REGISTER",
            Method::Options => "OPTIONS",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    /// `METHOD Request-URI SIP/2.0`.
    Request {
        /// The method.
        method: Method,
        /// The Request-URI as it came (a valid `sip:`/`sips:` URI).
        uri: String,
    },
    /// `SIP/2.0 Status-Code Reason-Phrase`.
    Response {
        /// 100–699.
        status: u16,
        /// The reason phrase, possibly empty.
        reason: String,
    },
}

/// A From or To header field: its URI, display name and tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Party {
    /// The display name, if any (quotes removed).
    pub display: Option<String>,
    /// The URI.
    pub uri: String,
    /// The `tag` parameter, if any.
    pub tag: Option<String>,
}

/// The top Via header field (§8.1.1.7, §18.2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopVia {
    /// The transport token (`UDP`, `TCP`, `TLS`, `WS`…), upper-cased.
    pub transport: String,
    /// `host[:port]`, host lower-cased.
    pub sent_by: String,
    /// The `branch` parameter, if any.
    pub branch: Option<String>,
}

impl TopVia {
    /// Whether the branch starts with the RFC 3261 magic cookie, so that
    /// transactions can be matched by it (§17.2.3).
    pub fn has_cookie(&self) -> bool {
        self.branch
            .as_deref()
            .is_some_and(|b| b.starts_with(MAGIC_COOKIE) && b.len() > MAGIC_COOKIE.len())
    }
}

/// An owned copy of what the transaction, dialog and registrar layers read
/// from a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Call-ID.
    pub call_id: String,
    /// The CSeq sequence number.
    pub cseq: u32,
    /// The CSeq method (for a request, its own method).
    pub cseq_method: Method,
    /// The top Via.
    pub via: TopVia,
    /// From.
    pub from: Party,
    /// To.
    pub to: Party,
    /// The URI of the first Contact, or `*` for a REGISTER's wildcard.
    pub contact: Option<String>,
    /// Expires, in seconds.
    pub expires: Option<u32>,
    /// Max-Forwards.
    pub max_forwards: Option<u8>,
    /// Content-Type, as it came.
    pub content_type: Option<String>,
    /// The body (shares the received buffer).
    pub body: Bytes,
}

/// A parsed SIP message. Printed back with [`Message::to_bytes`]; two
/// messages are equal when they print the same.
#[derive(Debug, Clone)]
pub struct Message {
    start: StartLine,
    /// All header fields but Content-Length.
    headers: Headers,
    summary: Summary,
}

impl PartialEq for Message {
    fn eq(&self, other: &Message) -> bool {
        self.start == other.start
            && self.summary == other.summary
            && self.headers.to_string() == other.headers.to_string()
    }
}

impl Eq for Message {}

/// The length of the first complete message at the start of a stream
/// buffer (head, empty line, `Content-Length` bytes of body): `Ok(None)`
/// while more bytes are needed. Leading CRLFs (keep-alives, §7.5) count as
/// part of the message and [`Message::parse`] skips them.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, ParseError> {
    let skip = leading_crlf(buf);
    let mut lines = PullParser::new(&buf[skip..], 0);
    let mut content_length = None;
    let mut start_line = true;
    for line in &mut lines {
        let Ok(line) = line else {
            return if buf.len() > MAX_STREAM_MESSAGE_LEN {
                Err(ParseError::TooLarge {
                    len: buf.len(),
                    max: MAX_STREAM_MESSAGE_LEN,
                })
            } else {
                Ok(None)
            };
        };
        let line = std::str::from_utf8(line).map_err(|_| ParseError::NotUtf8)?;
        if std::mem::take(&mut start_line) {
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            if Name::CONTENT_LENGTH == *name.trim() {
                let len = usize::from_str(value.trim())
                    .map_err(|_| ParseError::Malformed("Content-Length"))?;
                content_length = Some(len);
            }
        }
    }
    let len = content_length.ok_or(ParseError::Missing("Content-Length"))?;
    let total = (skip + lines.head_end()).saturating_add(len);
    if total > MAX_STREAM_MESSAGE_LEN {
        return Err(ParseError::TooLarge {
            len: total,
            max: MAX_STREAM_MESSAGE_LEN,
        });
    }
    Ok((buf.len() >= total).then_some(total))
}

fn leading_crlf(buf: &[u8]) -> usize {
    buf.iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count()
}

impl Message {
    /// Parses one message. Refuses inputs over the framing's limit, a head
    /// that is not UTF-8 or not terminated, a bad start line or header line,
    /// and messages missing (or with unparsable) Via, From, To, Call-ID or
    /// CSeq. Never panics.
    pub fn parse(bytes: &[u8], framing: Framing) -> Result<Message, ParseError> {
        if bytes.len() > framing.max_len() {
            return Err(ParseError::TooLarge {
                len: bytes.len(),
                max: framing.max_len(),
            });
        }
        let skip = leading_crlf(bytes);
        let buf = Bytes::copy_from_slice(&bytes[skip..]);
        let mut lines = PullParser::new(&buf, 0);
        let mut start = None;
        let mut headers = Headers::new();
        for line in &mut lines {
            let line = line.map_err(|_| ParseError::Incomplete)?;
            let line = std::str::from_utf8(line).map_err(|_| ParseError::NotUtf8)?;
            if start.is_none() {
                start = Some(parse_start_line(line)?);
                continue;
            }
            let Ok((_, Line { name, value })) = Line::parse(&buf, line) else {
                return Err(ParseError::HeaderLine);
            };
            if name.as_print_str().is_empty() {
                return Err(ParseError::HeaderLine);
            }
            headers.insert(name, value);
        }
        let start = start.ok_or(ParseError::StartLine)?;
        let head_end = lines.head_end();
        let rest = buf.slice(head_end.min(buf.len())..);
        let length = match headers.remove(&Name::CONTENT_LENGTH) {
            Some(values) => {
                let mut it = values.iter();
                let Ok((_, ContentLength(len))) = ContentLength::decode(&mut it) else {
                    return Err(ParseError::Malformed("Content-Length"));
                };
                Some(len)
            }
            None if framing == Framing::Stream => {
                return Err(ParseError::Missing("Content-Length"));
            }
            None => None,
        };
        let body = match length {
            Some(len) if len > rest.len() => return Err(ParseError::Incomplete),
            Some(len) => rest.slice(..len),
            None => rest,
        };
        let summary = summarize(&start, &headers, body)?;
        Ok(Message {
            start,
            headers,
            summary,
        })
    }

    /// Builds a request from its parts: `headers` are (name, value) pairs
    /// printed in order (Via, From, To, Call-ID, CSeq and Max-Forwards are
    /// the caller's to give), then the body with its Content-Type if any.
    pub fn request(
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, &[u8])>,
    ) -> Result<Message, ParseError> {
        if uri.contains(|c: char| c.is_ascii_whitespace()) {
            return Err(ParseError::StartLine);
        }
        let mut out = format!("{method} {uri} SIP/2.0\r\n").into_bytes();
        for (name, value) in headers {
            check_header(name, value)?;
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        let body = match body {
            Some((content_type, body)) => {
                check_header("Content-Type", content_type)?;
                out.extend_from_slice(format!("Content-Type: {content_type}\r\n").as_bytes());
                body
            }
            None => &[],
        };
        out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        out.extend_from_slice(body);
        Message::parse(&out, Framing::Stream)
    }

    /// A response to `request` per §8.2.6: Via (all, in order), From, To,
    /// Call-ID and CSeq copied, Content-Length 0, and for 100 Trying the
    /// Timestamp (§8.2.6.1). `to_tag` is added to To when the request's To
    /// has none and the status is above 100 (§8.2.6.2); the dialog layer
    /// picks it. `reason` defaults to the RFC's phrase.
    pub fn response(
        request: &Message,
        status: u16,
        reason: Option<&str>,
        to_tag: Option<&str>,
    ) -> Result<Message, ParseError> {
        if !request.is_request() {
            return Err(ParseError::WrongKind);
        }
        if !(100..=699).contains(&status) {
            return Err(ParseError::Status(status));
        }
        let reason = match reason {
            Some(r) => r.to_owned(),
            None => StatusCode::from(status).text().unwrap_or("").to_owned(),
        };
        if reason.contains(['\r', '\n']) {
            return Err(ParseError::BadHeader);
        }
        let mut headers = Headers::new();
        let mut copied = vec![Name::VIA, Name::FROM, Name::TO, Name::CALL_ID, Name::CSEQ];
        if status == 100 {
            copied.push(Name::TIMESTAMP);
        }
        let add_tag = match to_tag {
            Some(tag) if status > 100 && request.summary.to.tag.is_none() => {
                if !is_token(tag) {
                    return Err(ParseError::BadHeader);
                }
                Some(tag)
            }
            _ => None,
        };
        for name in copied {
            for value in request.headers.get_raw(&name) {
                let value = match add_tag {
                    Some(tag) if name == Name::TO => {
                        BytesStr::from(format!("{};tag={tag}", value.trim_end()))
                    }
                    _ => value.clone(),
                };
                headers.insert(name.clone(), value);
            }
        }
        let start = StartLine::Response { status, reason };
        let summary = summarize(&start, &headers, Bytes::new())?;
        Ok(Message {
            start,
            headers,
            summary,
        })
    }

    /// The ACK a client INVITE transaction sends for a 3xx–6xx `response`
    /// (§17.1.1.3): the INVITE's Request-URI, top Via, From, Call-ID, CSeq
    /// number and Route, the response's To (with its tag).
    pub fn ack_for(invite: &Message, response: &Message) -> Result<Message, ParseError> {
        if invite.method() != Some(&Method::Invite) || response.status().is_none() {
            return Err(ParseError::WrongKind);
        }
        invite.derived(Method::Ack, response)
    }

    /// The CANCEL of a pending INVITE (§9.1): the INVITE's Request-URI,
    /// top Via (the same branch), From, To, Call-ID, CSeq number and Route.
    pub fn cancel_for(invite: &Message) -> Result<Message, ParseError> {
        if invite.method() != Some(&Method::Invite) {
            return Err(ParseError::WrongKind);
        }
        invite.derived(Method::Cancel, invite)
    }

    fn derived(&self, method: Method, to_from: &Message) -> Result<Message, ParseError> {
        let StartLine::Request { uri, .. } = &self.start else {
            return Err(ParseError::WrongKind);
        };
        let raw = |m: &Message, n: &Name| m.headers.get_raw(n).next().map(|v| v.to_string());
        // Only the top Via value: cut a comma-separated list after the first.
        let via = raw(self, &Name::VIA).ok_or(ParseError::Missing("Via"))?;
        let via = top_via_value(&via);
        let from = raw(self, &Name::FROM).ok_or(ParseError::Missing("From"))?;
        let to = raw(to_from, &Name::TO).ok_or(ParseError::Missing("To"))?;
        let cseq = format!("{} {method}", self.summary.cseq);
        let mut headers = vec![
            ("Via", via.as_str()),
            ("Max-Forwards", "70"),
            ("From", from.as_str()),
            ("To", to.as_str()),
            ("Call-ID", self.summary.call_id.as_str()),
            ("CSeq", cseq.as_str()),
        ];
        let routes: Vec<String> = self
            .headers
            .get_raw(&Name::ROUTE)
            .map(|v| v.to_string())
            .collect();
        headers.extend(routes.iter().map(|r| ("Route", r.as_str())));
        Message::request(method, uri, &headers, None)
    }

    /// Adds a header field (printed after the others). Refuses CR or LF, an
    /// empty or non-token name, and Content-Length (printed from the body).
    pub fn with_header(mut self, name: &str, value: &str) -> Result<Message, ParseError> {
        check_header(name, value)?;
        self.headers.insert(
            Name::from(name.to_owned()),
            BytesStr::from(value.to_owned()),
        );
        self.summary = summarize(&self.start, &self.headers, self.summary.body.clone())?;
        Ok(self)
    }

    /// Sets the body and its Content-Type (replacing any).
    pub fn with_body(mut self, content_type: &str, body: Bytes) -> Result<Message, ParseError> {
        check_header("Content-Type", content_type)?;
        self.headers.remove(&Name::CONTENT_TYPE);
        self.headers
            .insert(Name::CONTENT_TYPE, BytesStr::from(content_type.to_owned()));
        self.summary = summarize(&self.start, &self.headers, body)?;
        Ok(self)
    }

    /// The start line.
    pub fn start_line(&self) -> &StartLine {
        &self.start
    }

    /// The summary of the header fields.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.summary.body
    }

    /// Whether this is a request.
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// The method of a request.
    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { status, .. } => Some(*status),
            StartLine::Request { .. } => None,
        }
    }

    /// The raw values of a header field (any spelling of its name; compact
    /// forms included), in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_raw(&Name::from(name.to_owned()))
            .map(|v| v.as_str())
            .collect()
    }

    /// Prints the message: start line, header fields, Content-Length of the
    /// body, empty line, body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.summary.body.len());
        self.write_to(&mut out);
        out
    }

    /// Appends the printed message to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let start = match &self.start {
            StartLine::Request { method, uri } => format!("{method} {uri} SIP/2.0\r\n"),
            StartLine::Response { status, reason } => format!("SIP/2.0 {status} {reason}\r\n"),
        };
        out.extend_from_slice(start.as_bytes());
        out.extend_from_slice(self.headers.to_string().as_bytes());
        let length = format!("Content-Length: {}\r\n\r\n", self.summary.body.len());
        out.extend_from_slice(length.as_bytes());
        out.extend_from_slice(&self.summary.body);
    }
}

/// The first value of a Via field that may hold several, comma-separated.
fn top_via_value(value: &str) -> String {
    // Commas only separate values outside quoted strings; Via parameters
    // may not hold quoted commas in practice, but stay careful.
    let mut quoted = false;
    for (i, c) in value.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => return value[..i].trim().to_owned(),
            _ => {}
        }
    }
    value.trim().to_owned()
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

fn check_header(name: &str, value: &str) -> Result<(), ParseError> {
    if !is_token(name) || value.contains(['\r', '\n']) || Name::CONTENT_LENGTH == *name {
        return Err(ParseError::BadHeader);
    }
    Ok(())
}

fn parse_start_line(line: &str) -> Result<StartLine, ParseError> {
    if let Some(rest) = line.strip_prefix("SIP/2.0 ") {
        let rest = rest.trim_start_matches(' ');
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::StartLine);
        }
        let status = u16::from_str(code).map_err(|_| ParseError::StartLine)?;
        if !(100..=699).contains(&status) {
            return Err(ParseError::Status(status));
        }
        if reason.contains(|c: char| c.is_control() && c != '\t') {
            return Err(ParseError::StartLine);
        }
        return Ok(StartLine::Response {
            status,
            reason: reason.trim().to_owned(),
        });
    }
    let mut parts = line.split(' ').filter(|p| !p.is_empty());
    let (Some(method), Some(uri), Some("SIP/2.0"), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::StartLine);
    };
    if !is_token(method) || uri.contains(|c: char| c.is_control()) {
        return Err(ParseError::StartLine);
    }
    SipUri::from_str(uri).map_err(|_| ParseError::StartLine)?;
    Ok(StartLine::Request {
        method: Method::from_token(method),
        uri: uri.to_owned(),
    })
}

/// Decodes the first value of a header with a typed `ezk-sip-types` header.
fn first<H: HeaderParse>(
    headers: &Headers,
    name: &Name,
    label: &'static str,
) -> Result<Option<H>, ParseError> {
    let Some(value) = headers.get_raw(name).next() else {
        return Ok(None);
    };
    match H::parse(value.as_ref(), value.as_str()) {
        Ok((_, h)) => Ok(Some(h)),
        Err(_) => Err(ParseError::Malformed(label)),
    }
}

fn party(headers: &Headers, name: &Name, label: &'static str) -> Result<Party, ParseError> {
    let h: FromTo = first(headers, name, label)?.ok_or(ParseError::Missing(label))?;
    Ok(Party {
        display: h.uri.name.as_ref().map(|n| n.trim_matches('"').to_owned()),
        uri: h.uri.uri.default_print_ctx().to_string(),
        tag: h.tag.map(|t| t.to_string()),
    })
}

fn summarize(start: &StartLine, headers: &Headers, body: Bytes) -> Result<Summary, ParseError> {
    let via: Via = first(headers, &Name::VIA, "Via")?.ok_or(ParseError::Missing("Via"))?;
    let call_id: CallID =
        first(headers, &Name::CALL_ID, "Call-ID")?.ok_or(ParseError::Missing("Call-ID"))?;
    if call_id.0.is_empty() || call_id.0.contains(char::is_whitespace) {
        return Err(ParseError::Malformed("Call-ID"));
    }
    let cseq: CSeq = first(headers, &Name::CSEQ, "CSeq")?.ok_or(ParseError::Missing("CSeq"))?;
    let cseq_method = Method::from_token(&cseq.method.to_string());
    if let StartLine::Request { method, .. } = start {
        if *method != cseq_method {
            return Err(ParseError::CSeqMismatch);
        }
    }
    let from = party(headers, &Name::FROM, "From")?;
    let to = party(headers, &Name::TO, "To")?;
    let contact = match headers.get_raw(&Name::CONTACT).next() {
        Some(v) if v.trim() == "*" => Some("*".to_owned()),
        Some(_) => {
            let c: Option<Contact> = first(headers, &Name::CONTACT, "Contact")?;
            c.map(|c| c.uri.uri.default_print_ctx().to_string())
        }
        None => None,
    };
    let expires: Option<Expires> = first(headers, &Name::EXPIRES, "Expires")?;
    let max_forwards: Option<MaxForwards> = first(headers, &Name::MAX_FORWARDS, "Max-Forwards")?;
    let content_type: Option<ContentType> = first(headers, &Name::CONTENT_TYPE, "Content-Type")?;
    let branch = via.params.get_val("branch").map(|b| b.to_string());
    Ok(Summary {
        call_id: call_id.0.to_string(),
        cseq: cseq.cseq,
        cseq_method,
        via: TopVia {
            transport: via.transport.to_ascii_uppercase(),
            sent_by: via
                .sent_by
                .default_print_ctx()
                .to_string()
                .to_ascii_lowercase(),
            branch,
        },
        from,
        to,
        contact,
        expires: expires.map(|e| e.0),
        max_forwards: max_forwards.map(|m| m.0),
        content_type: content_type.map(|c| c.0.to_string()),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGISTER: &str = "REGISTER sip:registrar.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bKnashds7\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@example.com>\r\n\
From: Bob <sip:bob@example.com>;tag=456248\r\n\
Call-ID: 843817637684230@998sdasdh09\r\n\
CSeq: 1826 REGISTER\r\n\
Contact: <sip:bob@192.0.2.4>\r\n\
Expires: 7200\r\n\
Content-Length: 0\r\n\r\n";

    const SDP: &str = "v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.1\r\n\
s=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

    fn invite() -> String {
        format!(
            "INVITE sip:room1@sfu.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds\r\n\
Max-Forwards: 70\r\n\
To: Room <sip:room1@sfu.example.com>\r\n\
From: \"Alice\" <sip:alice@example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.example.com>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: {}\r\n\r\n{SDP}",
            SDP.len()
        )
    }

    const OK: &str = "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds;received=192.0.2.1\r\n\
To: Room <sip:room1@sfu.example.com>;tag=a6c85cf\r\n\
From: \"Alice\" <sip:alice@example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:room1@203.0.113.9>\r\n\
Content-Length: 0\r\n\r\n";

    const TRYING: &str = "SIP/2.0 100 Trying\r\n\
Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds\r\n\
To: Room <sip:room1@sfu.example.com>\r\n\
From: \"Alice\" <sip:alice@example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Content-Length: 0\r\n\r\n";

    fn request(method: &str, branch: &str, extra: &str) -> String {
        format!(
            "{method} sip:room1@sfu.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.example.com;branch={branch}\r\n\
Max-Forwards: 70\r\n\
To: Room <sip:room1@sfu.example.com>;tag=a6c85cf\r\n\
From: <sip:alice@example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.example.com\r\n\
CSeq: 314160 {method}\r\n{extra}\
Content-Length: 0\r\n\r\n"
        )
    }

    fn parse(s: &str) -> Message {
        Message::parse(s.as_bytes(), Framing::Datagram).expect("parses")
    }

    fn round_trip(s: &str) -> Message {
        let m = parse(s);
        let printed = m.to_bytes();
        let again = Message::parse(&printed, Framing::Datagram).expect("reparses");
        assert_eq!(again, m);
        assert_eq!(again.to_bytes(), printed);
        // A stream framing of the printed message reads the same.
        assert_eq!(frame_len(&printed), Ok(Some(printed.len())));
        assert_eq!(Message::parse(&printed, Framing::Stream), Ok(m.clone()));
        m
    }

    #[test]
    fn register_round_trips_with_its_summary() {
        let m = round_trip(REGISTER);
        let s = m.summary();
        assert_eq!(m.method(), Some(&Method::Register));
        assert_eq!(s.call_id, "843817637684230@998sdasdh09");
        assert_eq!((s.cseq, &s.cseq_method), (1826, &Method::Register));
        assert_eq!(s.via.branch.as_deref(), Some("z9hG4bKnashds7"));
        assert_eq!(s.via.sent_by, "192.0.2.4:5060");
        assert_eq!(s.via.transport, "UDP");
        assert!(s.via.has_cookie());
        assert_eq!(s.from.tag.as_deref(), Some("456248"));
        assert_eq!(s.from.display.as_deref(), Some("Bob"));
        assert_eq!(s.to.tag, None);
        assert_eq!(s.to.uri, "sip:bob@example.com");
        assert_eq!(s.contact.as_deref(), Some("sip:bob@192.0.2.4"));
        assert_eq!(s.expires, Some(7200));
        assert_eq!(s.max_forwards, Some(70));
        assert!(s.body.is_empty());
    }

    #[test]
    fn invite_with_sdp_round_trips() {
        let m = round_trip(&invite());
        assert_eq!(m.body().as_ref(), SDP.as_bytes());
        assert_eq!(m.summary().content_type.as_deref(), Some("application/sdp"));
        assert_eq!(m.summary().from.display.as_deref(), Some("Alice"));
        assert_eq!(
            m.start_line(),
            &StartLine::Request {
                method: Method::Invite,
                uri: "sip:room1@sfu.example.com".into()
            }
        );
    }

    #[test]
    fn responses_round_trip() {
        let ok = round_trip(OK);
        assert_eq!(ok.status(), Some(200));
        assert_eq!(ok.summary().to.tag.as_deref(), Some("a6c85cf"));
        assert_eq!(ok.summary().max_forwards, None);
        let trying = round_trip(TRYING);
        assert_eq!(
            trying.start_line(),
            &StartLine::Response {
                status: 100,
                reason: "Trying".into()
            }
        );
    }

    #[test]
    fn in_dialog_and_other_requests_round_trip() {
        for method in ["BYE", "CANCEL", "ACK", "OPTIONS"] {
            let m = round_trip(&request(method, "z9hG4bKx1", ""));
            assert_eq!(m.method().map(Method::as_str), Some(method));
            assert_eq!(m.summary().cseq_method.as_str(), method);
        }
    }

    #[test]
    fn compact_forms_and_any_case_name_the_same_fields() {
        let compact = "invite sip:room1@sfu.example.com SIP/2.0\r\n\
v: SIP/2.0/udp PC33.example.com;branch=z9hG4bK776asdhds\r\n\
max-FORWARDS: 70\r\n\
t: Room <sip:room1@sfu.example.com>\r\n\
f: \"Alice\" <sip:alice@example.com>;tag=1928301774\r\n\
i: a84b4c76e66710@pc33.example.com\r\n\
cSeQ: 314159 INVITE\r\n\
m: <sip:alice@pc33.example.com>\r\n\
c: application/sdp\r\n\
l: 4\r\n\r\nabcdEXTRA";
        let m = round_trip(compact);
        let s = m.summary();
        assert_eq!(m.method(), Some(&Method::Invite));
        assert_eq!(s.call_id, "a84b4c76e66710@pc33.example.com");
        assert_eq!(s.via.sent_by, "pc33.example.com");
        assert_eq!(s.via.transport, "UDP");
        assert_eq!(s.from.tag.as_deref(), Some("1928301774"));
        assert_eq!(s.contact.as_deref(), Some("sip:alice@pc33.example.com"));
        assert_eq!(s.content_type.as_deref(), Some("application/sdp"));
        assert_eq!(s.max_forwards, Some(70));
        // Content-Length cuts the datagram's body; the rest is ignored.
        assert_eq!(m.body().as_ref(), b"abcd");
        let printed = String::from_utf8(m.to_bytes()).expect("utf-8");
        assert!(printed.starts_with("INVITE sip:room1@sfu.example.com SIP/2.0\r\nVia: "));
        assert!(printed.contains("\r\nCall-ID: a84b4c76e66710@pc33.example.com\r\n"));
        assert!(printed.ends_with("Content-Length: 4\r\n\r\nabcd"));
    }

    #[test]
    fn folded_lines_whitespace_and_bare_lf_are_accepted() {
        let folded = "OPTIONS sip:room1@sfu.example.com SIP/2.0\n\
Via:    SIP/2.0/UDP 192.0.2.1 ;branch=z9hG4bKkdjuw\n\
To:\n   <sip:room1@sfu.example.com>\n\
From  : <sip:caller@example.org>;tag=33242\n\
Max-Forwards: 3\n\
Call-ID:   fold.0ha0isndaksdj   \n\
CSeq: 8\n\tOPTIONS\n\
Accept: application/sdp, application/pkcs7-mime,\n        multipart/mixed\n\
\n";
        let m = round_trip(folded);
        let s = m.summary();
        assert_eq!(s.call_id, "fold.0ha0isndaksdj");
        assert_eq!((s.cseq, &s.cseq_method), (8, &Method::Options));
        assert_eq!(s.to.uri, "sip:room1@sfu.example.com");
        assert_eq!(s.from.tag.as_deref(), Some("33242"));
        assert_eq!(s.max_forwards, Some(3));
        // Without Content-Length a datagram's body is the rest of it.
        let mut with_body = folded.as_bytes().to_vec();
        with_body.extend_from_slice(b"hello");
        let m = Message::parse(&with_body, Framing::Datagram).expect("parses");
        assert_eq!(m.body().as_ref(), b"hello");
        // A stream message must say how long its body is.
        assert_eq!(
            Message::parse(folded.as_bytes(), Framing::Stream),
            Err(ParseError::Missing("Content-Length"))
        );
        // Leading CRLFs (keep-alives) are skipped.
        let padded = format!("\r\n\r\n{REGISTER}");
        assert_eq!(parse(&padded), parse(REGISTER));
    }

    #[test]
    fn refusals() {
        let err = |s: &str| Message::parse(s.as_bytes(), Framing::Datagram).unwrap_err();
        let without = |name: &str| {
            REGISTER
                .split("\r\n")
                .filter(|l| !l.starts_with(name))
                .collect::<Vec<_>>()
                .join("\r\n")
        };
        assert_eq!(err(&without("Call-ID")), ParseError::Missing("Call-ID"));
        assert_eq!(err(&without("CSeq")), ParseError::Missing("CSeq"));
        assert_eq!(err(&without("Via")), ParseError::Missing("Via"));
        assert_eq!(err(&without("From")), ParseError::Missing("From"));
        assert_eq!(err(&without("To")), ParseError::Missing("To"));
        assert_eq!(err("garbage\r\n\r\n"), ParseError::StartLine);
        assert_eq!(err(""), ParseError::Incomplete);
        assert_eq!(err("\u{0}\u{1}\u{2}"), ParseError::Incomplete);
        assert_eq!(err(&REGISTER[..60]), ParseError::Incomplete);
        assert_eq!(
            err(&REGISTER.replace("CSeq: 1826 REGISTER", "CSeq: x REGISTER")),
            ParseError::Malformed("CSeq")
        );
        assert_eq!(
            err(&REGISTER.replace("CSeq: 1826 REGISTER", "CSeq: 1826 INVITE")),
            ParseError::CSeqMismatch
        );
        assert_eq!(
            err(&REGISTER.replace("Content-Length: 0", "Content-Length: 10")),
            ParseError::Incomplete
        );
        assert_eq!(
            err(&REGISTER.replace("Content-Length: 0", "Content-Length: -1")),
            ParseError::Malformed("Content-Length")
        );
        assert_eq!(
            err(&OK.replace("200 OK", "099 Odd")),
            ParseError::Status(99)
        );
        assert_eq!(
            err(&REGISTER.replace("SIP/2.0\r\n", "SIP/3.0\r\n")),
            ParseError::StartLine
        );
        assert_eq!(
            err(&REGISTER.replace("Expires:", ": 5\r\nExpires:")),
            ParseError::HeaderLine
        );
        assert_eq!(
            err(&REGISTER.replace("Expires:", "Expires 7\r\nX:")),
            ParseError::HeaderLine
        );
        let mut latin1 = REGISTER.as_bytes().to_vec();
        latin1[70] = 0xe9;
        assert_eq!(
            Message::parse(&latin1, Framing::Datagram),
            Err(ParseError::NotUtf8)
        );
        let big = format!("{REGISTER}{}", "x".repeat(MAX_DATAGRAM_LEN));
        assert_eq!(
            err(&big),
            ParseError::TooLarge {
                len: big.len(),
                max: MAX_DATAGRAM_LEN
            }
        );
        assert!(Message::parse(&big.as_bytes()[..MAX_DATAGRAM_LEN], Framing::Datagram).is_ok());
    }

    #[test]
    fn a_response_copies_what_8_2_6_asks() {
        let inv = parse(&invite().replace(
            "Max-Forwards: 70\r\n",
            "Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp1, SIP/2.0/TCP p2.example.com;branch=z9hG4bKp2\r\nMax-Forwards: 70\r\nTimestamp: 54\r\n",
        ));
        let ok = Message::response(&inv, 200, None, Some("srv1")).expect("builds");
        let printed = String::from_utf8(ok.to_bytes()).expect("utf-8");
        assert!(printed.starts_with("SIP/2.0 200 OK\r\n"), "{printed}");
        assert_eq!(
            ok.header_values("Via"),
            inv.header_values("v"),
            "every Via, in order"
        );
        assert_eq!(ok.header_values("Via").len(), 2);
        assert_eq!(ok.header_values("From"), inv.header_values("From"));
        assert_eq!(ok.header_values("Call-ID"), inv.header_values("Call-ID"));
        assert_eq!(ok.header_values("CSeq"), inv.header_values("CSeq"));
        assert_eq!(
            ok.header_values("To"),
            ["Room <sip:room1@sfu.example.com>;tag=srv1"]
        );
        assert_eq!(ok.summary().to.tag.as_deref(), Some("srv1"));
        assert!(ok.header_values("Timestamp").is_empty());
        assert!(ok.header_values("Contact").is_empty());
        assert!(printed.ends_with("Content-Length: 0\r\n\r\n"));
        // 100 Trying: no tag, Timestamp copied.
        let trying = Message::response(&inv, 100, None, Some("srv1")).expect("builds");
        assert_eq!(trying.summary().to.tag, None);
        assert_eq!(trying.header_values("Timestamp"), ["54"]);
        // A To that has a tag keeps it.
        let bye = parse(&request("BYE", "z9hG4bKb", ""));
        let ok = Message::response(&bye, 200, Some("Fine"), Some("other")).expect("builds");
        assert_eq!(ok.summary().to.tag.as_deref(), Some("a6c85cf"));
        assert_eq!(
            ok.start_line(),
            &StartLine::Response {
                status: 200,
                reason: "Fine".into()
            }
        );
        // With a Contact and a body, still parses back the same.
        let ok = Message::response(&inv, 200, None, Some("t"))
            .and_then(|m| m.with_header("Contact", "<sip:room1@203.0.113.9>"))
            .and_then(|m| m.with_body("application/sdp", Bytes::from_static(SDP.as_bytes())))
            .expect("builds");
        assert_eq!(
            ok.summary().contact.as_deref(),
            Some("sip:room1@203.0.113.9")
        );
        assert_eq!(
            round_trip(&String::from_utf8(ok.to_bytes()).expect("utf-8")),
            ok
        );
        // Refusals.
        assert_eq!(
            Message::response(&ok, 200, None, None),
            Err(ParseError::WrongKind)
        );
        assert_eq!(
            Message::response(&inv, 700, None, None),
            Err(ParseError::Status(700))
        );
        assert_eq!(
            Message::response(&inv, 200, Some("a\r\nX: y"), None),
            Err(ParseError::BadHeader)
        );
        assert_eq!(
            Message::response(&inv, 200, None, Some("a\r\nb")),
            Err(ParseError::BadHeader)
        );
        let with = |n: &str, v: &str| Message::response(&inv, 200, None, None)?.with_header(n, v);
        assert_eq!(with("X", "a\r\nInjected: 1"), Err(ParseError::BadHeader));
        assert_eq!(with("Bad Name", "1"), Err(ParseError::BadHeader));
        assert_eq!(with("l", "1"), Err(ParseError::BadHeader));
    }

    #[test]
    fn ack_and_cancel_derive_from_the_invite() {
        let inv = parse(&invite().replace(
            "Max-Forwards: 70\r\n",
            "Max-Forwards: 70\r\nRoute: <sip:proxy.example.com;lr>\r\n",
        ));
        let busy = Message::response(&inv, 486, None, Some("x9")).expect("builds");
        let ack = Message::ack_for(&inv, &busy).expect("builds");
        let s = ack.summary();
        assert_eq!(ack.method(), Some(&Method::Ack));
        assert_eq!((s.cseq, &s.cseq_method), (314159, &Method::Ack));
        assert_eq!(s.via, inv.summary().via);
        assert_eq!(s.to.tag.as_deref(), Some("x9"));
        assert_eq!(s.from, inv.summary().from);
        assert_eq!(ack.header_values("Route"), ["<sip:proxy.example.com;lr>"]);
        assert!(ack.body().is_empty());
        let cancel = Message::cancel_for(&inv).expect("builds");
        assert_eq!(cancel.method(), Some(&Method::Cancel));
        assert_eq!(cancel.summary().via.branch, inv.summary().via.branch);
        assert_eq!(cancel.summary().to, inv.summary().to);
        assert_eq!(cancel.summary().cseq, 314159);
        assert_eq!(Message::cancel_for(&busy), Err(ParseError::WrongKind));
        assert_eq!(Message::ack_for(&inv, &inv), Err(ParseError::WrongKind));
    }

    #[test]
    fn frame_len_cuts_a_stream() {
        let a = parse(REGISTER).to_bytes();
        let b = parse(&invite()).to_bytes();
        let mut stream = a.clone();
        stream.extend_from_slice(&b);
        assert_eq!(frame_len(&stream), Ok(Some(a.len())));
        assert_eq!(frame_len(&stream[a.len()..]), Ok(Some(b.len())));
        assert_eq!(frame_len(&b[..b.len() - 1]), Ok(None));
        assert_eq!(frame_len(&b[..40]), Ok(None));
        assert_eq!(frame_len(b"garbage without end"), Ok(None));
        let huge = vec![b'a'; MAX_STREAM_MESSAGE_LEN + 1];
        assert!(matches!(frame_len(&huge), Err(ParseError::TooLarge { .. })));
        let long = REGISTER.replace("Content-Length: 0", "Content-Length: 99999999");
        assert!(matches!(
            frame_len(long.as_bytes()),
            Err(ParseError::TooLarge { .. })
        ));
    }

    #[test]
    fn built_requests_parse_back() {
        let via = format!("SIP/2.0/UDP 203.0.113.9:5060;branch={MAGIC_COOKIE}abc");
        let bye = Message::request(
            Method::Bye,
            "sip:alice@pc33.example.com",
            &[
                ("Via", &via),
                ("Max-Forwards", "70"),
                ("From", "<sip:room1@sfu.example.com>;tag=a6c85cf"),
                ("To", "<sip:alice@example.com>;tag=1928301774"),
                ("Call-ID", "a84b4c76e66710@pc33.example.com"),
                ("CSeq", "1 BYE"),
            ],
            Some(("text/plain", b"bye")),
        )
        .expect("builds");
        assert_eq!(bye.body().as_ref(), b"bye");
        assert_eq!(bye.summary().via.sent_by, "203.0.113.9:5060");
        assert_eq!(
            Message::request(Method::Bye, "sip:a b", &[], None),
            Err(ParseError::StartLine)
        );
        assert_eq!(
            Message::request(Method::Bye, "sip:a", &[("Via", "x\r\ny")], None),
            Err(ParseError::BadHeader)
        );
    }
}
