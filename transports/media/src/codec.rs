//! Codec descriptions that do not depend on payload type numbers.

use std::fmt;

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum MediaKind {
    Audio,
    Video,
}

impl MediaKind {
    /// The track name a single-track-per-kind transport (WHIP) uses.
    pub fn track_name(self) -> &'static str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        }
    }
}

impl fmt::Display for MediaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.track_name())
    }
}

/// The codecs corecast forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Codec {
    Opus,
    Pcmu,
    Pcma,
    Vp8,
    Vp9,
    H264,
    Av1,
}

impl Codec {
    pub fn kind(self) -> MediaKind {
        match self {
            Codec::Opus | Codec::Pcmu | Codec::Pcma => MediaKind::Audio,
            Codec::Vp8 | Codec::Vp9 | Codec::H264 | Codec::Av1 => MediaKind::Video,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Codec::Opus => "opus",
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::Vp8 => "VP8",
            Codec::Vp9 => "VP9",
            Codec::H264 => "H264",
            Codec::Av1 => "AV1",
        }
    }
}

/// A codec with the parameters that decide whether a receiver can decode it.
///
/// Two sides agree on a codec when these fields are equal; the RTP payload
/// type is a per-leg number and is deliberately not part of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct CodecInfo {
    pub codec: Codec,
    pub clock_rate: u32,
    /// H264 `profile-level-id`, profile part only (the level may differ).
    pub h264_profile: Option<u16>,
    /// H264 `packetization-mode`.
    pub h264_packetization_mode: Option<u8>,
}

impl CodecInfo {
    pub fn new(codec: Codec, clock_rate: u32) -> CodecInfo {
        CodecInfo {
            codec,
            clock_rate,
            h264_profile: None,
            h264_packetization_mode: None,
        }
    }

    pub fn kind(&self) -> MediaKind {
        self.codec.kind()
    }

    /// Whether a receiver that negotiated `self` can play a stream of
    /// `stream`: the same codec, or for H.264 (same packetization mode) a
    /// profile whose decoders decode the stream's: Constrained Baseline ⊂
    /// Main ⊂ High ⊂ High 10 ⊂ High 4:2:2 ⊂ High 4:4:4 Predictive. Browsers
    /// offer a few profiles only (Chromium: 42, 4d and f4, no High), and a
    /// stream passed through from an encoder (RTMP) is often High.
    pub fn plays(&self, stream: &CodecInfo) -> bool {
        if self == stream {
            return true;
        }
        if self.codec != Codec::H264
            || stream.codec != Codec::H264
            || self.clock_rate != stream.clock_rate
            || self.h264_packetization_mode != stream.h264_packetization_mode
        {
            return false;
        }
        match (
            self.h264_profile.and_then(h264_rank),
            stream.h264_profile.and_then(h264_rank),
        ) {
            (Some(receiver), Some(stream)) => receiver >= stream,
            _ => false,
        }
    }
}

/// The place of an H.264 profile (`profile_idc`) in the chain of profiles
/// whose decoders decode the ones before; `None` for the others (Extended,
/// the scalable and multiview profiles).
fn h264_rank(profile_idc: u16) -> Option<u8> {
    Some(match profile_idc {
        0x42 => 0,
        0x4d => 1,
        0x64 => 2,
        0x6e => 3,
        0x7a => 4,
        0xf4 => 5,
        _ => return None,
    })
}

impl fmt::Display for CodecInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.codec.name(), self.clock_rate)?;
        if let Some(p) = self.h264_profile {
            write!(f, " profile={p:04x}")?;
        }
        if let Some(m) = self.h264_packetization_mode {
            write!(f, " packetization-mode={m}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h264(profile: u16) -> CodecInfo {
        CodecInfo {
            codec: Codec::H264,
            clock_rate: 90_000,
            h264_profile: Some(profile),
            h264_packetization_mode: Some(1),
        }
    }

    #[test]
    fn h264_decoders_play_lower_profiles() {
        // Chromium's High 4:4:4 Predictive plays an encoder's High stream.
        assert!(h264(0xf4).plays(&h264(0x64)));
        assert!(h264(0x64).plays(&h264(0x4d)));
        assert!(h264(0x4d).plays(&h264(0x42)));
        assert!(h264(0x42).plays(&h264(0x42)));
        // Not the other way, not across packetization modes or codecs.
        assert!(!h264(0x42).plays(&h264(0x64)));
        assert!(!h264(0x4d).plays(&h264(0x64)));
        let mut mode0 = h264(0xf4);
        mode0.h264_packetization_mode = Some(0);
        assert!(!mode0.plays(&h264(0x42)));
        assert!(
            !h264(0x58).plays(&h264(0x42)),
            "Extended is not in the chain"
        );
        let vp8 = CodecInfo::new(Codec::Vp8, 90_000);
        assert!(vp8.plays(&vp8));
        assert!(!vp8.plays(&h264(0x42)));
    }
}
