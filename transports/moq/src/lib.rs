//! Media over QUIC for corecast, sans-IO.
//!
//! - [`quic`]: one QUIC connection on quinn-proto, with connection ids that
//!   name the shard and the connection, so a shard finds its connections by
//!   the ids in their packets.
//! - [`transport`]: the poll interface MoQ sessions run over
//!   (web-transport-trait), on that connection's streams.
//! - [`h3`], [`webtransport`]: WebTransport over HTTP/3 (what browsers
//!   connect with): the CONNECT exchange, then the session's streams.
//! - [`cert`]: the server certificate, generated (pinnable) or from PEM.

pub mod cert;
pub mod client;
pub mod endpoint;
pub mod frames;
pub mod h3;
pub mod packetize;
mod pinned;
pub mod publish;
pub mod quic;
pub mod transport;
mod wakers;
pub mod webtransport;

pub use wakers::QuicError;

/// Streams of each direction a client may hold open at once.
pub const MAX_STREAMS: u32 = 256;

/// The MoQ versions corecast speaks, as the QUIC ALPNs that select them
/// on raw QUIC and the WebTransport protocols that select them over
/// HTTP/3, most preferred first: moq-lite drafts 06 to 03.
pub const ALPNS: &[&str] = &["moq-lite-06", "moq-lite-05", "moq-lite-04", "moq-lite-03"];

/// The ALPN of HTTP/3, which carries WebTransport.
pub const H3: &str = "h3";

/// What the MoQ port offers: MoQ on raw QUIC, and HTTP/3 for WebTransport.
pub const SERVER_ALPNS: &[&str] = &[
    "moq-lite-06",
    "moq-lite-05",
    "moq-lite-04",
    "moq-lite-03",
    H3,
];
