//! H.264 between frames and RTP (RFC 6184, packetization mode 1), for the
//! transports that carry frames: RTMP's FLV (AVCC: length-prefixed NAL
//! units plus an `AVCDecoderConfigurationRecord`) in, MoQ both ways.
//!
//! - [`AvcConfig::parse`] reads the decoder configuration record (ISO
//!   14496-15 §5.3.3.1): the NAL length size, SPS and PPS.
//! - [`packetize`] turns one access unit into RTP payloads: a NAL unit that
//!   fits is sent alone, a larger one as FU-A fragments, and a keyframe is
//!   preceded by a STAP-A with the SPS and PPS, so that a viewer joining at
//!   any keyframe can decode it.
//! - [`Depacketizer`] does the reverse: RTP payloads of one access unit
//!   (single NAL, STAP-A, FU-A) back to NAL units.
//!
//! Pure functions of their input; every parser returns an error on
//! malformed input, never panics.

/// Why H.264 input was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum H264Error {
    /// The configuration record is shorter than its fields say.
    Truncated,
    /// Not configuration version 1.
    Version(u8),
    /// A NAL length prefix runs past the end of the frame.
    BadLength,
    /// An RTP payload of a type mode 1 does not use, or a fragment out of order.
    BadPayload,
}

impl std::fmt::Display for H264Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            H264Error::Truncated => f.write_str("AVC configuration record truncated"),
            H264Error::Version(v) => write!(f, "AVC configuration version {v}, not 1"),
            H264Error::BadLength => f.write_str("NAL unit length past the end of the frame"),
            H264Error::BadPayload => f.write_str("RTP payload not a mode-1 H.264 packet in order"),
        }
    }
}

impl std::error::Error for H264Error {}

/// What an `AVCDecoderConfigurationRecord` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfig {
    /// Bytes of each NAL unit's length prefix in the frames (1, 2 or 4).
    pub nal_length_size: usize,
    pub sps: Vec<Vec<u8>>,
    pub pps: Vec<Vec<u8>>,
}

/// STAP-A and FU-A NAL unit types (RFC 6184 §5.2).
const STAP_A: u8 = 24;
const FU_A: u8 = 28;
const IDR: u8 = 5;

fn take<'a>(data: &mut &'a [u8], n: usize) -> Result<&'a [u8], H264Error> {
    if data.len() < n {
        return Err(H264Error::Truncated);
    }
    let (head, tail) = data.split_at(n);
    *data = tail;
    Ok(head)
}

fn u16_at(data: &mut &[u8]) -> Result<usize, H264Error> {
    let b = take(data, 2)?;
    Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
}

impl AvcConfig {
    /// Parses an `AVCDecoderConfigurationRecord`.
    pub fn parse(record: &[u8]) -> Result<AvcConfig, H264Error> {
        let mut d = record;
        let head = take(&mut d, 5)?;
        if head[0] != 1 {
            return Err(H264Error::Version(head[0]));
        }
        // lengthSizeMinusOne: 1, 2 or 4 bytes (3 is not a valid size).
        let nal_length_size = usize::from(head[4] & 0x03) + 1;
        if nal_length_size == 3 {
            return Err(H264Error::BadLength);
        }
        let sps_count = usize::from(take(&mut d, 1)?[0] & 0x1f);
        let mut sps = Vec::with_capacity(sps_count);
        for _ in 0..sps_count {
            let n = u16_at(&mut d)?;
            sps.push(take(&mut d, n)?.to_vec());
        }
        let pps_count = usize::from(take(&mut d, 1)?[0]);
        let mut pps = Vec::with_capacity(pps_count);
        for _ in 0..pps_count {
            let n = u16_at(&mut d)?;
            pps.push(take(&mut d, n)?.to_vec());
        }
        Ok(AvcConfig {
            nal_length_size,
            sps,
            pps,
        })
    }

    /// The NAL units of one AVCC frame (length-prefixed).
    pub fn nal_units<'a>(&self, frame: &'a [u8]) -> Result<Vec<&'a [u8]>, H264Error> {
        let mut d = frame;
        let mut out = Vec::new();
        while !d.is_empty() {
            let len = take(&mut d, self.nal_length_size).map_err(|_| H264Error::BadLength)?;
            let n = len
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            let nal = take(&mut d, n).map_err(|_| H264Error::BadLength)?;
            if !nal.is_empty() {
                out.push(nal);
            }
        }
        Ok(out)
    }
}

/// Whether a NAL unit may travel in an RTP packet of its own: not empty,
/// and not of type 0 or 24-31 (unspecified, and what RFC 6184 uses for
/// aggregation and fragmentation; a frame that carries one is broken).
fn sendable(nal: &[u8]) -> bool {
    nal.first()
        .is_some_and(|h| !matches!(h & 0x1f, 0 | 24..=31))
}

/// The RTP payloads of one access unit, in order; the last one ends the
/// access unit (set the RTP marker on it). `max` is the largest payload
/// (at least 16 bytes). A frame with an IDR slice gets the configuration's
/// SPS and PPS first, in one STAP-A (or alone each, when they do not fit
/// together). NAL units that cannot be sent in mode 1 (types 0 and 24-31)
/// are left out.
pub fn packetize(config: &AvcConfig, nals: &[&[u8]], max: usize, out: &mut Vec<Vec<u8>>) {
    let max = max.max(16);
    out.clear();
    let idr = nals
        .iter()
        .any(|n| n.first().is_some_and(|h| h & 0x1f == IDR));
    if idr {
        let params: Vec<&[u8]> = config
            .sps
            .iter()
            .chain(config.pps.iter())
            .map(Vec::as_slice)
            .filter(|p| sendable(p))
            .collect();
        let size = 1 + params.iter().map(|p| 2 + p.len()).sum::<usize>();
        if !params.is_empty() && size <= max && params.iter().all(|p| p.len() <= 0xffff) {
            // The STAP-A header carries the highest NRI of its units.
            let nri = params.iter().map(|p| p[0] & 0x60).max().unwrap_or(0x60);
            let mut stap = Vec::with_capacity(size);
            stap.push(nri | STAP_A);
            for p in &params {
                stap.extend_from_slice(&(p.len() as u16).to_be_bytes());
                stap.extend_from_slice(p);
            }
            out.push(stap);
        } else {
            for p in params {
                single_or_fragments(p, max, out);
            }
        }
    }
    for nal in nals.iter().filter(|n| sendable(n)) {
        single_or_fragments(nal, max, out);
    }
}

fn single_or_fragments(nal: &[u8], max: usize, out: &mut Vec<Vec<u8>>) {
    if nal.len() <= max {
        out.push(nal.to_vec());
        return;
    }
    let header = nal[0];
    let indicator = (header & 0xe0) | FU_A;
    let kind = header & 0x1f;
    let body = &nal[1..];
    let chunk = max - 2;
    let count = body.len().div_ceil(chunk);
    for (i, part) in body.chunks(chunk).enumerate() {
        let mut fu = Vec::with_capacity(2 + part.len());
        fu.push(indicator);
        let start = if i == 0 { 0x80 } else { 0 };
        let end = if i + 1 == count { 0x40 } else { 0 };
        fu.push(start | end | kind);
        fu.extend_from_slice(part);
        out.push(fu);
    }
}

/// Reassembles NAL units from the RTP payloads of a stream, in order.
#[derive(Debug, Default)]
pub struct Depacketizer {
    /// A FU-A NAL unit being reassembled.
    partial: Option<Vec<u8>>,
}

impl Depacketizer {
    /// Adds one payload's NAL units to `out`. A fragment without its start
    /// (a lost packet) drops the unit it belongs to and is an error.
    pub fn push(&mut self, payload: &[u8], out: &mut Vec<Vec<u8>>) -> Result<(), H264Error> {
        let Some(&header) = payload.first() else {
            return Err(H264Error::BadPayload);
        };
        match header & 0x1f {
            1..=23 => {
                self.partial = None;
                out.push(payload.to_vec());
                Ok(())
            }
            STAP_A => {
                self.partial = None;
                let mut d = &payload[1..];
                while !d.is_empty() {
                    let n = u16_at(&mut d).map_err(|_| H264Error::BadPayload)?;
                    let nal = take(&mut d, n).map_err(|_| H264Error::BadPayload)?;
                    if !nal.is_empty() {
                        out.push(nal.to_vec());
                    }
                }
                Ok(())
            }
            FU_A => {
                let fu = *payload.get(1).ok_or(H264Error::BadPayload)?;
                let (start, end) = (fu & 0x80 != 0, fu & 0x40 != 0);
                if start {
                    let mut nal = Vec::with_capacity(payload.len() * 4);
                    nal.push((header & 0xe0) | (fu & 0x1f));
                    self.partial = Some(nal);
                }
                let Some(nal) = self.partial.as_mut() else {
                    return Err(H264Error::BadPayload);
                };
                nal.extend_from_slice(&payload[2..]);
                if end {
                    if let Some(nal) = self.partial.take() {
                        out.push(nal);
                    }
                }
                Ok(())
            }
            _ => {
                self.partial = None;
                Err(H264Error::BadPayload)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{is_keyframe_start, Codec};

    fn record(sps: &[u8], pps: &[u8]) -> Vec<u8> {
        let mut r = vec![1, 0x42, 0xc0, 0x1f, 0xff, 0xe1];
        r.extend_from_slice(&(sps.len() as u16).to_be_bytes());
        r.extend_from_slice(sps);
        r.push(1);
        r.extend_from_slice(&(pps.len() as u16).to_be_bytes());
        r.extend_from_slice(pps);
        r
    }

    fn avcc(nals: &[Vec<u8>]) -> Vec<u8> {
        let mut f = Vec::new();
        for n in nals {
            f.extend_from_slice(&(n.len() as u32).to_be_bytes());
            f.extend_from_slice(n);
        }
        f
    }

    fn nal(kind: u8, len: usize, seed: u8) -> Vec<u8> {
        let mut n = vec![0x60 | kind];
        n.extend((0..len - 1).map(|i| (i as u8).wrapping_mul(31) ^ seed));
        n
    }

    #[test]
    fn the_configuration_record_is_read_and_garbage_refused() {
        let sps = nal(7, 12, 1);
        let pps = nal(8, 4, 2);
        let c = AvcConfig::parse(&record(&sps, &pps)).unwrap();
        assert_eq!(c.nal_length_size, 4);
        assert_eq!((c.sps, c.pps), (vec![sps], vec![pps]));
        assert_eq!(
            AvcConfig::parse(&[2, 0, 0, 0, 0xff]),
            Err(H264Error::Version(2))
        );
        let full = record(&nal(7, 12, 1), &nal(8, 4, 2));
        for len in 0..full.len() {
            assert!(AvcConfig::parse(&full[..len]).is_err(), "prefix of {len}");
        }
    }

    #[test]
    fn a_keyframe_round_trips_bit_exact_with_its_parameter_sets_first() {
        let (sps, pps) = (nal(7, 20, 1), nal(8, 5, 2));
        let config = AvcConfig::parse(&record(&sps, &pps)).unwrap();
        let units = vec![nal(6, 30, 3), nal(5, 5000, 4), nal(5, 900, 5)];
        let frame = avcc(&units);
        let nals = config.nal_units(&frame).unwrap();
        let mut payloads = Vec::new();
        packetize(&config, &nals, 1200, &mut payloads);
        assert!(payloads.iter().all(|p| p.len() <= 1200));
        assert_eq!(payloads[0][0] & 0x1f, STAP_A, "SPS and PPS first");
        assert!(
            is_keyframe_start(Codec::H264, &payloads[0]),
            "a viewer may start at the first packet"
        );
        let mut d = Depacketizer::default();
        let mut got = Vec::new();
        for p in &payloads {
            d.push(p, &mut got).unwrap();
        }
        let mut want = vec![sps, pps];
        want.extend(units);
        assert_eq!(got, want);
    }

    #[test]
    fn a_delta_frame_has_no_parameter_sets_and_a_lost_fragment_is_an_error() {
        let config = AvcConfig::parse(&record(&nal(7, 8, 1), &nal(8, 4, 2))).unwrap();
        let units = [nal(1, 3000, 9)];
        let nals: Vec<&[u8]> = units.iter().map(Vec::as_slice).collect();
        let mut payloads = Vec::new();
        packetize(&config, &nals, 1000, &mut payloads);
        assert_eq!(
            payloads.len(),
            4,
            "2999 bytes of body in 998-byte fragments"
        );
        assert!(payloads.iter().all(|p| p[0] & 0x1f == FU_A));
        assert!(!is_keyframe_start(Codec::H264, &payloads[0]));
        let mut d = Depacketizer::default();
        let mut got = Vec::new();
        // The start is lost: the rest of that unit is refused, then the
        // next unit decodes.
        assert_eq!(d.push(&payloads[1], &mut got), Err(H264Error::BadPayload));
        let mut again = Vec::new();
        packetize(&config, &nals, 1000, &mut again);
        for p in &again {
            d.push(p, &mut got).unwrap();
        }
        assert_eq!(got, units.to_vec());
    }

    #[test]
    fn frames_with_bad_lengths_are_refused() {
        let config = AvcConfig::parse(&record(&nal(7, 8, 1), &nal(8, 4, 2))).unwrap();
        assert_eq!(
            config.nal_units(&[0, 0, 0, 9, 1, 2]),
            Err(H264Error::BadLength)
        );
        assert_eq!(config.nal_units(&[0, 0]), Err(H264Error::BadLength));
        assert_eq!(config.nal_units(&[]), Ok(Vec::new()));
    }
}
