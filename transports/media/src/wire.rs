//! The wire form of a [`MediaPacket`] between nodes of a cluster.
//!
//! ```text
//! version (1) | codec (1) | clock_rate (4) | h264 flags (1)
//! [h264_profile (2)] [packetization_mode (1)]
//! seq (8) | rtp_time (4) | marker (1) | payload (rest)
//! ```
//!
//! Big-endian. The channel travels beside it (the pub-sub channel) and the
//! arrival time is the receiver's own. Codec numbers are part of the cluster
//! protocol: never renumber them.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use crate::{ChannelId, Codec, CodecInfo, MediaPacket};

const VERSION: u8 = 1;
const HAS_PROFILE: u8 = 1;
const HAS_MODE: u8 = 2;

/// Why bytes are not a media packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    Truncated,
    Version(u8),
    Codec(u8),
    Flags(u8),
    Marker(u8),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Truncated => f.write_str("media packet truncated"),
            WireError::Version(v) => write!(f, "unknown media packet version {v}"),
            WireError::Codec(c) => write!(f, "unknown codec number {c}"),
            WireError::Flags(x) => write!(f, "unknown codec flags {x:#x}"),
            WireError::Marker(m) => write!(f, "marker byte {m} is neither 0 nor 1"),
        }
    }
}

impl std::error::Error for WireError {}

fn codec_number(c: Codec) -> u8 {
    match c {
        Codec::Opus => 1,
        Codec::Pcmu => 2,
        Codec::Pcma => 3,
        Codec::Vp8 => 10,
        Codec::Vp9 => 11,
        Codec::H264 => 12,
        Codec::Av1 => 13,
    }
}

fn codec_of(n: u8) -> Option<Codec> {
    Some(match n {
        1 => Codec::Opus,
        2 => Codec::Pcmu,
        3 => Codec::Pcma,
        10 => Codec::Vp8,
        11 => Codec::Vp9,
        12 => Codec::H264,
        13 => Codec::Av1,
        _ => return None,
    })
}

/// Appends the wire form of `packet` to `out`.
pub fn encode_media(packet: &MediaPacket, out: &mut Vec<u8>) {
    let c = &packet.codec;
    out.reserve(24 + packet.payload.len());
    out.push(VERSION);
    out.push(codec_number(c.codec));
    out.extend_from_slice(&c.clock_rate.to_be_bytes());
    let flags = if c.h264_profile.is_some() {
        HAS_PROFILE
    } else {
        0
    } | if c.h264_packetization_mode.is_some() {
        HAS_MODE
    } else {
        0
    };
    out.push(flags);
    if let Some(p) = c.h264_profile {
        out.extend_from_slice(&p.to_be_bytes());
    }
    if let Some(m) = c.h264_packetization_mode {
        out.push(m);
    }
    out.extend_from_slice(&packet.seq.to_be_bytes());
    out.extend_from_slice(&packet.rtp_time.to_be_bytes());
    out.push(u8::from(packet.marker));
    out.extend_from_slice(&packet.payload);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(WireError::Truncated)?;
        self.0 = rest;
        Ok(*head)
    }
}

/// Parses a packet received on `channel`, arrived at `arrival`.
pub fn decode_media(
    channel: ChannelId,
    data: &[u8],
    arrival: Instant,
) -> Result<MediaPacket, WireError> {
    let mut r = Reader(data);
    let [version] = r.take::<1>()?;
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    let [number] = r.take::<1>()?;
    let codec = codec_of(number).ok_or(WireError::Codec(number))?;
    let clock_rate = u32::from_be_bytes(r.take::<4>()?);
    let [flags] = r.take::<1>()?;
    if flags & !(HAS_PROFILE | HAS_MODE) != 0 {
        return Err(WireError::Flags(flags));
    }
    let h264_profile = if flags & HAS_PROFILE != 0 {
        Some(u16::from_be_bytes(r.take::<2>()?))
    } else {
        None
    };
    let h264_packetization_mode = if flags & HAS_MODE != 0 {
        Some(r.take::<1>()?[0])
    } else {
        None
    };
    let seq = u64::from_be_bytes(r.take::<8>()?);
    let rtp_time = u32::from_be_bytes(r.take::<4>()?);
    let marker = match r.take::<1>()?[0] {
        0 => false,
        1 => true,
        m => return Err(WireError::Marker(m)),
    };
    let codec = CodecInfo {
        codec,
        clock_rate,
        h264_profile,
        h264_packetization_mode,
    };
    Ok(MediaPacket {
        channel,
        kind: codec.kind(),
        codec,
        seq,
        rtp_time,
        marker,
        arrival,
        payload: Arc::from(r.0),
    })
}
