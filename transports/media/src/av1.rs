//! AV1 between temporal units and RTP (the AV1 RTP payload format, v1.0),
//! for the transports that carry frames (Enhanced RTMP in; MoQ).
//!
//! - [`obus`] splits a temporal unit in the low-overhead bitstream format
//!   (OBUs with size fields, as E-RTMP and MP4 carry them) into OBUs.
//! - [`packetize`] turns a temporal unit into RTP payloads: temporal
//!   delimiters, tile lists and padding are left out, size fields are
//!   dropped, every OBU element is length-prefixed (W = 0), large ones are
//!   fragmented (Y/Z), and a keyframe starts with the sequence header (from
//!   the `av1C` configuration when the unit has none) and N = 1.
//! - [`Depacketizer`] does the reverse: payloads of one temporal unit back
//!   to OBUs (without size fields).
//!
//! Pure functions; malformed input gives an error, never a panic.

/// Why AV1 input was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Av1Error {
    /// An OBU or a LEB128 value runs past the end.
    Truncated,
    /// An RTP payload that continues a fragment it never started, or has
    /// no elements.
    BadPayload,
}

impl std::fmt::Display for Av1Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Av1Error::Truncated => f.write_str("AV1 OBU truncated"),
            Av1Error::BadPayload => f.write_str("AV1 RTP payload malformed or out of order"),
        }
    }
}

impl std::error::Error for Av1Error {}

pub const OBU_SEQUENCE_HEADER: u8 = 1;
pub const OBU_TEMPORAL_DELIMITER: u8 = 2;
pub const OBU_TILE_LIST: u8 = 8;
pub const OBU_PADDING: u8 = 15;

/// An OBU's type (bits 6-3 of its header).
pub fn obu_type(obu: &[u8]) -> u8 {
    obu.first().map_or(0, |h| (h >> 3) & 0x0f)
}

fn leb128(d: &mut &[u8]) -> Result<usize, Av1Error> {
    let mut v: u64 = 0;
    for i in 0..8 {
        let (&b, rest) = d.split_first().ok_or(Av1Error::Truncated)?;
        *d = rest;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return usize::try_from(v).map_err(|_| Av1Error::Truncated);
        }
    }
    Err(Av1Error::Truncated)
}

fn write_leb128(mut v: usize, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// The OBUs of a temporal unit, each without its size field (header,
/// optional extension byte, payload). An OBU without a size field runs to
/// the end of the unit.
pub fn obus(mut tu: &[u8]) -> Result<Vec<Vec<u8>>, Av1Error> {
    let mut out = Vec::new();
    while let Some(&header) = tu.first() {
        let ext = header & 0x04 != 0;
        let has_size = header & 0x02 != 0;
        let head_len = if ext { 2 } else { 1 };
        if tu.len() < head_len {
            return Err(Av1Error::Truncated);
        }
        let mut obu = Vec::new();
        obu.push(header & !0x02);
        if ext {
            obu.push(tu[1]);
        }
        let mut rest = &tu[head_len..];
        let size = if has_size {
            leb128(&mut rest)?
        } else {
            rest.len()
        };
        let body = rest.get(..size).ok_or(Av1Error::Truncated)?;
        obu.extend_from_slice(body);
        out.push(obu);
        tu = &rest[size..];
    }
    Ok(out)
}

/// The sequence header OBU of an `AV1CodecConfigurationRecord` (`av1C`):
/// its configOBUs after the 4 fixed bytes.
pub fn config_sequence_header(av1c: &[u8]) -> Option<Vec<u8>> {
    let config = av1c.get(4..)?;
    obus(config)
        .ok()?
        .into_iter()
        .find(|o| obu_type(o) == OBU_SEQUENCE_HEADER)
}

/// The RTP payloads of one temporal unit (OBUs as [`obus`] gives them), in
/// order; the last one ends it (set the marker). `keyframe`: the unit
/// starts a coded video sequence; `sequence_header` is put first when the
/// unit has none. `max` is the largest payload (at least 16).
pub fn packetize(
    obus: &[Vec<u8>],
    keyframe: bool,
    sequence_header: Option<&[u8]>,
    max: usize,
    out: &mut Vec<Vec<u8>>,
) {
    out.clear();
    let max = max.max(16);
    let mut list: Vec<&[u8]> = obus
        .iter()
        .map(Vec::as_slice)
        .filter(|o| {
            !o.is_empty()
                && !matches!(
                    obu_type(o),
                    OBU_TEMPORAL_DELIMITER | OBU_TILE_LIST | OBU_PADDING
                )
        })
        .collect();
    if keyframe && !list.iter().any(|o| obu_type(o) == OBU_SEQUENCE_HEADER) {
        if let Some(sh) = sequence_header {
            list.insert(0, sh);
        }
    }
    let mut packet = vec![if keyframe { 0x08 } else { 0 }];
    for obu in list {
        let mut rest = obu;
        let mut continued = false;
        while !rest.is_empty() {
            // Room left after a length prefix of up to 3 bytes.
            let room = max.saturating_sub(packet.len() + 3);
            if room == 0 {
                out.push(std::mem::replace(&mut packet, vec![0]));
                continue;
            }
            let n = rest.len().min(room);
            write_leb128(n, &mut packet);
            packet.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if continued && packet.len() == 1 + leb_len(n) + n {
                // This element continues the previous packet's last one.
                packet[0] |= 0x80;
            }
            if !rest.is_empty() {
                // Y: the last element continues in the next packet.
                packet[0] |= 0x40;
                out.push(std::mem::replace(&mut packet, vec![0]));
                continued = true;
            }
        }
    }
    if packet.len() > 1 {
        out.push(packet);
    }
}

fn leb_len(n: usize) -> usize {
    let mut v = Vec::new();
    write_leb128(n, &mut v);
    v.len()
}

/// Reassembles OBUs from the RTP payloads of a stream, in order.
#[derive(Debug, Default)]
pub struct Depacketizer {
    partial: Option<Vec<u8>>,
}

impl Depacketizer {
    /// One payload; completed OBUs are appended to `out`.
    pub fn push(&mut self, payload: &[u8], out: &mut Vec<Vec<u8>>) -> Result<(), Av1Error> {
        let (&agg, mut d) = payload.split_first().ok_or(Av1Error::BadPayload)?;
        let z = agg & 0x80 != 0;
        let y = agg & 0x40 != 0;
        let w = usize::from((agg >> 4) & 0x03);
        if z != self.partial.is_some() {
            self.partial = None;
            return Err(Av1Error::BadPayload);
        }
        let mut elements = Vec::new();
        let mut i = 0;
        while !d.is_empty() {
            i += 1;
            let last = w != 0 && i == w;
            let len = if last { d.len() } else { leb128(&mut d)? };
            let e = d.get(..len).ok_or(Av1Error::Truncated)?;
            elements.push(e);
            d = &d[len..];
            if last {
                break;
            }
        }
        if elements.is_empty() {
            return Err(Av1Error::BadPayload);
        }
        let count = elements.len();
        for (k, e) in elements.into_iter().enumerate() {
            let mut obu = if k == 0 {
                self.partial.take().unwrap_or_default()
            } else {
                Vec::new()
            };
            obu.extend_from_slice(e);
            if k + 1 == count && y {
                self.partial = Some(obu);
            } else {
                out.push(obu);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obu(kind: u8, body: &[u8], sized: bool) -> Vec<u8> {
        let mut o = vec![(kind << 3) | if sized { 0x02 } else { 0 }];
        if sized {
            write_leb128(body.len(), &mut o);
        }
        o.extend_from_slice(body);
        o
    }

    #[test]
    fn temporal_units_round_trip_through_rtp() {
        let seq = obu(OBU_SEQUENCE_HEADER, &[0, 0, 0, 0x6a, 0xef], true);
        let frame: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        for max in [16usize, 100, 1100, 10_000] {
            let mut tu = obu(OBU_TEMPORAL_DELIMITER, &[], true);
            tu.extend_from_slice(&obu(6, &frame, true));
            tu.extend_from_slice(&obu(6, &[1, 2, 3], true));
            let list = obus(&tu).unwrap();
            assert_eq!(list.len(), 3);
            let mut payloads = Vec::new();
            packetize(
                &list,
                true,
                Some(&obus(&seq).unwrap()[0]),
                max,
                &mut payloads,
            );
            assert!(payloads.iter().all(|p| p.len() <= max.max(16)));
            assert!(crate::is_keyframe_start(crate::Codec::Av1, &payloads[0]));
            let mut d = Depacketizer::default();
            let mut got = Vec::new();
            for p in &payloads {
                d.push(p, &mut got).unwrap();
            }
            let want: Vec<Vec<u8>> = vec![
                obus(&seq).unwrap().remove(0),
                list[1].clone(),
                list[2].clone(),
            ];
            assert_eq!(got, want, "max {max}");
            // A delta unit: no N, no sequence header.
            packetize(&list[2..], false, Some(&seq), max, &mut payloads);
            assert_eq!(payloads[0][0] & 0x08, 0);
            let mut got = Vec::new();
            for p in &payloads {
                d.push(p, &mut got).unwrap();
            }
            assert_eq!(got, vec![list[2].clone()]);
        }
    }

    #[test]
    fn configuration_and_bad_input() {
        let seq = obu(OBU_SEQUENCE_HEADER, &[9, 9], true);
        let mut av1c = vec![0x81, 0x04, 0x0c, 0x00];
        av1c.extend_from_slice(&seq);
        assert_eq!(config_sequence_header(&av1c), Some(vec![0x08, 9, 9]));
        assert_eq!(config_sequence_header(&[0x81]), None);
        assert_eq!(obus(&[0x32, 0x05, 1]), Err(Av1Error::Truncated));
        assert_eq!(obus(&[0x32, 0xff, 0xff]), Err(Av1Error::Truncated));
        let mut d = Depacketizer::default();
        assert_eq!(
            d.push(&[0x80, 1, 0], &mut Vec::new()),
            Err(Av1Error::BadPayload)
        );
        assert_eq!(d.push(&[], &mut Vec::new()), Err(Av1Error::BadPayload));
        assert_eq!(
            d.push(&[0x00, 5, 1], &mut Vec::new()),
            Err(Av1Error::Truncated)
        );
    }
}
