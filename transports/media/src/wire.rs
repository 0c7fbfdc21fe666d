//! The wire form of a [`MediaPacket`] between nodes of a cluster.
//!
//! ```text
//! version (1) | codec (1) | clock_rate (4) | h264 flags (1)
//! [h264_profile (2)] [packetization_mode (1)]
//! seq (8) | rtp_time (4) | flags (1)
//! [wallclock − arrival, µs (4, signed)] [layer (1)] [audio level (1)]
//! [dependency: layer (1) | marks (1) | length (1) | descriptor (length)]
//! payload (rest)
//! ```
//!
//! Big-endian. Flags: bit 0 marker; bit 1 a video orientation follows in
//! bits 2–3 (the rotation bits of the CVO extension); bit 4 the wallclock
//! offset field is present; bit 5 the layer byte is present (spatial layer
//! in the high nibble, temporal in the low; layer 0/0 is not sent); bit 6
//! the audio level byte (RFC 6464, 0–127) is present; bit 7 a dependency
//! descriptor follows with what the publisher's node read of it (the
//! frame's layer as spatial and temporal nibbles; marks: bit 0 SVC, 1
//! frame start, 2 frame end, 3 switching-up point, 4–5 the layer it
//! switches up to; the descriptor's 3–255 bytes). The channel travels beside it (the pub-sub
//! channel) and the arrival time is the receiver's own; the wallclock
//! (the publisher's sender-report mapping) travels as an offset from the
//! sending node's arrival time and is placed at the same offset from the
//! receiving node's (at most ±60 s; zero is not sent). Encoding is
//! canonical: what decodes re-encodes to the same bytes. Nodes of one
//! cluster must speak the same version (version 1 had no orientation and no
//! wallclock, version 2 no layer and no audio level, version 3 no
//! dependency descriptor). Codec numbers are part of the cluster protocol: never
//! renumber them.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{ChannelId, Codec, CodecInfo, Dependency, Layer, LayerPacket, MediaPacket};

const VERSION: u8 = 4;
const MARKER: u8 = 1;
const HAS_ORIENTATION: u8 = 2;
const ORIENTATION_SHIFT: u8 = 2;
const HAS_WALLCLOCK: u8 = 16;
const HAS_LAYER: u8 = 32;
const HAS_AUDIO_LEVEL: u8 = 64;
const HAS_DEPENDENCY: u8 = 128;
const SVC: u8 = 1;
const FRAME_START: u8 = 2;
const FRAME_END: u8 = 4;
const SWITCH_UP: u8 = 8;
const SWITCH_UP_TO_SHIFT: u8 = 4;
const SWITCH_UP_TO: u8 = 3 << SWITCH_UP_TO_SHIFT;
/// The shortest dependency descriptor (its mandatory fields).
const MIN_DESCRIPTOR: usize = 3;
/// A wallclock further than this from the arrival is not sent (the
/// receiver uses its arrival time instead).
const MAX_WALLCLOCK_OFFSET_US: u32 = 60_000_000;
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
    Wallclock(i32),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Truncated => f.write_str("media packet truncated"),
            WireError::Version(v) => write!(f, "unknown media packet version {v}"),
            WireError::Codec(c) => write!(f, "unknown codec number {c}"),
            WireError::Flags(x) => write!(f, "unknown codec flags {x:#x}"),
            WireError::Marker(m) => write!(f, "unknown packet flags {m:#x}"),
            WireError::Wallclock(us) => write!(f, "wallclock offset {us} µs out of range"),
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
    let mut flags = u8::from(packet.marker);
    if let Some(o) = packet.orientation {
        flags |= HAS_ORIENTATION | ((o & 3) << ORIENTATION_SHIFT);
    }
    let offset = wallclock_offset(packet);
    if offset.is_some() {
        flags |= HAS_WALLCLOCK;
    }
    let layer = (packet.layer.spatial.min(15) << 4) | packet.layer.temporal.min(15);
    if layer != 0 {
        flags |= HAS_LAYER;
    }
    let level = packet.audio_level.map(|l| l.min(127));
    if level.is_some() {
        flags |= HAS_AUDIO_LEVEL;
    }
    // A descriptor the wire cannot carry (longer than 255 bytes) is left
    // out; the packet still goes.
    let dependency = packet
        .dependency
        .as_ref()
        .filter(|d| (MIN_DESCRIPTOR..=255).contains(&d.descriptor.len()));
    if dependency.is_some() {
        flags |= HAS_DEPENDENCY;
    }
    out.push(flags);
    if let Some(us) = offset {
        out.extend_from_slice(&us.to_be_bytes());
    }
    if layer != 0 {
        out.push(layer);
    }
    if let Some(level) = level {
        out.push(level);
    }
    if let Some(d) = dependency {
        let l = d.layer;
        out.push((l.layer.spatial.min(15) << 4) | l.layer.temporal.min(15));
        let marks = [
            (l.svc, SVC),
            (l.frame_start, FRAME_START),
            (l.frame_end, FRAME_END),
            (l.switch_up, SWITCH_UP),
        ];
        let marks = marks
            .iter()
            .filter(|(on, _)| *on)
            .fold(0, |m, (_, b)| m | b);
        out.push(marks | (l.switch_up_to.min(3) << SWITCH_UP_TO_SHIFT));
        out.push(d.descriptor.len() as u8);
        out.extend_from_slice(&d.descriptor);
    }
    out.extend_from_slice(&packet.payload);
}

/// `wallclock − arrival` in microseconds, when they differ and it fits.
fn wallclock_offset(packet: &MediaPacket) -> Option<i32> {
    let us = if packet.wallclock >= packet.arrival {
        i64::try_from((packet.wallclock - packet.arrival).as_micros()).ok()?
    } else {
        -i64::try_from((packet.arrival - packet.wallclock).as_micros()).ok()?
    };
    if us == 0 || us.unsigned_abs() > u64::from(MAX_WALLCLOCK_OFFSET_US) {
        return None;
    }
    i32::try_from(us).ok()
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
    let [flags] = r.take::<1>()?;
    let known = MARKER
        | HAS_ORIENTATION
        | (3 << ORIENTATION_SHIFT)
        | HAS_WALLCLOCK
        | HAS_LAYER
        | HAS_AUDIO_LEVEL
        | HAS_DEPENDENCY;
    let stray_rotation = flags & HAS_ORIENTATION == 0 && flags & (3 << ORIENTATION_SHIFT) != 0;
    if flags & !known != 0 || stray_rotation {
        return Err(WireError::Marker(flags));
    }
    let orientation = (flags & HAS_ORIENTATION != 0).then_some((flags >> ORIENTATION_SHIFT) & 3);
    let wallclock = if flags & HAS_WALLCLOCK != 0 {
        let us = i32::from_be_bytes(r.take::<4>()?);
        if us == 0 || us.unsigned_abs() > MAX_WALLCLOCK_OFFSET_US {
            return Err(WireError::Wallclock(us));
        }
        let d = Duration::from_micros(u64::from(us.unsigned_abs()));
        if us > 0 {
            arrival.checked_add(d)
        } else {
            arrival.checked_sub(d)
        }
        .ok_or(WireError::Wallclock(us))?
    } else {
        arrival
    };
    let codec = CodecInfo {
        codec,
        clock_rate,
        h264_profile,
        h264_packetization_mode,
    };
    let layer = if flags & HAS_LAYER != 0 {
        let [b] = r.take::<1>()?;
        if b == 0 {
            return Err(WireError::Marker(flags));
        }
        Layer {
            spatial: b >> 4,
            temporal: b & 15,
        }
    } else {
        Layer::default()
    };
    let audio_level = if flags & HAS_AUDIO_LEVEL != 0 {
        let [b] = r.take::<1>()?;
        if b > 127 {
            return Err(WireError::Marker(flags));
        }
        Some(b)
    } else {
        None
    };
    let dependency = if flags & HAS_DEPENDENCY != 0 {
        let [layer, marks, len] = r.take::<3>()?;
        let len = usize::from(len);
        let known = SVC | FRAME_START | FRAME_END | SWITCH_UP | SWITCH_UP_TO;
        if marks & !known != 0 || len < MIN_DESCRIPTOR {
            return Err(WireError::Marker(flags));
        }
        let descriptor = r.0.get(..len).ok_or(WireError::Truncated)?;
        r.0 = &r.0[len..];
        Some(Dependency {
            descriptor: Arc::from(descriptor),
            layer: LayerPacket {
                layer: Layer {
                    spatial: layer >> 4,
                    temporal: layer & 15,
                },
                svc: marks & SVC != 0,
                frame_start: marks & FRAME_START != 0,
                frame_end: marks & FRAME_END != 0,
                switch_up: marks & SWITCH_UP != 0,
                switch_up_to: (marks & SWITCH_UP_TO) >> SWITCH_UP_TO_SHIFT,
            },
        })
    } else {
        None
    };
    Ok(MediaPacket {
        channel,
        kind: codec.kind(),
        codec,
        seq,
        rtp_time,
        marker: flags & MARKER != 0,
        arrival,
        wallclock,
        orientation,
        layer,
        audio_level,
        dependency,
        payload: Arc::from(r.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MediaKind;

    fn packet(at: Instant) -> MediaPacket {
        MediaPacket {
            channel: ChannelId(9),
            kind: MediaKind::Video,
            codec: CodecInfo::new(Codec::Vp8, 90_000),
            seq: 70_000,
            rtp_time: 123_456,
            marker: true,
            arrival: at,
            wallclock: at,
            orientation: None,
            layer: Layer::default(),
            audio_level: None,
            dependency: None,
            payload: Arc::from(&[1u8, 2, 3][..]),
        }
    }

    fn round_trip(p: &MediaPacket, at: Instant) -> MediaPacket {
        let mut bytes = Vec::new();
        encode_media(p, &mut bytes);
        let q = decode_media(p.channel, &bytes, at).unwrap();
        let mut again = Vec::new();
        encode_media(&q, &mut again);
        assert_eq!(again, bytes, "canonical encoding");
        q
    }

    #[test]
    fn orientation_and_wallclock_travel_relative_to_arrival() {
        let t0 = Instant::now() + Duration::from_secs(100);
        let mut p = packet(t0);
        p.orientation = Some(3);
        p.wallclock = t0 - Duration::from_millis(40);
        // Another node receives it 5 ms later on its own clock.
        let there = t0 + Duration::from_millis(5);
        let q = round_trip(&p, there);
        assert_eq!(q.orientation, Some(3));
        assert_eq!(q.wallclock, there - Duration::from_millis(40));
        assert_eq!((q.seq, q.rtp_time, q.marker), (70_000, 123_456, true));
        assert_eq!(&q.payload[..], &[1, 2, 3]);
        p.wallclock = t0 + Duration::from_millis(7);
        p.orientation = Some(0);
        let q = round_trip(&p, there);
        assert_eq!(q.wallclock, there + Duration::from_millis(7));
        assert_eq!(q.orientation, Some(0));
    }

    #[test]
    fn a_dependency_descriptor_travels_with_what_was_read_of_it() {
        let t0 = Instant::now();
        let mut p = packet(t0);
        let layer = LayerPacket {
            layer: Layer {
                spatial: 1,
                temporal: 2,
            },
            svc: true,
            frame_start: false,
            frame_end: true,
            switch_up: true,
            switch_up_to: 2,
        };
        p.dependency = Some(Dependency {
            descriptor: Arc::from(&[0x40u8, 7, 9, 1][..]),
            layer,
        });
        let q = round_trip(&p, t0);
        let d = q.dependency.expect("the descriptor travels");
        assert_eq!(&d.descriptor[..], &[0x40, 7, 9, 1]);
        assert_eq!(d.layer, layer);
        assert_eq!(&q.payload[..], &[1, 2, 3], "the payload after it");
        // Every truncation is refused, and so is a descriptor shorter than
        // its mandatory fields.
        let mut bytes = Vec::new();
        encode_media(&p, &mut bytes);
        let head = bytes.len() - 3;
        for n in 0..head {
            assert!(decode_media(ChannelId(9), &bytes[..n], t0).is_err(), "{n}");
        }
        let mut short = bytes.clone();
        short[head - 5] = 2;
        assert!(decode_media(ChannelId(9), &short, t0).is_err());
        let mut marks = bytes.clone();
        marks[head - 6] |= 0x80;
        assert!(decode_media(ChannelId(9), &marks, t0).is_err());
        // One too long for the wire is left out; the packet still goes.
        p.dependency = Some(Dependency {
            descriptor: Arc::from(vec![0u8; 256]),
            layer,
        });
        assert!(round_trip(&p, t0).dependency.is_none());
    }

    #[test]
    fn layer_and_audio_level_travel() {
        let t0 = Instant::now();
        let mut p = packet(t0);
        p.layer = Layer {
            spatial: 2,
            temporal: 1,
        };
        p.audio_level = Some(37);
        let q = round_trip(&p, t0);
        assert_eq!(q.layer, p.layer);
        assert_eq!(q.audio_level, Some(37));
        // Layer 0/0 and no level cost nothing.
        let mut plain = Vec::new();
        encode_media(&packet(t0), &mut plain);
        let mut extras = Vec::new();
        encode_media(&p, &mut extras);
        assert_eq!(extras.len(), plain.len() + 2);
        // A layer byte of zero is not canonical; a level above 127 is not one.
        let n = plain.len() - 3;
        let mut bad = plain.clone();
        bad[n - 1] |= HAS_LAYER;
        bad.insert(n, 0);
        assert!(decode_media(ChannelId(9), &bad, t0).is_err());
        let mut bad = plain.clone();
        bad[n - 1] |= HAS_AUDIO_LEVEL;
        bad.insert(n, 200);
        assert!(decode_media(ChannelId(9), &bad, t0).is_err());
    }

    #[test]
    fn without_extras_the_wallclock_is_the_arrival() {
        let t0 = Instant::now() + Duration::from_secs(100);
        let q = round_trip(&packet(t0), t0);
        assert_eq!(q.wallclock, q.arrival);
        assert_eq!(q.orientation, None);
        // A wallclock a minute and more away is not carried.
        let mut p = packet(t0);
        p.wallclock = t0 + Duration::from_secs(61);
        assert_eq!(round_trip(&p, t0).wallclock, t0);
    }

    #[test]
    fn stray_flags_and_zero_offsets_are_refused() {
        let t0 = Instant::now() + Duration::from_secs(100);
        let mut bytes = Vec::new();
        encode_media(&packet(t0), &mut bytes);
        let flags_at = bytes.len() - 4;
        for bad in [0x04u8 | 1, 0x08] {
            let mut b = bytes.clone();
            b[flags_at] = bad;
            assert_eq!(
                decode_media(ChannelId(9), &b, t0).unwrap_err(),
                WireError::Marker(bad)
            );
        }
        let mut b = bytes[..flags_at].to_vec();
        b.push(HAS_WALLCLOCK);
        b.extend_from_slice(&0i32.to_be_bytes());
        assert_eq!(
            decode_media(ChannelId(9), &b, t0).unwrap_err(),
            WireError::Wallclock(0)
        );
        let mut b = bytes.clone();
        b[0] = 1;
        assert_eq!(
            decode_media(ChannelId(9), &b, t0).unwrap_err(),
            WireError::Version(1)
        );
    }
}
