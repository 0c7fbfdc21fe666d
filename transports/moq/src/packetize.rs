//! Frames a MoQ publisher sends, back into RTP payloads for WebRTC viewers:
//! the reverse of [`crate::frames`].
//!
//! | codec | payloads                                                      |
//! |-------|---------------------------------------------------------------|
//! | VP8   | RFC 7741 descriptors with a 15-bit picture id, S on the first |
//! | VP9   | RFC 9628 flexible mode (`corecast_media::vp9::packetize`)    |
//! | H.264 | the Annex B NAL units in RFC 6184 mode 1 (STAP-A, FU-A)      |
//! | AV1   | the temporal unit's OBUs in the AV1 RTP format               |
//! | Opus  | the frame                                                     |

use corecast_media::{av1, h264, vp9, Codec};

/// Largest RTP payload (a 1200-byte datagram with room for the RTP and
/// SRTP headers and extensions).
pub const MAX_PAYLOAD: usize = 1100;

/// Splits one track's frames into RTP payloads.
#[derive(Debug)]
pub struct Packetizer {
    codec: Codec,
    picture_id: u16,
    h264: h264::AvcConfig,
    /// Length-prefixed NAL units (avc1), not Annex B.
    avc1: bool,
}

impl Packetizer {
    pub fn new(codec: Codec) -> Packetizer {
        Packetizer {
            codec,
            picture_id: 0,
            // Parameter sets come in band (avc3): nothing to add.
            h264: h264::AvcConfig {
                nal_length_size: 4,
                sps: Vec::new(),
                pps: Vec::new(),
            },
            avc1: false,
        }
    }

    /// H.264 in avc1 form: frames are length-prefixed NAL units, and the
    /// record's SPS and PPS go before every IDR.
    pub fn with_avc_config(mut self, config: h264::AvcConfig) -> Packetizer {
        self.avc1 = true;
        self.h264 = config;
        self
    }

    /// The payloads of one frame, in order (the last ends it: set the
    /// marker); empty when the frame does not parse.
    pub fn packetize(&mut self, frame: &[u8], keyframe: bool, out: &mut Vec<Vec<u8>>) {
        out.clear();
        if frame.is_empty() {
            return;
        }
        match self.codec {
            Codec::Vp8 => self.vp8(frame, out),
            Codec::Vp9 => {
                vp9::packetize(frame, keyframe, self.picture_id, MAX_PAYLOAD, out);
                self.picture_id = (self.picture_id + 1) & 0x7fff;
            }
            Codec::H264 if self.avc1 => {
                if let Ok(nals) = self.h264.nal_units(frame) {
                    h264::packetize(&self.h264, &nals, MAX_PAYLOAD, out);
                }
            }
            Codec::H264 => {
                let nals = annex_b_units(frame);
                h264::packetize(&self.h264, &nals, MAX_PAYLOAD, out);
            }
            Codec::Av1 => {
                if let Ok(obus) = av1::obus(frame) {
                    av1::packetize(&obus, keyframe, None, MAX_PAYLOAD, out);
                }
            }
            Codec::Opus | Codec::Pcmu | Codec::Pcma => out.push(frame.to_vec()),
        }
    }

    fn vp8(&mut self, frame: &[u8], out: &mut Vec<Vec<u8>>) {
        let pid = 0x8000 | self.picture_id;
        self.picture_id = (self.picture_id + 1) & 0x7fff;
        for (i, part) in frame.chunks(MAX_PAYLOAD - 4).enumerate() {
            let mut p = Vec::with_capacity(4 + part.len());
            // X (extensions follow), S on the first packet, partition 0;
            // I (picture id), M (15 bits).
            p.push(if i == 0 { 0x90 } else { 0x80 });
            p.push(0x80);
            p.extend_from_slice(&pid.to_be_bytes());
            p.extend_from_slice(part);
            out.push(p);
        }
    }
}

/// The NAL units of an Annex B access unit (3- and 4-byte start codes).
pub fn annex_b_units(frame: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= frame.len() {
        if frame[i] == 0 && frame[i + 1] == 0 && frame[i + 2] == 1 {
            starts.push((i, i + 3));
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut units = Vec::new();
    for (k, &(_, begin)) in starts.iter().enumerate() {
        let mut end = starts.get(k + 1).map_or(frame.len(), |&(s, _)| s);
        // A 4-byte start code's leading zero belongs to the next code.
        while end > begin && frame[end - 1] == 0 && k + 1 < starts.len() {
            end -= 1;
        }
        if end > begin {
            units.push(&frame[begin..end]);
        }
    }
    units
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use corecast_media::{ChannelId, CodecInfo, Layer, MediaPacket};

    use super::*;
    use crate::frames::FrameAssembler;

    /// Packetizes a frame and assembles it back.
    fn round_trip(codec: Codec, frame: &[u8], keyframe: bool) -> Vec<u8> {
        let mut p = Packetizer::new(codec);
        let mut payloads = Vec::new();
        p.packetize(frame, keyframe, &mut payloads);
        assert!(!payloads.is_empty());
        assert!(payloads.iter().all(|x| x.len() <= MAX_PAYLOAD));
        let mut a = FrameAssembler::new();
        let info = CodecInfo::new(codec, 90_000);
        let now = Instant::now();
        let mut got = None;
        for (i, payload) in payloads.iter().enumerate() {
            let packet = MediaPacket {
                channel: ChannelId::for_track("r", "p", "video"),
                kind: info.kind(),
                codec: info,
                seq: i as u64 + 1,
                rtp_time: 1000,
                marker: i + 1 == payloads.len(),
                arrival: now,
                wallclock: now,
                orientation: None,
                layer: Layer::default(),
                audio_level: None,
                dependency: None,
                payload: Arc::from(payload.as_slice()),
            };
            if let Some(r) = a.push(&packet) {
                got = Some(r.expect("a frame"));
            }
        }
        let f = got.expect("assembled");
        assert_eq!(f.keyframe, keyframe);
        f.data
    }

    fn bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + 3) as u8).collect()
    }

    #[test]
    fn vp8_round_trips() {
        let mut key = bytes(5000);
        key[0] = 0x10;
        assert_eq!(round_trip(Codec::Vp8, &key, true), key);
    }

    #[test]
    fn vp9_round_trips() {
        let f = bytes(3000);
        assert_eq!(round_trip(Codec::Vp9, &f, true), f);
    }

    #[test]
    fn h264_round_trips() {
        let sps = [0x67, 0x42, 0xc0, 0x1f, 0xda];
        let pps = [0x68, 0xce, 0x3c, 0x80];
        let mut idr = bytes(4000);
        idr[0] = 0x65;
        let mut frame = Vec::new();
        for nal in [&sps[..], &pps[..], &idr[..]] {
            frame.extend_from_slice(&[0, 0, 0, 1]);
            frame.extend_from_slice(nal);
        }
        assert_eq!(round_trip(Codec::H264, &frame, true), frame);
    }

    #[test]
    fn av1_round_trips() {
        // A sequence header and a frame OBU, each with its size field.
        let mut frame = vec![0x0a, 6, 0, 0, 0, 0x42, 0xab, 0xbf];
        let payload = bytes(2000);
        frame.push(0x32);
        frame.extend_from_slice(&[0xd0, 0x0f]); // LEB128 2000
        frame.extend_from_slice(&payload);
        assert_eq!(round_trip(Codec::Av1, &frame, true), frame);
    }

    #[test]
    fn annex_b_splits_on_both_start_codes() {
        let au = [
            0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x68, 2, 0, 0, 0, 1, 0x65, 3, 4,
        ];
        let units = annex_b_units(&au);
        assert_eq!(
            units,
            vec![&[0x67, 1][..], &[0x68, 2][..], &[0x65, 3, 4][..]]
        );
        assert!(annex_b_units(&[1, 2, 3]).is_empty());
    }
}
