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

/// A one-line reason from a parser error, without the parser's internal
/// positions (str0m's SDP errors carry pointer offsets and line breaks).
pub(crate) fn reason(e: impl std::fmt::Display) -> String {
    let text = e.to_string();
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find(" at PointerOffset(") {
        out.push_str(&rest[..at]);
        rest = rest[at..].split_once(')').map_or("", |(_, tail)| tail);
    }
    out.push_str(rest);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn reasons_are_one_line_without_pointers() {
        let r = super::reason("SDP parse: Parse error at PointerOffset(0x200016a0518)\nUnexpected `g`\nExpected `v`\nsdp line\n");
        assert_eq!(
            r,
            "SDP parse: Parse error Unexpected `g` Expected `v` sdp line"
        );
    }
}
