//! Probe payloads: every RTP payload the generator sends says who sent it,
//! its sequence number and when, and carries a pattern the receiver checks.
//!
//! Layout (big endian): `[descriptor][magic u16][publisher u32][kind u8][seq u64][sent_ns u64][pattern...]`.
//! The first byte is a VP8 payload descriptor (start of partition) for video
//! and an Opus TOC byte for audio, so a real depacketizer would accept it.

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
}
