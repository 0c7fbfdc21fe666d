//! What a publisher sends and when: video frames at the plan's frame rate
//! (every `keyframe_every`-th three times the size), split into packets of
//! at most `max_payload` bytes and sent back to back, or through the pacer
//! when the plan paces; audio at its own packet rate.
//!
//! The load generator's publishers and the floor's generator both send by a
//! [`Schedule`], so the raw-UDP floor gets the same traffic as the server:
//! the same packet sizes, the same bursts.
//!
//! A simulcast plan (`load --simulcast`) sends every frame in three layers
//! at [`SIMULCAST_SPLIT`] of the video bitrate, lowest first, each its own
//! sequence space and picture ids, with the frame's RTP timestamp (as
//! browsers' simulcast encoders do). Every layer has its keyframes at the
//! first frame and every `keyframe_every` frames, and one more at its next
//! frame when [`Schedule::request_keyframe`] asks for it (a server's PLI
//! for that layer).

use std::time::{Duration, Instant};

use corecast_media::MediaKind;

use super::pacer::Pacer;
use crate::payload;

/// Simulcast layers' bitrates as fractions of the plan's video bitrate,
/// lowest first: the top layer sends what a single-layer publisher sends.
pub const SIMULCAST_SPLIT: [f64; 3] = [0.1, 0.3, 1.0];

/// Picture ids of layer `l` start at `l` times this (they are 15 bits).
const PICTURE_ID_LAYER_OFFSET: u64 = 1000;

/// What publishers send.
#[derive(Debug, Clone, Copy)]
pub struct MediaPlan {
    /// Video bits per second.
    pub video_bitrate: u64,
    pub fps: u32,
    /// Largest RTP payload, in bytes.
    pub max_payload: usize,
    /// Every this many frames is a keyframe, three times the size.
    pub keyframe_every: u32,
    /// Audio packets per second and their payload size.
    pub audio_pps: u32,
    pub audio_payload: usize,
    /// Video pacing rate as a multiple of the video bitrate of all layers
    /// together; 0 = no pacing.
    pub pacing: f64,
    /// Send the video in the three layers of [`SIMULCAST_SPLIT`].
    pub simulcast: bool,
    /// Video probes carry VP8 framing (frame starts, keyframes, picture
    /// ids) as simulcast's layered probes do, in one layer, so that a
    /// server that reassembles frames (MoQ viewers) sees real ones.
    pub vp8_frames: bool,
}

impl MediaPlan {
    /// The generator's standard publisher at `video_bitrate`: 30 fps, a
    /// keyframe every 2 s, 1150-byte payloads, Opus-like audio at 50
    /// packets/s of 100 bytes.
    pub fn standard(video_bitrate: u64, pacing: f64) -> MediaPlan {
        MediaPlan {
            video_bitrate,
            fps: 30,
            max_payload: 1150,
            keyframe_every: 60,
            audio_pps: 50,
            audio_payload: 100,
            pacing,
            simulcast: false,
            vp8_frames: false,
        }
    }

    /// Video layers the plan sends (1, or 3 with simulcast).
    pub fn layers(&self) -> usize {
        if self.simulcast {
            SIMULCAST_SPLIT.len()
        } else {
            1
        }
    }

    /// Bits per second of video layer `layer`.
    pub fn layer_bitrate(&self, layer: usize) -> u64 {
        if self.simulcast {
            let share = SIMULCAST_SPLIT.get(layer).copied().unwrap_or(0.0);
            (self.video_bitrate as f64 * share) as u64
        } else {
            self.video_bitrate
        }
    }

    /// Bits per second of all video layers together.
    pub fn total_video_bitrate(&self) -> u64 {
        (0..self.layers()).map(|l| self.layer_bitrate(l)).sum()
    }

    /// Whether frame number `frame` is a periodic keyframe.
    pub fn periodic_keyframe(&self, frame: u64) -> bool {
        self.keyframe_every > 0 && frame.is_multiple_of(u64::from(self.keyframe_every))
    }

    /// Payload sizes of frame number `frame` (of the top layer).
    pub fn frame_packets(&self, frame: u64) -> Vec<usize> {
        self.layer_frame_packets(self.layers() - 1, self.periodic_keyframe(frame))
    }

    /// Payload sizes of one frame of `layer`; a keyframe is three times
    /// the size.
    pub fn layer_frame_packets(&self, layer: usize, keyframe: bool) -> Vec<usize> {
        let header = if self.simulcast {
            payload::LAYERED_HEADER
        } else {
            payload::HEADER
        };
        let mut bytes = (self.layer_bitrate(layer) / 8 / u64::from(self.fps.max(1))) as usize;
        if keyframe {
            bytes *= 3;
        }
        let bytes = bytes.max(header);
        let max = self.max_payload.max(header);
        let n = bytes.div_ceil(max);
        let mut sizes = vec![max; n];
        let last = bytes - max * (n - 1);
        sizes[n - 1] = last.max(header);
        sizes
    }
}

/// One RTP packet a publisher sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutPacket {
    pub kind: MediaKind,
    pub seq: u64,
    pub rtp_time: u32,
    pub marker: bool,
    /// Payload bytes.
    pub size: usize,
    /// Video layer (0 without simulcast).
    pub layer: u8,
    /// The first packet of its frame (video).
    pub frame_start: bool,
    /// A packet of a keyframe (video).
    pub keyframe: bool,
    /// The frame's VP8 picture id, 15 bits (video; each layer its own).
    pub picture_id: u16,
}

/// One publisher's position in its plan.
pub struct Schedule {
    plan: MediaPlan,
    frame: u64,
    /// Next sequence number of each video layer.
    video_seq: Vec<u64>,
    /// Layers whose next frame is a keyframe because one was asked for.
    key_wanted: Vec<bool>,
    /// Keyframes sent because they were asked for.
    requested_keyframes: u64,
    audio_seq: u64,
    next_video: Instant,
    next_audio: Instant,
    /// Video packets waiting for the pacer (with `pacing` > 0).
    pacer: Option<Pacer<OutPacket>>,
}

impl Schedule {
    /// A schedule whose first frame and audio packet are due at `now`.
    pub fn new(plan: MediaPlan, now: Instant) -> Schedule {
        let rate = plan.pacing * plan.total_video_bitrate() as f64;
        Schedule {
            plan,
            frame: 0,
            video_seq: vec![0; plan.layers()],
            key_wanted: vec![false; plan.layers()],
            requested_keyframes: 0,
            audio_seq: 0,
            next_video: now,
            next_audio: now,
            pacer: (plan.pacing > 0.0).then(|| Pacer::new(rate, plan.max_payload)),
        }
    }

    /// Makes the next frame of `layer` a keyframe (a receiver's PLI).
    /// Several requests before that frame make one keyframe.
    pub fn request_keyframe(&mut self, layer: usize) {
        if let Some(w) = self.key_wanted.get_mut(layer) {
            *w = true;
        }
    }

    /// Keyframes sent because they were asked for (not periodic ones).
    pub fn requested_keyframes(&self) -> u64 {
        self.requested_keyframes
    }

    /// Appends the packets due at `now` to `out`, in sending order. Call at
    /// least once a millisecond; a late call sends what fell due meanwhile
    /// (at most one frame and one audio packet), and the schedule does not
    /// try to catch up beyond that.
    pub fn due(&mut self, now: Instant, out: &mut Vec<OutPacket>) {
        let plan = self.plan;
        if now >= self.next_video {
            let rtp_time = (self.frame * 90_000 / u64::from(plan.fps.max(1))) as u32;
            let periodic = plan.periodic_keyframe(self.frame);
            for layer in 0..plan.layers() {
                let wanted = std::mem::take(&mut self.key_wanted[layer]);
                if wanted && !periodic {
                    self.requested_keyframes += 1;
                }
                let keyframe = periodic || wanted;
                let sizes = plan.layer_frame_packets(layer, keyframe);
                let picture_id =
                    ((self.frame + layer as u64 * PICTURE_ID_LAYER_OFFSET) & 0x7fff) as u16;
                let n = sizes.len();
                for (i, size) in sizes.into_iter().enumerate() {
                    let packet = OutPacket {
                        kind: MediaKind::Video,
                        seq: self.video_seq[layer],
                        rtp_time,
                        marker: i + 1 == n,
                        size,
                        layer: layer as u8,
                        frame_start: i == 0,
                        keyframe,
                        picture_id,
                    };
                    match self.pacer.as_mut() {
                        Some(pacer) => pacer.push(size, packet),
                        None => out.push(packet),
                    }
                    self.video_seq[layer] += 1;
                }
            }
            self.frame += 1;
            self.next_video += Duration::from_secs(1) / plan.fps.max(1);
            if self.next_video < now {
                self.next_video = now;
            }
        }
        if plan.audio_pps > 0 && now >= self.next_audio {
            out.push(OutPacket {
                kind: MediaKind::Audio,
                seq: self.audio_seq,
                rtp_time: (self.audio_seq * 48_000 / u64::from(plan.audio_pps)) as u32,
                marker: false,
                size: plan.audio_payload,
                layer: 0,
                frame_start: true,
                keyframe: false,
                picture_id: 0,
            });
            self.audio_seq += 1;
            self.next_audio += Duration::from_secs(1) / plan.audio_pps;
            if self.next_audio < now {
                self.next_audio = now;
            }
        }
        if let Some(pacer) = self.pacer.as_mut() {
            while let Some(packet) = pacer.pop(now) {
                out.push(packet);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_into_packets() {
        let plan = MediaPlan::standard(1_500_000, 0.0);
        // 1.5 Mbit/s at 30 fps is 6250 bytes a frame: 6 packets.
        let p = plan.frame_packets(1);
        assert_eq!(p.len(), 6);
        assert_eq!(p.iter().sum::<usize>(), 6250);
        // A keyframe is three times bigger.
        assert_eq!(plan.frame_packets(0).iter().sum::<usize>(), 18750);
    }

    /// Runs a schedule for `secs` seconds of simulated time, 1 ms ticks.
    fn simulate(plan: MediaPlan, secs: u64) -> Vec<(Duration, OutPacket)> {
        let start = Instant::now();
        let mut s = Schedule::new(plan, start);
        let mut sent = Vec::new();
        let mut out = Vec::new();
        for ms in 0..secs * 1000 {
            let at = Duration::from_millis(ms);
            s.due(start + at, &mut out);
            sent.extend(out.drain(..).map(|p| (at, p)));
        }
        sent
    }

    #[test]
    fn one_second_holds_the_plans_frames_and_audio() {
        let sent = simulate(MediaPlan::standard(1_500_000, 0.0), 1);
        let video: Vec<_> = sent
            .iter()
            .filter(|(_, p)| p.kind == MediaKind::Video)
            .collect();
        let audio = sent.len() - video.len();
        assert_eq!(audio, 50);
        // 30 frames: one keyframe (17 packets) and 29 of 6.
        assert_eq!(video.len(), 17 + 29 * 6);
        assert_eq!(video.iter().filter(|(_, p)| p.marker).count(), 30);
        // Sequence numbers run without gaps, per kind.
        for (i, (_, p)) in video.iter().enumerate() {
            assert_eq!(p.seq, i as u64);
        }
        // Unpaced, a frame's packets leave in the same tick.
        assert!(video[..17].iter().all(|(at, _)| *at == Duration::ZERO));
    }

    #[test]
    fn a_paced_frame_spreads_over_milliseconds() {
        let sent = simulate(MediaPlan::standard(1_500_000, 2.5), 1);
        let frame1: Vec<Duration> = sent
            .iter()
            .filter(|(_, p)| p.kind == MediaKind::Video && (17..23).contains(&p.seq))
            .map(|(at, _)| *at)
            .collect();
        assert_eq!(frame1.len(), 6);
        // 6250 bytes at 2.5 x 1.5 Mbit/s take about 13 ms.
        let spread = *frame1.last().unwrap() - frame1[0];
        assert!(spread >= Duration::from_millis(8), "{spread:?}");
        // Audio is not paced.
        let audio = sent
            .iter()
            .filter(|(_, p)| p.kind == MediaKind::Audio)
            .count();
        assert_eq!(audio, 50);
    }

    #[test]
    fn simulcast_sends_three_layers_each_its_own_sequence() {
        let mut plan = MediaPlan::standard(1_500_000, 0.0);
        plan.simulcast = true;
        assert_eq!(plan.total_video_bitrate(), 2_100_000);
        let sent = simulate(plan, 2);
        let video: Vec<&OutPacket> = sent
            .iter()
            .map(|(_, p)| p)
            .filter(|p| p.kind == MediaKind::Video)
            .collect();
        for layer in 0..3u8 {
            let packets: Vec<&OutPacket> =
                video.iter().copied().filter(|p| p.layer == layer).collect();
            for (i, p) in packets.iter().enumerate() {
                assert_eq!(p.seq, i as u64, "layer {layer} has no gaps");
            }
            let bytes: usize = packets.iter().map(|p| p.size).sum();
            // Two seconds: one keyframe (3x) and 59 delta frames.
            let frame = plan.layer_bitrate(usize::from(layer)) as usize / 8 / 30;
            assert_eq!(bytes, frame * 62, "layer {layer}");
            let starts: Vec<&OutPacket> =
                packets.iter().copied().filter(|p| p.frame_start).collect();
            assert_eq!(starts.len(), 60);
            assert_eq!(starts.iter().filter(|p| p.keyframe).count(), 1);
            assert_eq!(packets.iter().filter(|p| p.marker).count(), 60);
        }
        // The layers of a frame share its timestamp, lowest layer first.
        let first: Vec<(u8, u32)> = video
            .iter()
            .filter(|p| p.frame_start)
            .take(3)
            .map(|p| (p.layer, p.rtp_time))
            .collect();
        assert_eq!(first, vec![(0, 0), (1, 0), (2, 0)]);
        // Picture ids rise by one a frame, per layer.
        let pids: Vec<u16> = video
            .iter()
            .filter(|p| p.layer == 1 && p.frame_start)
            .take(3)
            .map(|p| p.picture_id)
            .collect();
        assert_eq!(pids, vec![1000, 1001, 1002]);
    }

    #[test]
    fn a_requested_keyframe_comes_with_the_next_frame_of_that_layer() {
        let mut plan = MediaPlan::standard(1_500_000, 0.0);
        plan.simulcast = true;
        let start = Instant::now();
        let mut s = Schedule::new(plan, start);
        let mut out = Vec::new();
        let mut keys = Vec::new();
        for ms in 0..1000u64 {
            if ms == 510 {
                s.request_keyframe(1);
                s.request_keyframe(1);
                s.request_keyframe(7); // no such layer: ignored
            }
            s.due(start + Duration::from_millis(ms), &mut out);
            for p in out.drain(..) {
                if p.kind == MediaKind::Video && p.frame_start && p.keyframe {
                    keys.push((ms, p.layer));
                }
            }
        }
        // The periodic keyframe of every layer at 0, then one of layer 1
        // with the first frame after the request (frame 16, due at 533.3
        // ms: the 534th tick).
        assert_eq!(keys, vec![(0, 0), (0, 1), (0, 2), (534, 1)]);
        assert_eq!(s.requested_keyframes(), 1);
    }
}
