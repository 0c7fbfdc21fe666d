//! Probe payloads: every RTP payload the generator sends says who sent it,
//! its sequence number and when, and carries a pattern the receiver checks.
//!
//! Layout (big endian): `[descriptor][magic u16][publisher u32][kind u8][seq u64][sent_ns u64][pattern...]`.
//! The first byte is a VP8 payload descriptor (start of partition) for video
//! and an Opus TOC byte for audio, so a real depacketizer would accept it.
//!
//! Simulcast video (`load --simulcast`) needs more VP8 than one byte: a
//! server forwards one layer per viewer and switches only where a layer's
//! keyframe starts, and it rewrites picture ids. Those packets are
//! [`LayeredProbe`]s: `[VP8 descriptor: X|S, I, M|picture id (15 bits)]
//! [VP8 byte][magic u16][publisher u32][layer u8][seq u64][sent_ns u64][pattern...]`.
//! The VP8 byte is the first byte of the VP8 payload header on a frame's
//! first packet (bit 0 clear on keyframes) and 0 on the others. The
//! receiver checks everything except the picture id, which the server may
//! rewrite. [`decode_any`] tells the two layouts apart by the second byte
//! (the magic's `0xcc` in a flat probe, the descriptor's `0x80` in a
//! layered one).

use corecast_media::MediaKind;

const MAGIC: u16 = 0xcc0b;
pub const HEADER: usize = 1 + 2 + 4 + 1 + 8 + 8;

/// What a probe payload says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub publisher: u32,
    pub kind: MediaKind,
    pub seq: u64,
    pub sent_ns: u64,
}

/// Why a received payload is not what was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corrupt {
    TooShort,
    Magic,
    /// The kind byte is neither audio (0) nor video (1).
    Kind,
    Pattern,
    /// A layered probe's VP8 descriptor or payload header byte is not
    /// what the generator writes.
    Descriptor,
}

/// Magic of a layered probe.
const LAYERED_MAGIC: u16 = 0xcc1a;
/// Length of a layered probe's header.
pub const LAYERED_HEADER: usize = 5 + 2 + 4 + 1 + 8 + 8;
/// Layers a layered probe may name (spatial layers a server tells apart).
pub const MAX_LAYERS: u8 = 4;
/// The VP8 payload header's first byte on a keyframe's and on a delta
/// frame's first packet (show_frame set; bit 0 clear on keyframes).
const VP8_KEY: u8 = 0x10;
const VP8_DELTA: u8 = 0x11;

/// A probe of one simulcast layer, with the VP8 framing a server reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayeredProbe {
    /// `kind` is always video; `seq` is the layer's own sequence number.
    pub probe: Probe,
    /// Spatial layer, 0 = lowest.
    pub layer: u8,
    /// The first packet of a frame (descriptor S bit).
    pub frame_start: bool,
    /// The frame is a keyframe (read back only on a frame's first packet).
    pub keyframe: bool,
    /// The VP8 picture id (15 bits), as sent or as the server rewrote it.
    pub picture_id: u16,
}

impl LayeredProbe {
    /// Where a server may switch a viewer to this layer: a keyframe's
    /// first packet.
    pub fn keyframe_start(&self) -> bool {
        self.frame_start && self.keyframe
    }
}

/// A received probe, flat or layered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    pub probe: Probe,
    /// The layer's framing, for a layered probe.
    pub layered: Option<LayeredProbe>,
}

fn pattern_byte(seq: u64, i: usize) -> u8 {
    (seq as u8).wrapping_mul(31).wrapping_add(i as u8)
}

/// Writes a probe of `len` bytes (at least [`HEADER`]) into `buf`.
pub fn encode(probe: &Probe, len: usize, buf: &mut Vec<u8>) {
    buf.clear();
    buf.push(match probe.kind {
        MediaKind::Video => 0x10,
        MediaKind::Audio => 0xfc,
    });
    buf.extend_from_slice(&MAGIC.to_be_bytes());
    buf.extend_from_slice(&probe.publisher.to_be_bytes());
    buf.push(u8::from(probe.kind == MediaKind::Video));
    buf.extend_from_slice(&probe.seq.to_be_bytes());
    buf.extend_from_slice(&probe.sent_ns.to_be_bytes());
    let len = len.max(HEADER);
    buf.extend((HEADER..len).map(|i| pattern_byte(probe.seq, i)));
}

/// Reads and verifies a probe.
pub fn decode(payload: &[u8]) -> Result<Probe, Corrupt> {
    if payload.len() < HEADER {
        return Err(Corrupt::TooShort);
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&payload[at..at + 8]);
        u64::from_be_bytes(b)
    };
    if u16::from_be_bytes([payload[1], payload[2]]) != MAGIC {
        return Err(Corrupt::Magic);
    }
    let publisher = u32::from_be_bytes([payload[3], payload[4], payload[5], payload[6]]);
    let kind = match payload[7] {
        0 => MediaKind::Audio,
        1 => MediaKind::Video,
        _ => return Err(Corrupt::Kind),
    };
    let seq = u64_at(8);
    let sent_ns = u64_at(16);
    if payload[HEADER..]
        .iter()
        .enumerate()
        .any(|(i, b)| *b != pattern_byte(seq, HEADER + i))
    {
        return Err(Corrupt::Pattern);
    }
    Ok(Probe {
        publisher,
        kind,
        seq,
        sent_ns,
    })
}

fn layered_pattern_byte(layer: u8, seq: u64, i: usize) -> u8 {
    pattern_byte(seq.wrapping_add(u64::from(layer) * 101), i)
}

/// Writes a layered probe of `len` bytes (at least [`LAYERED_HEADER`]).
pub fn encode_layered(p: &LayeredProbe, len: usize, buf: &mut Vec<u8>) {
    buf.clear();
    buf.push(0x80 | if p.frame_start { 0x10 } else { 0 });
    buf.push(0x80);
    let pid = p.picture_id & 0x7fff;
    buf.push(0x80 | (pid >> 8) as u8);
    buf.push(pid as u8);
    buf.push(match (p.frame_start, p.keyframe) {
        (true, true) => VP8_KEY,
        (true, false) => VP8_DELTA,
        (false, _) => 0,
    });
    buf.extend_from_slice(&LAYERED_MAGIC.to_be_bytes());
    buf.extend_from_slice(&p.probe.publisher.to_be_bytes());
    buf.push(p.layer);
    buf.extend_from_slice(&p.probe.seq.to_be_bytes());
    buf.extend_from_slice(&p.probe.sent_ns.to_be_bytes());
    let len = len.max(LAYERED_HEADER);
    buf.extend((LAYERED_HEADER..len).map(|i| layered_pattern_byte(p.layer, p.probe.seq, i)));
}

/// Reads and verifies a layered probe (the picture id is taken as it is).
pub fn decode_layered(payload: &[u8]) -> Result<LayeredProbe, Corrupt> {
    if payload.len() < LAYERED_HEADER {
        return Err(Corrupt::TooShort);
    }
    let frame_start = match payload[0] {
        0x90 => true,
        0x80 => false,
        _ => return Err(Corrupt::Descriptor),
    };
    if payload[1] != 0x80 || payload[2] & 0x80 == 0 {
        return Err(Corrupt::Descriptor);
    }
    let keyframe = match (frame_start, payload[4]) {
        (true, VP8_KEY) => true,
        (true, VP8_DELTA) | (false, 0) => false,
        _ => return Err(Corrupt::Descriptor),
    };
    if u16::from_be_bytes([payload[5], payload[6]]) != LAYERED_MAGIC {
        return Err(Corrupt::Magic);
    }
    let publisher = u32::from_be_bytes([payload[7], payload[8], payload[9], payload[10]]);
    let layer = payload[11];
    if layer >= MAX_LAYERS {
        return Err(Corrupt::Kind);
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&payload[at..at + 8]);
        u64::from_be_bytes(b)
    };
    let seq = u64_at(12);
    let sent_ns = u64_at(20);
    if payload[LAYERED_HEADER..]
        .iter()
        .enumerate()
        .any(|(i, b)| *b != layered_pattern_byte(layer, seq, LAYERED_HEADER + i))
    {
        return Err(Corrupt::Pattern);
    }
    Ok(LayeredProbe {
        probe: Probe {
            publisher,
            kind: MediaKind::Video,
            seq,
            sent_ns,
        },
        layer,
        frame_start,
        keyframe,
        picture_id: (u16::from(payload[2] & 0x7f) << 8) | u16::from(payload[3]),
    })
}

/// Reads a flat or a layered probe (see the module docs).
pub fn decode_any(payload: &[u8]) -> Result<Decoded, Corrupt> {
    if payload.get(1) == Some(&0x80) {
        let l = decode_layered(payload)?;
        Ok(Decoded {
            probe: l.probe,
            layered: Some(l),
        })
    } else {
        Ok(Decoded {
            probe: decode(payload)?,
            layered: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let p = Probe {
            publisher: 7,
            kind: MediaKind::Video,
            seq: 123_456,
            sent_ns: 99,
        };
        let mut buf = Vec::new();
        encode(&p, 1200, &mut buf);
        assert_eq!(buf.len(), 1200);
        assert_eq!(decode(&buf), Ok(p));
        buf[600] ^= 1;
        assert_eq!(decode(&buf), Err(Corrupt::Pattern));
        assert_eq!(decode(&buf[..10]), Err(Corrupt::TooShort));
        buf[1] = 0;
        assert_eq!(decode(&buf), Err(Corrupt::Magic));
    }

    #[test]
    fn a_kind_byte_other_than_audio_or_video_is_corrupt() {
        let p = Probe {
            publisher: 1,
            kind: MediaKind::Audio,
            seq: 5,
            sent_ns: 6,
        };
        let mut buf = Vec::new();
        encode(&p, 80, &mut buf);
        assert_eq!(decode(&buf), Ok(p));
        buf[7] = 2;
        assert_eq!(decode(&buf), Err(Corrupt::Kind));
    }

    fn layered(layer: u8, seq: u64, frame_start: bool, keyframe: bool) -> LayeredProbe {
        LayeredProbe {
            probe: Probe {
                publisher: 3,
                kind: MediaKind::Video,
                seq,
                sent_ns: 42,
            },
            layer,
            frame_start,
            keyframe: frame_start && keyframe,
            picture_id: 0x1234,
        }
    }

    #[test]
    fn layered_probes_are_vp8_a_server_can_switch_on() {
        let mut buf = Vec::new();
        let key = layered(2, 77, true, true);
        encode_layered(&key, 1150, &mut buf);
        assert_eq!(buf.len(), 1150);
        let d = corecast_media::vp8::parse(&buf).expect("a VP8 descriptor");
        assert!(d.keyframe && d.start);
        assert_eq!(d.picture_id, Some(0x1234));
        assert!(d.long_picture_id);
        assert_eq!(decode_layered(&buf), Ok(key));
        assert!(key.keyframe_start());
        // A delta frame's first packet and a keyframe's second are no
        // keyframe start for the server.
        let delta = layered(2, 78, true, false);
        encode_layered(&delta, 600, &mut buf);
        assert!(!corecast_media::vp8::parse(&buf).unwrap().keyframe);
        assert_eq!(decode_any(&buf).unwrap().layered, Some(delta));
        let second = layered(2, 79, false, true);
        encode_layered(&second, 600, &mut buf);
        assert!(!corecast_media::vp8::parse(&buf).unwrap().keyframe);
        assert!(!decode_layered(&buf).unwrap().keyframe_start());
    }

    #[test]
    fn a_rewritten_picture_id_is_not_corruption_but_the_rest_is() {
        let mut buf = Vec::new();
        encode_layered(&layered(1, 5, true, true), 300, &mut buf);
        // The server continues picture ids across switches.
        buf[2] = 0x80 | 0x05;
        buf[3] = 0x01;
        let got = decode_layered(&buf).unwrap();
        assert_eq!(got.picture_id, 0x0501);
        assert_eq!((got.layer, got.probe.seq), (1, 5));
        let mut bad = buf.clone();
        bad[200] ^= 1;
        assert_eq!(decode_layered(&bad), Err(Corrupt::Pattern));
        let mut bad = buf.clone();
        bad[11] = 9;
        assert_eq!(decode_layered(&bad), Err(Corrupt::Kind));
        let mut bad = buf.clone();
        bad[4] = 0x33;
        assert_eq!(decode_layered(&bad), Err(Corrupt::Descriptor));
        let mut bad = buf.clone();
        bad[5] = 0;
        assert_eq!(decode_layered(&bad), Err(Corrupt::Magic));
        assert_eq!(decode_layered(&buf[..20]), Err(Corrupt::TooShort));
        // Another layer's pattern does not pass for this one.
        let mut other = buf.clone();
        other[11] = 0;
        assert_eq!(decode_layered(&other), Err(Corrupt::Pattern));
    }

    #[test]
    fn decode_any_tells_the_layouts_apart() {
        let mut buf = Vec::new();
        for kind in [MediaKind::Audio, MediaKind::Video] {
            let p = Probe {
                publisher: 1,
                kind,
                seq: 9,
                sent_ns: 10,
            };
            encode(&p, 200, &mut buf);
            assert_eq!(
                decode_any(&buf),
                Ok(Decoded {
                    probe: p,
                    layered: None
                })
            );
        }
        encode_layered(&layered(0, 9, false, false), 200, &mut buf);
        assert_eq!(decode_any(&buf).unwrap().probe.seq, 9);
    }
}
