//! RTP packets of one track back into the frames MoQ carries: the codec's
//! own bitstream, one frame per picture (video) or per packet (audio), as
//! WebCodecs decodes it.
//!
//! | codec | a frame is                                                   |
//! |-------|--------------------------------------------------------------|
//! | VP8   | the payloads after their descriptors (RFC 7741), joined     |
//! | VP9   | the same (RFC 9628); one frame per picture, spatial layers joined into a superframe-free sequence of frames |
//! | H.264 | the access unit's NAL units in Annex B (start codes), SPS and PPS kept in band |
//! | AV1   | the temporal unit's OBUs in the low-overhead format (each with its size field) |
//! | Opus  | the payload                                                  |
//!
//! A picture is complete at the RTP marker bit. One that lost a packet (a
//! gap in sequence numbers, a new timestamp before the marker) is dropped,
//! and so is everything after it until the next keyframe: a decoder cannot
//! use frames that refer to a picture it never got.

use corecast_media::{av1, h264, is_keyframe_start, vp8, vp9, Codec, MediaPacket};

/// One frame of a track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The RTP timestamp of its packets.
    pub rtp_time: u32,
    /// The clock rate of that timestamp.
    pub clock_rate: u32,
    pub keyframe: bool,
    pub codec: Codec,
    pub data: Vec<u8>,
}

/// Why a picture was dropped (counted by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// A packet of it was lost.
    Incomplete,
    /// It came after a lost picture, before the next keyframe.
    AwaitingKeyframe,
    /// Its payload did not parse.
    BadPayload,
}

/// Reassembles the frames of one track from its packets, in arrival order.
#[derive(Debug, Default)]
pub struct FrameAssembler {
    /// The picture being assembled: its timestamp, first packet's codec.
    current: Option<(u32, Codec, u32)>,
    data: Vec<u8>,
    keyframe: bool,
    broken: bool,
    last_seq: Option<u64>,
    /// A picture was lost: wait for a keyframe.
    awaiting_keyframe: bool,
    h264: h264::Depacketizer,
    av1: av1::Depacketizer,
    units: Vec<Vec<u8>>,
}

impl FrameAssembler {
    pub fn new() -> FrameAssembler {
        FrameAssembler {
            awaiting_keyframe: true,
            ..Default::default()
        }
    }

    /// Whether the assembler waits for a keyframe (at the start, after a
    /// loss): the owner asks the publisher for one.
    pub fn awaiting_keyframe(&self) -> bool {
        self.awaiting_keyframe
    }

    /// One packet; a frame when it completes one, or why a picture went.
    pub fn push(&mut self, p: &MediaPacket) -> Option<Result<Frame, Dropped>> {
        let codec = p.codec.codec;
        let gap = self.last_seq.is_some_and(|s| p.seq != s + 1);
        self.last_seq = Some(p.seq);
        if matches!(codec, Codec::Opus | Codec::Pcmu | Codec::Pcma) {
            if p.payload.is_empty() {
                return Some(Err(Dropped::BadPayload));
            }
            self.awaiting_keyframe = false;
            return Some(Ok(Frame {
                rtp_time: p.rtp_time,
                clock_rate: p.codec.clock_rate,
                keyframe: true,
                codec,
                data: p.payload.to_vec(),
            }));
        }
        let mut lost = None;
        if let Some((ts, _, _)) = self.current {
            if ts != p.rtp_time || gap {
                // The last picture never saw its marker, or a packet went.
                lost = Some(Dropped::Incomplete);
                self.reset_picture();
                if ts == p.rtp_time {
                    // The rest of this picture is no use either.
                    self.broken = true;
                    self.current = Some((ts, codec, p.codec.clock_rate));
                }
            }
        } else if gap {
            lost = Some(Dropped::Incomplete);
        }
        if lost.is_some() {
            self.awaiting_keyframe = true;
        }
        if self.current.is_none() {
            self.current = Some((p.rtp_time, codec, p.codec.clock_rate));
            self.keyframe = is_keyframe_start(codec, &p.payload);
            self.broken = false;
        }
        if !self.broken && self.append(codec, &p.payload).is_err() {
            self.broken = true;
        }
        if !p.marker {
            return lost.map(Err);
        }
        let (rtp_time, codec, clock_rate) = self.current.take()?;
        let broken = std::mem::take(&mut self.broken);
        let data = std::mem::take(&mut self.data);
        let keyframe = std::mem::take(&mut self.keyframe);
        if broken {
            self.awaiting_keyframe = true;
            return Some(Err(lost.unwrap_or(Dropped::BadPayload)));
        }
        if self.awaiting_keyframe && !keyframe {
            return Some(Err(lost.unwrap_or(Dropped::AwaitingKeyframe)));
        }
        if data.is_empty() {
            return Some(Err(Dropped::BadPayload));
        }
        self.awaiting_keyframe = false;
        Some(Ok(Frame {
            rtp_time,
            clock_rate,
            keyframe,
            codec,
            data,
        }))
    }

    fn reset_picture(&mut self) {
        self.current = None;
        self.data.clear();
        self.keyframe = false;
        self.broken = false;
        self.h264 = h264::Depacketizer::default();
        self.av1 = av1::Depacketizer::default();
    }

    fn append(&mut self, codec: Codec, payload: &[u8]) -> Result<(), Dropped> {
        match codec {
            Codec::Vp8 => {
                let d = vp8::parse(payload).ok_or(Dropped::BadPayload)?;
                self.data.extend_from_slice(&payload[d.header_len..]);
            }
            Codec::Vp9 => {
                let (bytes, _, _) = vp9::depacketize(payload).map_err(|_| Dropped::BadPayload)?;
                self.data.extend_from_slice(bytes);
            }
            Codec::H264 => {
                self.units.clear();
                self.h264
                    .push(payload, &mut self.units)
                    .map_err(|_| Dropped::BadPayload)?;
                for nal in &self.units {
                    self.data.extend_from_slice(&[0, 0, 0, 1]);
                    self.data.extend_from_slice(nal);
                }
            }
            Codec::Av1 => {
                self.units.clear();
                self.av1
                    .push(payload, &mut self.units)
                    .map_err(|_| Dropped::BadPayload)?;
                for obu in &self.units {
                    with_size_field(obu, &mut self.data).ok_or(Dropped::BadPayload)?;
                }
            }
            Codec::Opus | Codec::Pcmu | Codec::Pcma => {}
        }
        Ok(())
    }
}

/// An OBU as RTP carries it (no size field) in the low-overhead format:
/// `obu_has_size_field` set and the payload's size (LEB128) after the
/// header and its extension byte.
fn with_size_field(obu: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let header = *obu.first()?;
    let extension = header & 0x04 != 0;
    let header_len = if extension { 2 } else { 1 };
    let payload = obu.get(header_len..)?;
    if header & 0x02 != 0 {
        // It has one already.
        out.extend_from_slice(obu);
        return Some(());
    }
    out.push(header | 0x02);
    if extension {
        out.push(obu[1]);
    }
    let mut n = payload.len();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(payload);
    Some(())
}

#[cfg(test)]
#[path = "frames_tests.rs"]
mod tests;
