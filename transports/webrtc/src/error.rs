//! The crate's error type.

use corecast_media::MediaKind;

/// Why an endpoint could not be created or an input was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The SDP did not parse.
    #[error("malformed SDP: {0}")]
    BadSdp(String),
    /// The offer has no media this endpoint can use.
    #[error("the offer has no {0}")]
    NoMedia(&'static str),
    /// The offer lacks the codec the publisher sends.
    #[error("the offer has no {kind} codec in common with the publisher ({wanted})")]
    NoCommonCodec { kind: MediaKind, wanted: String },
    /// A trickle-ice-sdpfrag body did not parse.
    #[error("malformed trickle-ice-sdpfrag: {0}")]
    BadFragment(String),
    /// str0m refused the input.
    #[error("webrtc: {0}")]
    Rtc(#[from] str0m::RtcError),
    /// A datagram that is not STUN, DTLS, RTP or RTCP, or does not belong here.
    #[error("unrecognized datagram")]
    Unrecognized,
}
