//! Configuration shared by every endpoint of a node.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use str0m::config::{CryptoProvider, DtlsCert};

/// How long a viewer leg keeps video packets for NACKs by default: str0m's
/// own 3 s, which the end-to-end tests have always run with. Shorter
/// windows cut memory (bitrate × window per viewer) and are opt-in
/// (`--nack-window-ms`): with 500 ms a Chromium viewer behind a 300 kbit/s
/// link with a 200 ms queue stalled once in CI, and with 1 s a simulated
/// simulcast viewer came back to its top layer 0.6 s later than its test
/// allows (str0m's BWE probes with packets from this buffer). (str0m's own default is
/// 3 s, which cost a 1.5 Mbit/s viewer about 550 KiB; Janus keeps at
/// least 200 ms, more for long round trips.)
pub const DEFAULT_NACK_WINDOW: Duration = Duration::from_secs(3);

/// Packets a viewer leg keeps for NACKs at most, whatever the window
/// (str0m's default).
pub(crate) const NACK_MAX_PACKETS: usize = 2000;

/// str0m's default cap on retransmitted bytes, as a share of the sent bytes.
pub(crate) const RTX_RATIO_CAP: Option<f32> = Some(0.15);

/// What every endpoint of one node shares: addresses, DTLS identity, timers.
///
/// Build it once per node (creating the DTLS certificate is expensive) and
/// clone it into every shard; the clone shares the heavy parts.
#[derive(Clone)]
pub struct EndpointConfig {
    /// Host candidates advertised in every answer (the node's media sockets).
    pub candidates: Vec<SocketAddr>,
    /// A session with no datagram for this long is closed (ICE consent).
    pub consent_timeout: Duration,
    /// Keyframe requests toward one publisher track are sent at most this
    /// often, whoever asks (requests in between are sent when it ends).
    pub keyframe_interval: Duration,
    /// One viewer's keyframe requests (its PLI/FIR, or waiting for the
    /// keyframe that starts its video) are passed on at most this often.
    pub viewer_keyframe_interval: Duration,
    /// How long each viewer leg keeps its video packets for retransmission
    /// (NACK). Every leg holds its own copies (str0m's send stream takes
    /// the payload by value), so a viewer's memory grows with bitrate ×
    /// this window; it must cover the viewer's round trip and a retry.
    pub nack_window: Duration,
    pub(crate) crypto: Arc<CryptoProvider>,
    pub(crate) dtls_cert: DtlsCert,
}

impl EndpointConfig {
    /// A config with a fresh DTLS certificate and default timers.
    ///
    /// # Panics
    /// If the crypto provider cannot generate a certificate, which only
    /// happens when the process is out of entropy: a start-up failure.
    pub fn new(candidates: Vec<SocketAddr>) -> EndpointConfig {
        let crypto = crate::dtls::crypto_provider();
        let dtls_cert = crypto
            .dtls_provider
            .generate_certificate()
            .expect("the crypto provider generates a DTLS certificate at start-up");
        EndpointConfig {
            candidates,
            consent_timeout: Duration::from_secs(20),
            keyframe_interval: Duration::from_millis(500),
            viewer_keyframe_interval: Duration::from_secs(2),
            nack_window: DEFAULT_NACK_WINDOW,
            crypto: Arc::new(crypto),
            dtls_cert,
        }
    }
}

impl std::fmt::Debug for EndpointConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointConfig")
            .field("candidates", &self.candidates)
            .field("consent_timeout", &self.consent_timeout)
            .field("keyframe_interval", &self.keyframe_interval)
            .field("viewer_keyframe_interval", &self.viewer_keyframe_interval)
            .field("nack_window", &self.nack_window)
            .finish_non_exhaustive()
    }
}
