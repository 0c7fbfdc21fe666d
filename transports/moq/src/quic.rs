//! One QUIC connection of the MoQ port, sans-IO, on quinn-proto.
//!
//! Each connection has a quinn-proto `Endpoint` of its own, so that it is a
//! self-contained state machine a shard can hold like any other endpoint.
//! The connection ids it issues say where it lives: the shard's index, then
//! a 32-bit key the shard gave the connection, then random bytes
//! ([`CID_LEN`] in all). A shard reads the destination id of every datagram
//! on the port ([`destination`]): its own connections by key, another
//! shard's over the rings (a client that moved to another address, which
//! `SO_REUSEPORT` hashes elsewhere), and a client's first Initial by the id
//! the client chose.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quinn_proto::{
    ConnectionHandle, ConnectionId, ConnectionIdGenerator, DatagramEvent, EndpointConfig,
    Event as QuicEvent, ServerConfig, StreamEvent, VarInt,
};

use crate::cert::Certificate;
use crate::wakers::{lock, QuicError, Shared};

/// The length of the connection ids corecast issues.
pub const CID_LEN: usize = 8;

/// The longest datagram the MoQ port reads or sends.
pub const MAX_DATAGRAM: usize = 1500;

/// H3_NO_ERROR: how an HTTP/3 connection closes when its session ended.
const H3_NO_ERROR: VarInt = VarInt::from_u32(0x100);

/// Where a connection lives: a shard and the key it gave the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub shard: u8,
    pub key: u32,
}

impl ConnKey {
    /// The route key the shard files the connection under.
    pub fn route(self) -> Vec<u8> {
        let mut v = vec![self.shard];
        v.extend_from_slice(&self.key.to_be_bytes());
        v
    }

    /// The connection this id of ours names (ids of our length only).
    pub fn of_cid(cid: &[u8]) -> Option<ConnKey> {
        (cid.len() == CID_LEN).then(|| ConnKey {
            shard: cid[0],
            key: u32::from_be_bytes([cid[1], cid[2], cid[3], cid[4]]),
        })
    }
}

/// The destination connection id of a datagram, read from its first
/// packet's header (RFC 9000 §17), and whether that packet is an Initial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination<'a> {
    pub cid: &'a [u8],
    pub initial: bool,
}

/// Reads a datagram's destination connection id; `None` for what is not a
/// QUIC packet (too short, an id over 20 bytes). The fixed bit is not
/// checked: quinn-proto lets peers grease it (RFC 9287), and clients do.
pub fn destination(datagram: &[u8]) -> Option<Destination<'_>> {
    let first = *datagram.first()?;
    if first & 0x80 == 0 {
        // Short header: our ids only, of our length.
        return Some(Destination {
            cid: datagram.get(1..1 + CID_LEN)?,
            initial: false,
        });
    }
    let version = u32::from_be_bytes(datagram.get(1..5)?.try_into().ok()?);
    let len = usize::from(*datagram.get(5)?);
    if len > 20 {
        return None;
    }
    Some(Destination {
        cid: datagram.get(6..6 + len)?,
        // Version 1's Initial type; other versions go to quinn-proto, which
        // answers with version negotiation.
        initial: version != 1 || (first >> 4) & 0x03 == 0,
    })
}

/// Issues this connection's ids: shard, key, then random bytes.
struct KeyedIds(ConnKey);

impl ConnectionIdGenerator for KeyedIds {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut id = [0u8; CID_LEN];
        id[..5].copy_from_slice(&self.0.route());
        rand::fill(&mut id[5..]);
        ConnectionId::new(&id)
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// What every connection of a node shares: the TLS and transport
/// configuration, built once.
#[derive(Clone)]
pub struct QuicServerConfig {
    pub server: Arc<ServerConfig>,
}

impl std::fmt::Debug for QuicServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QuicServerConfig")
    }
}

impl QuicServerConfig {
    /// TLS 1.3 with `cert`, offering `alpns` (the first the client also
    /// offers wins); datagrams on; at most `max_streams` streams of each
    /// direction open at once per connection; idle connections closed
    /// after `idle`.
    pub fn new(
        cert: &Certificate,
        alpns: &[&str],
        max_streams: u32,
        idle: Duration,
    ) -> Result<QuicServerConfig, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(cert.chain.clone(), cert.clone_key())
            .map_err(|e| format!("the certificate and key do not go together: {e}"))?;
        tls.alpn_protocols = alpns.iter().map(|a| a.as_bytes().to_vec()).collect();
        tls.max_early_data_size = 0;
        let crypto = quinn_proto::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| e.to_string())?;
        let mut server = ServerConfig::with_crypto(Arc::new(crypto));
        let mut transport = quinn_proto::TransportConfig::default();
        transport
            .max_concurrent_bidi_streams(max_streams.into())
            .max_concurrent_uni_streams(max_streams.into())
            .max_idle_timeout(Some(idle.try_into().map_err(|_| "idle timeout too long")?))
            .keep_alive_interval(Some(idle / 3))
            .datagram_receive_buffer_size(Some(64 * 1024));
        server.transport_config(Arc::new(transport));
        // Address validation by Retry would send a client's second Initial to
        // a connection that does not exist yet; the handshake's anti-amplification
        // limit stands instead.
        server.retry_token_lifetime(Duration::from_secs(10));
        Ok(QuicServerConfig {
            server: Arc::new(server),
        })
    }
}

/// A client configuration that accepts the server certificate whose
/// SHA-256 is `fingerprint` (hex) and no other, as a browser's
/// `serverCertificateHashes` does; offering `alpns`.
pub fn pinned_client_config(
    fingerprint: &str,
    alpns: &[&str],
) -> Result<quinn_proto::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(crate::pinned::Pinned::new(fingerprint, provider.clone())?);
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = alpns.iter().map(|a| a.as_bytes().to_vec()).collect();
    let crypto =
        quinn_proto::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
    Ok(quinn_proto::ClientConfig::new(Arc::new(crypto)))
}

/// Why a first datagram did not make a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcceptRefused {
    /// Not a client's Initial (garbage, a stray packet, a version we do
    /// not speak: the answer, if any, is in the transmit).
    NotInitial(Option<Vec<u8>>),
    /// quinn-proto refused it (its reason).
    Refused(String),
}

/// A datagram to send.
#[derive(Debug)]
pub struct QuicTransmit {
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

/// One QUIC connection with its own quinn-proto endpoint.
pub struct QuicConn {
    endpoint: quinn_proto::Endpoint,
    handle: ConnectionHandle,
    pub(crate) shared: Arc<Mutex<Shared>>,
    key: ConnKey,
    local: SocketAddr,
    remote: SocketAddr,
    /// The id the client chose for its first Initial (its route until the
    /// handshake is done).
    initial_cid: Vec<u8>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for QuicConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicConn")
            .field("key", &self.key)
            .field("remote", &self.remote)
            .finish()
    }
}

impl QuicConn {
    /// A connection from a client's first datagram (an Initial), keyed
    /// `key`, at `local`.
    pub fn accept(
        now: Instant,
        config: &QuicServerConfig,
        key: ConnKey,
        local: SocketAddr,
        remote: SocketAddr,
        datagram: &[u8],
    ) -> Result<QuicConn, AcceptRefused> {
        let initial_cid = destination(datagram)
            .filter(|d| d.initial)
            .map(|d| d.cid.to_vec())
            .ok_or(AcceptRefused::NotInitial(None))?;
        let mut endpoint_config = EndpointConfig::default();
        endpoint_config.cid_generator(move || Box::new(KeyedIds(key)));
        let mut endpoint = quinn_proto::Endpoint::new(
            Arc::new(endpoint_config),
            Some(config.server.clone()),
            true,
            None,
        );
        let mut buf = Vec::with_capacity(MAX_DATAGRAM);
        let event = endpoint.handle(
            now,
            remote,
            Some(local.ip()),
            None,
            BytesMut::from(datagram),
            &mut buf,
        );
        let incoming = match event {
            Some(DatagramEvent::NewConnection(incoming)) => incoming,
            Some(DatagramEvent::Response(t)) => {
                return Err(AcceptRefused::NotInitial(Some(buf[..t.size].to_vec())))
            }
            _ => return Err(AcceptRefused::NotInitial(None)),
        };
        let (handle, conn) = endpoint
            .accept(incoming, now, &mut buf, None)
            .map_err(|e| AcceptRefused::Refused(e.cause.to_string()))?;
        Ok(QuicConn {
            endpoint,
            handle,
            shared: Arc::new(Mutex::new(Shared::new(conn, now))),
            key,
            local,
            remote,
            initial_cid,
            buf,
        })
    }

    /// A client connection to `remote` (the load generator's MoQ viewers,
    /// tests), verifying the server by `config`.
    pub fn connect(
        now: Instant,
        config: quinn_proto::ClientConfig,
        key: ConnKey,
        local: SocketAddr,
        remote: SocketAddr,
        server_name: &str,
    ) -> Result<QuicConn, String> {
        let mut endpoint_config = EndpointConfig::default();
        endpoint_config.cid_generator(move || Box::new(KeyedIds(key)));
        let mut endpoint = quinn_proto::Endpoint::new(Arc::new(endpoint_config), None, true, None);
        let (handle, conn) = endpoint
            .connect(now, config, remote, server_name)
            .map_err(|e| e.to_string())?;
        Ok(QuicConn {
            endpoint,
            handle,
            shared: Arc::new(Mutex::new(Shared::new(conn, now))),
            key,
            local,
            remote,
            initial_cid: Vec::new(),
            buf: Vec::with_capacity(MAX_DATAGRAM),
        })
    }

    pub fn key(&self) -> ConnKey {
        self.key
    }

    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// The MoQ session's view of this connection, once it is connected
    /// with `alpn`.
    pub fn session(&self, alpn: Option<String>) -> crate::transport::QuicSession {
        crate::transport::QuicSession::new(self.shared.clone(), alpn)
    }

    /// The id of the client's first Initial.
    pub fn initial_cid(&self) -> &[u8] {
        &self.initial_cid
    }

    /// A datagram from the client (`remote` may be a new address: QUIC
    /// validates the path itself).
    pub fn handle_datagram(&mut self, now: Instant, remote: SocketAddr, datagram: &[u8]) {
        let event = self.endpoint.handle(
            now,
            remote,
            Some(self.local.ip()),
            None,
            BytesMut::from(datagram),
            &mut self.buf,
        );
        let mut shared = lock(&self.shared);
        shared.now = now;
        match event {
            Some(DatagramEvent::ConnectionEvent(h, event)) if h == self.handle => {
                shared.conn.handle_event(event);
                self.remote = remote;
            }
            // A stateless answer (a reset for an id it no longer knows): let
            // it go, the connection's own timers end it.
            Some(DatagramEvent::Response(_)) | Some(DatagramEvent::NewConnection(_)) | None => {}
            Some(DatagramEvent::ConnectionEvent(..)) => {}
        }
    }

    /// Time passes.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut shared = lock(&self.shared);
        shared.now = now;
        if shared.conn.poll_timeout().is_some_and(|t| t <= now) {
            shared.conn.handle_timeout(now);
        }
    }

    /// Moves quinn-proto's events along: endpoint events to the endpoint and
    /// back, stream and connection events to the wakers waiting on them.
    /// Returns the connection's own events (handshake done, lost).
    pub fn process(&mut self) -> Vec<ConnEvent> {
        let mut shared = lock(&self.shared);
        let mut out = Vec::new();
        while let Some(event) = shared.conn.poll_endpoint_events() {
            if let Some(back) = self.endpoint.handle_event(self.handle, event) {
                shared.conn.handle_event(back);
            }
        }
        while let Some(event) = shared.conn.poll() {
            match event {
                QuicEvent::Stream(StreamEvent::Readable { id })
                    if shared.wt.as_ref().is_some_and(|wt| wt.session == id) =>
                {
                    if shared.session_stream_ended() {
                        let now = shared.now;
                        shared
                            .conn
                            .close(now, H3_NO_ERROR, Bytes::from_static(b"session closed"));
                    }
                }
                QuicEvent::Stream(StreamEvent::Readable { id }) => shared.wake_read(id),
                QuicEvent::Stream(StreamEvent::Writable { id }) => shared.wake_write(id),
                QuicEvent::Stream(StreamEvent::Finished { id })
                | QuicEvent::Stream(StreamEvent::Stopped { id, .. }) => shared.wake_write(id),
                QuicEvent::Stream(StreamEvent::Opened { dir }) => shared.wake_accept(dir),
                QuicEvent::Stream(StreamEvent::Available { dir }) => shared.wake_open(dir),
                QuicEvent::DatagramReceived => shared.wake_datagram(),
                QuicEvent::DatagramsUnblocked => {}
                QuicEvent::HandshakeDataReady => {}
                QuicEvent::Connected => {
                    let alpn = shared
                        .conn
                        .crypto_session()
                        .handshake_data()
                        .and_then(|d| {
                            d.downcast::<quinn_proto::crypto::rustls::HandshakeData>()
                                .ok()
                        })
                        .and_then(|d| d.protocol)
                        .map(|p| String::from_utf8_lossy(&p).into_owned());
                    out.push(ConnEvent::Connected { alpn });
                }
                QuicEvent::ConnectionLost { reason } => {
                    out.push(ConnEvent::Lost(reason.to_string()));
                    shared.lost(QuicError::from(reason));
                }
            }
        }
        if shared.conn.is_drained() && !shared.drained {
            shared.drained = true;
            shared.lost(QuicError::Closed("drained".into()));
            out.push(ConnEvent::Drained);
        }
        out
    }

    /// The next datagram to send, if any.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<QuicTransmit> {
        let mut shared = lock(&self.shared);
        self.buf.clear();
        let t = shared.conn.poll_transmit(now, 1, &mut self.buf)?;
        Some(QuicTransmit {
            destination: t.destination,
            contents: self.buf[..t.size].to_vec(),
        })
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        lock(&self.shared).conn.poll_timeout()
    }

    /// Sends a PING (a client that just moved, a keep-alive of its own).
    pub fn ping(&mut self) {
        lock(&self.shared).conn.ping();
    }

    /// Closes the connection with an application error code.
    pub fn close(&mut self, now: Instant, code: u32, reason: &str) {
        let mut shared = lock(&self.shared);
        shared.conn.close(
            now,
            code.into(),
            bytes::Bytes::copy_from_slice(reason.as_bytes()),
        );
    }

    /// Whether the connection is gone (closed and drained).
    pub fn is_drained(&self) -> bool {
        lock(&self.shared).drained
    }
}

/// What happened to a connection, for its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnEvent {
    /// The handshake is done; the protocol the client chose.
    Connected { alpn: Option<String> },
    /// The connection ended (the reason); it drains for a while.
    Lost(String),
    /// Drained: it can be dropped.
    Drained,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_header_names_its_connection() {
        let key = ConnKey {
            shard: 3,
            key: 0xdead_beef,
        };
        let mut ids = KeyedIds(key);
        let cid = ids.generate_cid();
        let mut packet = vec![0x40];
        packet.extend_from_slice(&cid);
        packet.extend_from_slice(&[0; 20]);
        let d = destination(&packet).unwrap();
        assert!(!d.initial);
        assert_eq!(ConnKey::of_cid(d.cid), Some(key));
        assert_eq!(key.route(), vec![3, 0xde, 0xad, 0xbe, 0xef]);
    }

    #[test]
    fn long_headers_say_whether_they_are_initial() {
        // Initial, version 1, a 10-byte id.
        let mut p = vec![0xc0, 0, 0, 0, 1, 10];
        p.extend_from_slice(&[7; 10]);
        p.extend_from_slice(&[0; 30]);
        let d = destination(&p).unwrap();
        assert!(d.initial);
        assert_eq!(d.cid, &[7; 10]);
        // Handshake (type 2).
        p[0] = 0xe0;
        assert!(!destination(&p).unwrap().initial);
        // Not QUIC, or cut short.
        assert_eq!(destination(&[]), None);
        assert_eq!(destination(&[0x00, 1, 2]), None);
        // A short header with the fixed bit greased (clear) is still QUIC.
        let mut greased = vec![0x01];
        greased.extend_from_slice(&[1, 0, 0, 0, 9, 7, 7, 7, 0, 0]);
        let d = destination(&greased).unwrap();
        assert_eq!(ConnKey::of_cid(d.cid), Some(ConnKey { shard: 1, key: 9 }));
        assert_eq!(destination(&[0xc0, 0, 0, 0, 1, 21]), None);
        assert_eq!(destination(&[0xc0, 0, 0, 0, 1, 10, 1]), None);
        assert_eq!(destination(&[0x40, 1, 2]), None);
    }
}
