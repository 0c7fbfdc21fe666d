//! G.711 (ITU-T, 1972/1988): the 8-bit companding of 8 kHz telephone audio,
//! μ-law ([`Law::Pcmu`], RTP payload type 0) and A-law ([`Law::Pcma`], payload
//! type 8), written from the segment tables of the Recommendation.
//!
//! Samples are 16-bit linear PCM. G.711 itself works on 14-bit (μ-law) and
//! 13-bit (A-law) magnitudes; here every decision and reconstruction level is
//! that of the Recommendation scaled to 16 bits (×4 for μ-law, ×8 for A-law),
//! so the low bits of the input only choose the side of a decision level.
//!
//! # μ-law
//!
//! The magnitude `m` (clipped at 32 635) plus a bias of 132 falls in one of
//! eight segments `[128·2^e, 256·2^e)`, `e` = 0..=7, each cut into 16 steps
//! of `8·2^e`. The code is `sign | e << 4 | step`, all bits inverted (the sign
//! bit set means positive). Each code decodes to the middle of its step minus
//! the bias, so `0` has two codes: `0xFF` (+0) and `0x7F` (−0). The extremes
//! are ±32 124.
//!
//! # A-law
//!
//! The magnitude falls in segment 0 (`[0, 256)`) or one of seven segments
//! `[128·2^s, 256·2^s)`, `s` = 1..=7; segments 0 and 1 both have steps of 16,
//! segment `s` ≥ 1 steps of `8·2^s`. The code is `sign | s << 4 | step`
//! with the even bits inverted (XOR `0x55`; the sign bit set means positive).
//! A-law has no zero level: codes decode to the middle of their step, the
//! smallest being ±8, the extremes ±32 256. A negative sample `x` is coded
//! with the magnitude `-1 - x`, the mirror image of the non-negative samples
//! on the integer grid, so `-32768` needs no clipping.

/// The two G.711 laws, with their static RTP payload types (RFC 3551).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Law {
    /// μ-law, RTP payload type 0, the law of North America and Japan.
    Pcmu,
    /// A-law, RTP payload type 8, the law of the rest of the world.
    Pcma,
}

/// The sampling rate of G.711 audio, in Hz (also its RTP clock rate).
pub const SAMPLE_RATE: u32 = 8_000;

/// The largest μ-law magnitude coded without overload: with the bias, the top
/// of segment 7.
const ULAW_CLIP: i32 = 32_635;
/// The μ-law bias, added to the magnitude so that segments start at powers of
/// two.
const ULAW_BIAS: i32 = 132;

impl Law {
    /// The law of a static RTP payload type: 0 is PCMU, 8 is PCMA.
    pub fn from_payload_type(pt: u8) -> Option<Law> {
        match pt {
            0 => Some(Law::Pcmu),
            8 => Some(Law::Pcma),
            _ => None,
        }
    }

    /// The static RTP payload type of the law.
    pub fn payload_type(self) -> u8 {
        match self {
            Law::Pcmu => 0,
            Law::Pcma => 8,
        }
    }

    /// The encoding name of the law in SDP (`a=rtpmap:0 PCMU/8000`).
    pub fn encoding_name(self) -> &'static str {
        match self {
            Law::Pcmu => "PCMU",
            Law::Pcma => "PCMA",
        }
    }

    /// The code of one sample.
    pub fn encode_sample(self, sample: i16) -> u8 {
        match self {
            Law::Pcmu => ulaw_encode(sample),
            Law::Pcma => alaw_encode(sample),
        }
    }

    /// The sample of one code.
    pub fn decode_sample(self, code: u8) -> i16 {
        match self {
            Law::Pcmu => ulaw_decode(code),
            Law::Pcma => alaw_decode(code),
        }
    }

    /// Appends the codes of `pcm` to `out` (one byte per sample); allocates
    /// only when `out` lacks the capacity.
    pub fn encode(self, pcm: &[i16], out: &mut Vec<u8>) {
        out.extend(pcm.iter().map(|&s| self.encode_sample(s)));
    }

    /// Appends the samples of `codes` to `out` (one sample per byte);
    /// allocates only when `out` lacks the capacity.
    pub fn decode(self, codes: &[u8], out: &mut Vec<i16>) {
        out.extend(codes.iter().map(|&c| self.decode_sample(c)));
    }
}

/// The segment of a biased magnitude in `[128, 32768)`: the `e` with
/// `128·2^e <= biased < 256·2^e`.
fn segment_of(biased: i32) -> u8 {
    // 31 - leading_zeros is the index of the highest set bit, 7..=14.
    (31 - biased.leading_zeros() - 7) as u8
}

/// The μ-law code of a 16-bit sample.
pub fn ulaw_encode(sample: i16) -> u8 {
    let sign: u8 = if sample < 0 { 0x80 } else { 0x00 };
    let magnitude = i32::from(sample).abs().min(ULAW_CLIP);
    let biased = magnitude + ULAW_BIAS;
    let segment = segment_of(biased);
    let step = ((biased >> (segment + 3)) & 0x0F) as u8;
    !(sign | segment << 4 | step)
}

/// The 16-bit sample of a μ-law code.
pub fn ulaw_decode(code: u8) -> i16 {
    let code = !code;
    let segment = (code >> 4) & 0x07;
    let step = i32::from(code & 0x0F);
    // The middle of the step, (128 + 8·step + 4)·2^e, less the bias.
    let magnitude = ((step << 3) + ULAW_BIAS) << segment;
    let magnitude = (magnitude - ULAW_BIAS) as i16;
    if code & 0x80 != 0 {
        -magnitude
    } else {
        magnitude
    }
}

/// The A-law code of a 16-bit sample.
pub fn alaw_encode(sample: i16) -> u8 {
    let (sign, magnitude) = if sample < 0 {
        (0x00u8, -1 - i32::from(sample))
    } else {
        (0x80u8, i32::from(sample))
    };
    let (segment, step) = if magnitude < 256 {
        (0u8, (magnitude >> 4) as u8)
    } else {
        // Segment s >= 1 spans [128·2^s, 256·2^s): the highest bit is 7 + s.
        let segment = segment_of(magnitude);
        (segment, ((magnitude >> (segment + 3)) & 0x0F) as u8)
    };
    (sign | segment << 4 | step) ^ 0x55
}

/// The 16-bit sample of an A-law code.
pub fn alaw_decode(code: u8) -> i16 {
    let code = code ^ 0x55;
    let segment = (code >> 4) & 0x07;
    let step = i32::from(code & 0x0F);
    let magnitude = if segment == 0 {
        (step << 4) + 8
    } else {
        // (128 + 8·step + 4)·2^s: the middle of the step.
        ((step << 3) + 132) << segment
    };
    let magnitude = magnitude as i16;
    if code & 0x80 != 0 {
        magnitude
    } else {
        -magnitude
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The quantization step of the segment a code belongs to, in 16-bit units.
    fn step_of(law: Law, code: u8) -> i32 {
        match law {
            Law::Pcmu => 8 << ((!code >> 4) & 0x07),
            Law::Pcma => {
                let segment = ((code ^ 0x55) >> 4) & 0x07;
                16 << segment.saturating_sub(1)
            }
        }
    }

    #[test]
    fn ulaw_known_values() {
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x7F), 0);
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        // The first step of segment 1 (biased 256..272) decodes to 132.
        assert_eq!(ulaw_encode(124), 0xEF);
        assert_eq!(ulaw_decode(0xEF), 132);
        assert_eq!(ulaw_encode(-124), 0x6F);
        assert_eq!(ulaw_decode(0x6F), -132);
    }

    #[test]
    fn alaw_known_values() {
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xAA), 32256);
        assert_eq!(alaw_decode(0x2A), -32256);
        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(alaw_encode(-1), 0x55);
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
        // The first step of segment 1 starts at 256 and decodes to 264.
        assert_eq!(alaw_decode(alaw_encode(256)), 264);
        assert_eq!(alaw_decode(alaw_encode(255)), 248);
    }

    /// Every sample comes back within half a step of its segment, or, for a
    /// μ-law magnitude beyond the top decision level (overload), as the
    /// extreme code and within one step.
    #[test]
    fn round_trip_error_is_within_the_step() {
        for law in [Law::Pcmu, Law::Pcma] {
            for x in i16::MIN..=i16::MAX {
                let code = law.encode_sample(x);
                let y = law.decode_sample(code);
                let error = (i32::from(y) - i32::from(x)).abs();
                let step = step_of(law, code);
                let overload = law == Law::Pcmu && i32::from(x).abs() > ULAW_CLIP;
                let bound = if overload { step } else { step / 2 };
                assert!(
                    error <= bound,
                    "{law:?}: {x} -> {code:#04x} -> {y}, error {error} > {bound}"
                );
            }
        }
    }

    /// Decoding then encoding gives the code back, for every code but μ-law's
    /// negative zero: `0x7F` and `0xFF` both decode to 0, which encodes as
    /// `0xFF` (a 16-bit sample has one zero). A-law has no zero level, so all
    /// 256 codes come back.
    #[test]
    fn every_code_survives_decode_then_encode() {
        for code in 0..=u8::MAX {
            let back = ulaw_encode(ulaw_decode(code));
            if code == 0x7F {
                assert_eq!(back, 0xFF);
            } else {
                assert_eq!(back, code, "μ-law {code:#04x}");
            }
            assert_eq!(alaw_encode(alaw_decode(code)), code, "A-law {code:#04x}");
        }
    }

    /// The quantizer never goes down as the input goes up, and its
    /// reconstruction levels are all distinct: 255 for μ-law (one shared
    /// zero), 256 for A-law.
    #[test]
    fn quantizer_is_monotonic() {
        for law in [Law::Pcmu, Law::Pcma] {
            let mut previous = law.decode_sample(law.encode_sample(i16::MIN));
            for x in i16::MIN..=i16::MAX {
                let y = law.decode_sample(law.encode_sample(x));
                assert!(y >= previous, "{law:?}: {x} -> {y} after {previous}");
                previous = y;
            }
            let mut levels: Vec<i16> = (0..=u8::MAX).map(|c| law.decode_sample(c)).collect();
            levels.sort_unstable();
            levels.dedup();
            let expected = if law == Law::Pcmu { 255 } else { 256 };
            assert_eq!(levels.len(), expected, "{law:?}");
        }
    }

    #[test]
    fn laws_are_odd_functions_of_their_magnitude() {
        for x in 1..=i16::MAX {
            assert_eq!(ulaw_decode(ulaw_encode(-x)), -ulaw_decode(ulaw_encode(x)));
            assert_eq!(
                alaw_decode(alaw_encode(-1 - x)),
                -alaw_decode(alaw_encode(x))
            );
        }
    }

    #[test]
    fn slices_and_payload_types() {
        let pcm = [0i16, 1000, -1000, i16::MAX, i16::MIN];
        for law in [Law::Pcmu, Law::Pcma] {
            let mut codes = Vec::new();
            law.encode(&pcm, &mut codes);
            assert_eq!(codes.len(), pcm.len());
            let mut back = vec![7i16];
            law.decode(&codes, &mut back);
            assert_eq!(back.len(), pcm.len() + 1, "decode appends");
            for (&x, &y) in pcm.iter().zip(&back[1..]) {
                assert_eq!(y, law.decode_sample(law.encode_sample(x)));
            }
            assert_eq!(Law::from_payload_type(law.payload_type()), Some(law));
        }
        assert_eq!(Law::from_payload_type(9), None);
        assert_eq!(Law::Pcmu.encoding_name(), "PCMU");
    }
}
