//! Where a keyframe starts: [`is_keyframe_start`] tells whether an RTP payload
//! (the RTP header already removed) is the first packet of a keyframe, so that
//! the SFU can start forwarding a track to a new viewer there and never send
//! it delta frames it cannot decode.
//!
//! The input is network input: any bytes give an answer and never a panic. A
//! payload too short for the fields the rule reads (a truncated payload
//! descriptor, a missing payload header) is not a keyframe start.
//!
//! | codec | keyframe start when |
//! | --- | --- |
//! | VP8 (RFC 7741) | the payload descriptor (X, N, S, PID; the extension byte I/L/T/K; a 7- or 15-bit PictureID by its M bit; TL0PICIDX; the TID/Y/KEYIDX byte) is complete, S = 1 and PID = 0 (start of partition 0), and the VP8 payload header follows with its P bit (bit 0 of its first byte, the inverse key frame flag) = 0 |
//! | VP9 (RFC 9628) | the payload descriptor (I, P, L, F, B, E, V, Z; the picture id by its M bit; the layer indices TID/U/SID/D, plus TL0PICIDX when F = 0; the reference indices when F = 1 and P = 1; the scalability structure when V = 1) is complete and followed by at least one byte of VP9 data, B = 1 (start of a frame), P = 0 (no inter-picture prediction), and SID = 0 when layer indices are present |
//! | H264 (RFC 6184) | a single NAL unit of type 5 (IDR slice) or 7 (SPS); a STAP-A (24) that holds a complete IDR or SPS NAL unit (the 16-bit sizes are walked up to the first one that overruns the payload); an FU-A (28) with S = 1 whose original type is 5 or 7. STAP-B, MTAP, FU-B and every other type: no |
//! | AV1 (AV1 RTP payload format) | the aggregation header has N = 1 (first packet of a coded video sequence) and Z = 0 (the packet does not continue an OBU), and at least one byte of OBU data follows it |
//! | Opus, PCMU, PCMA | always: every audio packet decodes on its own |

use crate::Codec;

/// Whether `payload`, an RTP payload of `codec` without its RTP header, is the
/// first packet of a keyframe (see the module documentation for the rule of
/// each codec). Never panics; malformed or truncated input gives `false`.
pub fn is_keyframe_start(codec: Codec, payload: &[u8]) -> bool {
    match codec {
        Codec::Opus | Codec::Pcmu | Codec::Pcma => true,
        Codec::Vp8 => vp8(payload),
        Codec::Vp9 => vp9(payload),
        Codec::H264 => h264(payload),
        Codec::Av1 => av1(payload),
    }
}

/// RFC 7741 section 4.2 (payload descriptor) and 4.3 (payload header).
fn vp8(payload: &[u8]) -> bool {
    crate::vp8::parse(payload).is_some_and(|d| d.keyframe)
}

/// RFC 9628 section 4.2.
fn vp9(payload: &[u8]) -> bool {
    // At least one byte of VP9 data after the descriptor.
    crate::vp9::parse(payload).is_some_and(|d| d.header_len < payload.len() && d.keyframe_start())
}

fn h264_starts_keyframe(nal_header: u8) -> bool {
    matches!(nal_header & 0x1f, 5 | 7)
}

/// RFC 6184 section 5.2 (NAL unit types), 5.7.1 (STAP-A), 5.8 (FU-A).
fn h264(payload: &[u8]) -> bool {
    let Some((&header, rest)) = payload.split_first() else {
        return false;
    };
    match header & 0x1f {
        1..=23 => h264_starts_keyframe(header),
        24 => stap_a(rest),
        28 => match rest.first() {
            Some(&fu) => fu & 0x80 != 0 && h264_starts_keyframe(fu),
            None => false,
        },
        _ => false,
    }
}

/// Whether a STAP-A body (after its one-byte header) holds a complete IDR or
/// SPS NAL unit. The walk stops at the first size that is zero or overruns.
fn stap_a(mut rest: &[u8]) -> bool {
    while let [hi, lo, tail @ ..] = rest {
        let size = usize::from(u16::from_be_bytes([*hi, *lo]));
        if size == 0 || size > tail.len() {
            return false;
        }
        let (nal, next) = tail.split_at(size);
        if h264_starts_keyframe(nal[0]) {
            return true;
        }
        rest = next;
    }
    false
}

/// AV1 RTP payload format, section 4.4 (aggregation header Z, Y, W, N).
fn av1(payload: &[u8]) -> bool {
    match payload {
        [header, _, ..] => header & 0x80 == 0 && header & 0x08 != 0,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every prefix shorter than `keep` is not a keyframe start, and the whole
    /// payload and every longer prefix are.
    fn assert_truncations(codec: Codec, payload: &[u8], keep: usize) {
        for len in 0..keep {
            assert!(
                !is_keyframe_start(codec, &payload[..len]),
                "{codec:?} cut to {len} of {payload:02x?}"
            );
        }
        for len in keep..=payload.len() {
            assert!(
                is_keyframe_start(codec, &payload[..len]),
                "{codec:?} {len} bytes of {payload:02x?}"
            );
        }
    }

    // VP8: the keyframe payload header is 3 bytes of frame tag (P = 0 in
    // bit 0 of the first), the start code 9d 01 2a and the dimensions.
    const VP8_KEY_HEADER: [u8; 10] = [0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01];
    const VP8_DELTA_HEADER: [u8; 3] = [0x31, 0x0b, 0x00];

    fn vp8_packet(descriptor: &[u8], header: &[u8]) -> Vec<u8> {
        let mut p = descriptor.to_vec();
        p.extend_from_slice(header);
        p
    }

    #[test]
    fn vp8_minimal_descriptor() {
        // X=0, S=1, PID=0.
        let key = vp8_packet(&[0x10], &VP8_KEY_HEADER);
        assert!(is_keyframe_start(Codec::Vp8, &key));
        assert_truncations(Codec::Vp8, &key, 2);
        // N=1 (non-reference) does not change the answer.
        assert!(is_keyframe_start(
            Codec::Vp8,
            &vp8_packet(&[0x30], &VP8_KEY_HEADER)
        ));
        // Delta frame.
        assert!(!is_keyframe_start(
            Codec::Vp8,
            &vp8_packet(&[0x10], &VP8_DELTA_HEADER)
        ));
        // Continuation of partition 0 (S=0): its first byte is not a header.
        assert!(!is_keyframe_start(
            Codec::Vp8,
            &vp8_packet(&[0x00], &[0x00; 20])
        ));
        // Start of partition 1 (S=1, PID=1).
        assert!(!is_keyframe_start(
            Codec::Vp8,
            &vp8_packet(&[0x11], &[0x00; 20])
        ));
    }

    #[test]
    fn vp8_every_extension_field() {
        // X=1, S=1; I, L, T, K; 15-bit PictureID (M=1), TL0PICIDX, TID/Y/KEYIDX.
        let descriptor = [0x90, 0xf0, 0x80 | 0x12, 0x34, 0x07, 0x20 | 0x05];
        let key = vp8_packet(&descriptor, &VP8_KEY_HEADER);
        assert!(is_keyframe_start(Codec::Vp8, &key));
        assert_truncations(Codec::Vp8, &key, descriptor.len() + 1);
        // The same picture as a delta frame.
        let delta = vp8_packet(&descriptor, &VP8_DELTA_HEADER);
        assert!(!is_keyframe_start(Codec::Vp8, &delta));
        // A continuation packet of that keyframe (S=0).
        let mut cont = key.clone();
        cont[0] = 0x80;
        assert!(!is_keyframe_start(Codec::Vp8, &cont));
    }

    #[test]
    fn vp8_each_optional_field_alone() {
        // I with a 7-bit PictureID (M=0).
        let key = vp8_packet(&[0x90, 0x80, 0x12], &VP8_KEY_HEADER);
        assert_truncations(Codec::Vp8, &key, 4);
        // L only.
        let key = vp8_packet(&[0x90, 0x40, 0x07], &VP8_KEY_HEADER);
        assert_truncations(Codec::Vp8, &key, 4);
        // T only, then K only: one TID/Y/KEYIDX byte either way.
        let key = vp8_packet(&[0x90, 0x20, 0x40], &VP8_KEY_HEADER);
        assert_truncations(Codec::Vp8, &key, 4);
        let key = vp8_packet(&[0x90, 0x10, 0x03], &VP8_KEY_HEADER);
        assert_truncations(Codec::Vp8, &key, 4);
        // X=1 with no optional field.
        let key = vp8_packet(&[0x90, 0x00], &VP8_KEY_HEADER);
        assert_truncations(Codec::Vp8, &key, 3);
        // A 7-bit PictureID whose value has the header's P bit (byte 0x51
        // would read as a delta frame if the descriptor were misparsed).
        let key = vp8_packet(&[0x90, 0x80, 0x51], &VP8_KEY_HEADER);
        assert!(is_keyframe_start(Codec::Vp8, &key));
        let key = vp8_packet(&[0x90, 0x80, 0x80 | 0x01, 0x51], &VP8_KEY_HEADER);
        assert!(is_keyframe_start(Codec::Vp8, &key));
    }

    fn vp9_packet(descriptor: &[u8]) -> Vec<u8> {
        let mut p = descriptor.to_vec();
        // The first bytes of an uncompressed header; not read by the rule.
        p.extend_from_slice(&[0x82, 0x49, 0x83, 0x42, 0x00]);
        p
    }

    #[test]
    fn vp9_non_flexible_with_layers() {
        // I=1, P=0, L=1, F=0, B=1, E=0; 15-bit picture id; TID=0 U=0 SID=0 D=0; TL0PICIDX.
        let descriptor = [0xa8, 0x80 | 0x01, 0x23, 0x00, 0x11];
        let key = vp9_packet(&descriptor);
        assert!(is_keyframe_start(Codec::Vp9, &key));
        assert_truncations(Codec::Vp9, &key, descriptor.len() + 1);
        // Inter-predicted (P=1): a delta frame.
        let mut delta = key.clone();
        delta[0] |= 0x40;
        assert!(!is_keyframe_start(Codec::Vp9, &delta));
        // Not the beginning of the frame (B=0).
        let mut cont = key.clone();
        cont[0] &= !0x08;
        assert!(!is_keyframe_start(Codec::Vp9, &cont));
        // Spatial layer 1 of the keyframe picture (SID=1): not where to start.
        let mut upper = key.clone();
        upper[3] = 1 << 1;
        assert!(!is_keyframe_start(Codec::Vp9, &upper));
        // Temporal layer and switching bits do not matter.
        let mut tl = key;
        tl[3] = 0xf0 | 0x01;
        assert!(is_keyframe_start(Codec::Vp9, &tl));
    }

    #[test]
    fn vp9_minimal_and_short_picture_id() {
        // Only B=1 (and E=1): one byte of descriptor.
        let key = vp9_packet(&[0x0c]);
        assert_truncations(Codec::Vp9, &key, 2);
        assert!(!is_keyframe_start(Codec::Vp9, &vp9_packet(&[0x4c])));
        // 7-bit picture id.
        let key = vp9_packet(&[0x88, 0x05]);
        assert_truncations(Codec::Vp9, &key, 3);
    }

    #[test]
    fn vp9_flexible_mode() {
        // I=1, L=1, F=1, B=1: picture id, layer byte, no TL0PICIDX.
        let descriptor = [0xb8, 0x7f, 0x00];
        let key = vp9_packet(&descriptor);
        assert_truncations(Codec::Vp9, &key, descriptor.len() + 1);
        // P=1 with three reference indices (N set on the first two).
        let delta = vp9_packet(&[0xf8, 0x7f, 0x00, 0x03, 0x05, 0x06]);
        assert!(!is_keyframe_start(Codec::Vp9, &delta));
        // SID=2 in flexible mode.
        let upper = vp9_packet(&[0xb8, 0x7f, 0x04]);
        assert!(!is_keyframe_start(Codec::Vp9, &upper));
    }

    #[test]
    fn vp9_scalability_structure() {
        // I=1, L=1, F=0, B=1, V=1; picture id; layers; TL0PICIDX;
        // SS: N_S=1 (two layers), Y=1, G=1; two WIDTH/HEIGHT pairs; N_G=2,
        // the first picture with one P_DIFF, the second with two.
        let descriptor = [
            0xaa, 0x10, 0x00, 0x00, 0x3a, 0x02, 0x80, 0x01, 0x68, 0x05, 0x00, 0x02, 0xd0, 0x02,
            0x04, 0x01, 0x28, 0x01, 0x02,
        ];
        let key = vp9_packet(&descriptor);
        assert!(is_keyframe_start(Codec::Vp9, &key));
        assert_truncations(Codec::Vp9, &key, descriptor.len() + 1);
        // A count of 255 pictures that are not there.
        let short = vp9_packet(&[0x0a, 0x08, 0xff]);
        assert!(!is_keyframe_start(Codec::Vp9, &short));
    }

    #[test]
    fn h264_single_nal_units() {
        let idr = [0x65, 0x88, 0x84, 0x00, 0x33];
        let sps = [0x67, 0x42, 0xc0, 0x1f, 0xda];
        let pps = [0x68, 0xce, 0x3c, 0x80];
        let slice = [0x41, 0x9a, 0x02];
        let sei = [0x06, 0x05, 0xff];
        assert_truncations(Codec::H264, &idr, 1);
        assert_truncations(Codec::H264, &sps, 1);
        assert!(!is_keyframe_start(Codec::H264, &pps));
        assert!(!is_keyframe_start(Codec::H264, &slice));
        assert!(!is_keyframe_start(Codec::H264, &sei));
        assert!(!is_keyframe_start(Codec::H264, &[]));
    }

    fn stap_a(nals: &[&[u8]]) -> Vec<u8> {
        let mut p = vec![0x78];
        for nal in nals {
            p.extend_from_slice(&(nal.len() as u16).to_be_bytes());
            p.extend_from_slice(nal);
        }
        p
    }

    #[test]
    fn h264_stap_a() {
        let sps: &[u8] = &[0x67, 0x42, 0xc0, 0x1f, 0xda];
        let pps: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
        let idr: &[u8] = &[0x65, 0x88, 0x84];
        let slice: &[u8] = &[0x41, 0x9a, 0x02];
        let sei: &[u8] = &[0x06, 0x05, 0xff, 0x80];
        // SPS, PPS, IDR: a start as soon as the SPS is complete.
        let key = stap_a(&[sps, pps, idr]);
        assert_truncations(Codec::H264, &key, 1 + 2 + sps.len());
        // The IDR is the third unit: a start once the IDR is complete.
        let key = stap_a(&[sei, pps, idr]);
        assert_truncations(Codec::H264, &key, key.len());
        // No IDR or SPS inside.
        assert!(!is_keyframe_start(Codec::H264, &stap_a(&[sei, pps, slice])));
        // A size that overruns hides what follows, a zero size ends the walk.
        let mut bad = stap_a(&[sei]);
        bad.extend_from_slice(&[0xff, 0xff, 0x65]);
        assert!(!is_keyframe_start(Codec::H264, &bad));
        let mut zero = stap_a(&[pps]);
        zero.extend_from_slice(&[0x00, 0x00]);
        zero.extend_from_slice(&stap_a(&[idr])[1..]);
        assert!(!is_keyframe_start(Codec::H264, &zero));
        // Every truncation of an odd-sized walk: no panic.
        for len in 0..=key.len() {
            let _ = is_keyframe_start(Codec::H264, &key[..len]);
        }
    }

    #[test]
    fn h264_fu_a() {
        // FU indicator (NRI=3, type 28), FU header S=1 type 5.
        let start = [0x7c, 0x85, 0x88, 0x84];
        assert_truncations(Codec::H264, &start, 2);
        // SPS sent in fragments (unusual, but a keyframe start).
        assert!(is_keyframe_start(Codec::H264, &[0x7c, 0x87, 0x42]));
        // Middle and end fragments of that IDR.
        assert!(!is_keyframe_start(Codec::H264, &[0x7c, 0x05, 0x11]));
        assert!(!is_keyframe_start(Codec::H264, &[0x7c, 0x45, 0x11]));
        // The first fragment of a non-IDR slice.
        assert!(!is_keyframe_start(Codec::H264, &[0x5c, 0x81, 0x9a]));
        // STAP-B, MTAP16, MTAP24, FU-B and the reserved types.
        for t in [25u8, 26, 27, 29, 30, 31, 0] {
            assert!(
                !is_keyframe_start(Codec::H264, &[0x60 | t, 0x85, 0x00, 0x05, 0x65, 0, 0]),
                "type {t}"
            );
        }
    }

    #[test]
    fn av1_aggregation_header() {
        // Z=0, Y=0, W=1, N=1; then an OBU (a sequence header).
        let key = [0x18, 0x0a, 0x0b, 0x00, 0x00, 0x00];
        assert_truncations(Codec::Av1, &key, 2);
        // W=0 and Y=1 do not matter.
        assert!(is_keyframe_start(Codec::Av1, &[0x48, 0x0a]));
        // N=0: not the first packet of a coded video sequence.
        assert!(!is_keyframe_start(Codec::Av1, &[0x10, 0x32, 0x00]));
        // Z=1: continues an OBU of the previous packet.
        assert!(!is_keyframe_start(Codec::Av1, &[0x98, 0x0a, 0x00]));
    }

    #[test]
    fn audio_is_always_a_start() {
        for codec in [Codec::Opus, Codec::Pcmu, Codec::Pcma] {
            assert!(is_keyframe_start(codec, &[]));
            assert!(is_keyframe_start(codec, &[0xfc, 0xff, 0xfe]));
        }
    }

    #[test]
    fn no_byte_alone_panics() {
        for codec in [Codec::Vp8, Codec::Vp9, Codec::H264, Codec::Av1] {
            assert!(!is_keyframe_start(codec, &[]));
            for b in 0..=255u8 {
                let _ = is_keyframe_start(codec, &[b]);
                let _ = is_keyframe_start(codec, &[b, b]);
                let _ = is_keyframe_start(codec, &[b, 0xff, 0xff]);
            }
        }
    }
}
