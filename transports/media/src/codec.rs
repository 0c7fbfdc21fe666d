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
