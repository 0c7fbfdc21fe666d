//! Setting up a WebTransport session over HTTP/3 (RFC 9220's extended
//! CONNECT, draft-ietf-webtrans-http3): both sides send SETTINGS that
//! enable WebTransport on a control stream, the client sends a CONNECT
//! request with `:protocol webtransport` and the MoQ versions it speaks
//! (`wt-available-protocols`), and the server answers 200 with the one it
//! picked (`wt-protocol`). The session then lives on the connection's
//! streams ([`crate::webtransport`]).
//!
//! No QPACK dynamic table is used or offered, so the peer's QPACK streams
//! carry nothing this side must read.

use std::future::poll_fn;

use bytes::BytesMut;
use web_transport_proto::{http, ConnectError, ConnectRequest, ConnectResponse, Settings};
use web_transport_trait::poll::{RecvStream as _, SendStream as _, Session as _};

use crate::transport::{QuicRecv, QuicSend, QuicSession};
use crate::QuicError;

/// The most a CONNECT request or response may take.
const MAX_HEADERS: usize = 16 * 1024;

/// Why a WebTransport session did not come up.
#[derive(Debug, thiserror::Error)]
pub enum H3Error {
    #[error(transparent)]
    Quic(#[from] QuicError),
    #[error("bad CONNECT: {0}")]
    Connect(String),
    #[error("the stream ended before the CONNECT exchange did")]
    Ended,
    #[error("no MoQ version in common (the client offered {0:?})")]
    NoProtocol(Vec<String>),
}

impl From<ConnectError> for H3Error {
    fn from(e: ConnectError) -> H3Error {
        H3Error::Connect(e.to_string())
    }
}

/// A WebTransport session a client asked for.
pub struct Accepted {
    pub session: QuicSession,
    /// The request's path and query (`/?token=…`).
    pub path: String,
}

/// Answers a client's WebTransport CONNECT on `raw`, a fresh HTTP/3
/// connection, with the first of the client's protocols that is in
/// `protocols`. A client that offers none of them gets 400.
pub async fn accept(mut raw: QuicSession, protocols: &[&str]) -> Result<Accepted, H3Error> {
    send_settings(&mut raw).await?;
    let (mut send, mut recv) = poll_fn(|cx| raw.poll_accept_bi(cx)).await?;
    let request = read_headers(&mut recv, |b| ConnectRequest::decode(b)).await?;
    let Some(protocol) = request
        .protocols
        .iter()
        .find(|p| protocols.contains(&p.as_str()))
        .cloned()
    else {
        let mut out = BytesMut::new();
        ConnectResponse::new(http::StatusCode::BAD_REQUEST).encode(&mut out)?;
        write_all(&mut send, &out).await?;
        let _ = send.finish();
        return Err(H3Error::NoProtocol(request.protocols));
    };
    let mut out = BytesMut::new();
    ConnectResponse::OK
        .with_protocol(protocol.clone())
        .encode(&mut out)?;
    write_all(&mut send, &out).await?;
    let path = match request.url.query() {
        Some(q) => format!("{}?{q}", request.url.path()),
        None => request.url.path().to_string(),
    };
    Ok(Accepted {
        session: raw.into_webtransport(recv.id(), protocol),
        path,
    })
}

/// Asks for a WebTransport session at `url` on `raw`, a fresh HTTP/3
/// connection, offering `protocols`; the session speaks the one the
/// server picked.
pub async fn connect(
    mut raw: QuicSession,
    url: &str,
    protocols: &[&str],
) -> Result<QuicSession, H3Error> {
    send_settings(&mut raw).await?;
    let url = url
        .parse::<url::Url>()
        .map_err(|e| H3Error::Connect(e.to_string()))?;
    let (mut send, mut recv) = poll_fn(|cx| raw.poll_open_bi(cx)).await?;
    let mut out = BytesMut::new();
    ConnectRequest::new(url)
        .with_protocols(protocols.iter().map(|p| p.to_string()))
        .encode(&mut out)?;
    write_all(&mut send, &out).await?;
    let response = read_headers(&mut recv, |b| ConnectResponse::decode(b)).await?;
    let protocol = response
        .protocol
        .ok_or_else(|| H3Error::NoProtocol(protocols.iter().map(|p| p.to_string()).collect()))?;
    Ok(raw.into_webtransport(recv.id(), protocol))
}

/// Opens this side's control stream with SETTINGS that enable
/// WebTransport (one session) and HTTP/3 datagrams.
async fn send_settings(raw: &mut QuicSession) -> Result<(), H3Error> {
    let mut control = poll_fn(|cx| raw.poll_open_uni(cx)).await?;
    let mut settings = Settings::default();
    settings.enable_webtransport(1);
    let mut out = BytesMut::new();
    settings.encode(&mut out);
    write_all(&mut control, &out).await
}

async fn write_all(send: &mut QuicSend, mut buf: &[u8]) -> Result<(), H3Error> {
    while !buf.is_empty() {
        let n = poll_fn(|cx| send.poll_write(cx, buf)).await?;
        buf = &buf[n..];
    }
    Ok(())
}

/// Reads the stream until `decode` makes a message of what came.
async fn read_headers<T>(
    recv: &mut QuicRecv,
    decode: impl Fn(&mut &[u8]) -> Result<T, ConnectError>,
) -> Result<T, H3Error> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    loop {
        let n = poll_fn(|cx| recv.poll_read(cx, &mut chunk))
            .await?
            .ok_or(H3Error::Ended)?;
        buf.extend_from_slice(&chunk[..n]);
        match decode(&mut &buf[..]) {
            Ok(m) => return Ok(m),
            Err(ConnectError::UnexpectedEnd) if buf.len() <= MAX_HEADERS => {}
            Err(ConnectError::UnexpectedEnd) => {
                return Err(ConnectError::FieldSectionTooLarge.into())
            }
            Err(e) => return Err(e.into()),
        }
    }
}
