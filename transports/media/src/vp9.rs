//! VP9 between frames and RTP (RFC 9628), for the transports that carry
//! frames (Enhanced RTMP in; MoQ).
//!
//! [`packetize`] sends a frame in non-flexible mode without layers: a
//! one-byte descriptor `I P L F B E V Z` and a 15-bit picture id, B on the
//! first packet, E on the last, P = 0 on keyframes. [`depacketize`] reads
//! any descriptor back to the frame bytes of a packet; [`parse`] reads the
//! descriptor's layer fields, for forwarding SVC.

/// Why a VP9 payload was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp9Error;

impl std::fmt::Display for Vp9Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VP9 payload descriptor truncated")
    }
}

impl std::error::Error for Vp9Error {}

const DESCRIPTOR: usize = 3;

/// The RTP payloads of one frame; the last ends it (set the marker).
/// `picture_id` (15 bits) counts frames.
pub fn packetize(
    frame: &[u8],
    keyframe: bool,
    picture_id: u16,
    max: usize,
    out: &mut Vec<Vec<u8>>,
) {
    out.clear();
    let room = max.max(16) - DESCRIPTOR;
    let count = frame.len().div_ceil(room).max(1);
    let pid = (picture_id & 0x7fff) | 0x8000;
    for i in 0..count {
        let part = &frame[(i * room).min(frame.len())..((i + 1) * room).min(frame.len())];
        let mut b0 = 0x80; // I: picture id present
        if !keyframe {
            b0 |= 0x40; // P: inter-picture predicted
        }
        if i == 0 {
            b0 |= 0x08; // B
        }
        if i + 1 == count {
            b0 |= 0x04; // E
        }
        let mut p = Vec::with_capacity(DESCRIPTOR + part.len());
        p.push(b0);
        p.extend_from_slice(&pid.to_be_bytes());
        p.extend_from_slice(part);
        out.push(p);
    }
}

/// The fields of a VP9 payload descriptor (RFC 9628 section 4.2) that
/// forwarding needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp9Descriptor {
    /// Picture ID (I bit), 7 or 15 bits.
    pub picture_id: Option<u16>,
    /// P: the frame refers to an earlier picture (not a keyframe).
    pub predicted: bool,
    /// L: layer indices present.
    pub layered: bool,
    /// F: flexible mode.
    pub flexible: bool,
    /// B: the packet begins a frame (of its spatial layer).
    pub begin: bool,
    /// E: the packet ends a frame (of its spatial layer).
    pub end: bool,
    /// Temporal layer index (0 without L).
    pub tid: u8,
    /// U: a switching-up point: higher temporal layers after this frame
    /// refer to nothing before it.
    pub switch_up: bool,
    /// Spatial layer index (0 without L).
    pub sid: u8,
    /// D: the frame refers to the spatial layer below (inter-layer
    /// prediction).
    pub inter_layer: bool,
    /// TL0PICIDX (non-flexible mode with L).
    pub tl0picidx: Option<u8>,
    /// V: a scalability structure follows.
    pub has_ss: bool,
    /// The number of spatial layers the scalability structure announces
    /// (N_S + 1), when there is one.
    pub ss_spatial_layers: Option<u8>,
    /// Length of the descriptor; the frame bytes start at this offset.
    pub header_len: usize,
}

impl Vp9Descriptor {
    /// The packet begins a keyframe: the base spatial layer's frame of a
    /// picture that refers to no earlier picture.
    pub fn keyframe_start(&self) -> bool {
        self.begin && !self.predicted && self.sid == 0
    }
}

/// Reads the payload descriptor at the start of a VP9 RTP payload; `None`
/// when the payload ends inside it. Never panics.
pub fn parse(payload: &[u8]) -> Option<Vp9Descriptor> {
    let mut d = payload;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (a, b) = (d.get(..n)?, d.get(n..)?);
        d = b;
        Some(a)
    };
    let b0 = take(1)?[0];
    let mut v = Vp9Descriptor {
        predicted: b0 & 0x40 != 0,
        layered: b0 & 0x20 != 0,
        flexible: b0 & 0x10 != 0,
        begin: b0 & 0x08 != 0,
        end: b0 & 0x04 != 0,
        has_ss: b0 & 0x02 != 0,
        ..Vp9Descriptor::default()
    };
    if b0 & 0x80 != 0 {
        let m = take(1)?[0];
        v.picture_id = Some(match m & 0x80 != 0 {
            true => u16::from_be_bytes([m & 0x7f, take(1)?[0]]),
            false => u16::from(m),
        });
    }
    if v.layered {
        let l = take(1)?[0];
        v.tid = l >> 5;
        v.switch_up = l & 0x10 != 0;
        v.sid = (l >> 1) & 0x07;
        v.inter_layer = l & 0x01 != 0;
        if !v.flexible {
            v.tl0picidx = Some(take(1)?[0]);
        }
    }
    if v.flexible && v.predicted {
        for _ in 0..3 {
            if take(1)?[0] & 0x01 == 0 {
                break;
            }
        }
    }
    if v.has_ss {
        let ss = take(1)?[0];
        let layers = usize::from(ss >> 5) + 1;
        v.ss_spatial_layers = Some(layers as u8);
        if ss & 0x10 != 0 {
            take(layers * 4)?;
        }
        if ss & 0x08 != 0 {
            let n = take(1)?[0];
            for _ in 0..n {
                let g = take(1)?[0];
                take(usize::from((g >> 2) & 0x03))?;
            }
        }
    }
    v.header_len = payload.len() - d.len();
    Some(v)
}

/// The frame bytes of one payload, after its descriptor, and whether it
/// begins (B) and ends (E) a frame.
pub fn depacketize(payload: &[u8]) -> Result<(&[u8], bool, bool), Vp9Error> {
    let d = parse(payload).ok_or(Vp9Error)?;
    Ok((&payload[d.header_len..], d.begin, d.end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let frame: Vec<u8> = (0..3000u32).map(|i| (i * 11) as u8).collect();
        for (key, max) in [(true, 1100), (false, 100), (true, 5000)] {
            let mut payloads = Vec::new();
            packetize(&frame, key, 0x1234, max, &mut payloads);
            assert!(payloads.iter().all(|p| p.len() <= max));
            assert_eq!(
                crate::is_keyframe_start(crate::Codec::Vp9, &payloads[0]),
                key
            );
            let mut got = Vec::new();
            for (i, p) in payloads.iter().enumerate() {
                let (d, b, e) = depacketize(p).unwrap();
                assert_eq!(b, i == 0);
                assert_eq!(e, i + 1 == payloads.len());
                got.extend_from_slice(d);
            }
            assert_eq!(got, frame);
        }
        assert_eq!(depacketize(&[0x80]), Err(Vp9Error));
        assert_eq!(depacketize(&[]), Err(Vp9Error));
    }
}
