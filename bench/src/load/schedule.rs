//! What a publisher sends and when: video frames at the plan's frame rate
//! (every `keyframe_every`-th three times the size), split into packets of
//! at most `max_payload` bytes and sent back to back, or through the pacer
//! when the plan paces; audio at its own packet rate.
//!
//! The load generator's publishers and the floor's generator both send by a
//! [`Schedule`], so the raw-UDP floor gets the same traffic as the server:
//! the same packet sizes, the same bursts.

use std::time::{Duration, Instant};

use corecast_media::MediaKind;

use super::pacer::Pacer;
use crate::payload;

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
    /// Video pacing rate as a multiple of `video_bitrate`; 0 = no pacing.
    pub pacing: f64,
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
        }
    }

    /// Payload sizes of frame number `frame`.
    pub fn frame_packets(&self, frame: u64) -> Vec<usize> {
        let mut bytes = (self.video_bitrate / 8 / u64::from(self.fps.max(1))) as usize;
        if self.keyframe_every > 0 && frame.is_multiple_of(u64::from(self.keyframe_every)) {
            bytes *= 3;
        }
        let bytes = bytes.max(payload::HEADER);
        let max = self.max_payload.max(payload::HEADER);
        let n = bytes.div_ceil(max);
        let mut sizes = vec![max; n];
        let last = bytes - max * (n - 1);
        sizes[n - 1] = last.max(payload::HEADER);
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
}

/// One publisher's position in its plan.
pub struct Schedule {
    plan: MediaPlan,
    frame: u64,
    video_seq: u64,
    audio_seq: u64,
    next_video: Instant,
    next_audio: Instant,
    /// Video packets waiting for the pacer (with `pacing` > 0).
    pacer: Option<Pacer<OutPacket>>,
}

impl Schedule {
    /// A schedule whose first frame and audio packet are due at `now`.
    pub fn new(plan: MediaPlan, now: Instant) -> Schedule {
        Schedule {
            plan,
            frame: 0,
            video_seq: 0,
            audio_seq: 0,
            next_video: now,
            next_audio: now,
            pacer: (plan.pacing > 0.0)
                .then(|| Pacer::new(plan.pacing * plan.video_bitrate as f64, plan.max_payload)),
        }
    }

    /// Appends the packets due at `now` to `out`, in sending order. Call at
    /// least once a millisecond; a late call sends what fell due meanwhile
    /// (at most one frame and one audio packet), and the schedule does not
    /// try to catch up beyond that.
    pub fn due(&mut self, now: Instant, out: &mut Vec<OutPacket>) {
        let plan = self.plan;
        if now >= self.next_video {
            let sizes = plan.frame_packets(self.frame);
            let rtp_time = (self.frame * 90_000 / u64::from(plan.fps.max(1))) as u32;
            let n = sizes.len();
            for (i, size) in sizes.into_iter().enumerate() {
                let packet = OutPacket {
                    kind: MediaKind::Video,
                    seq: self.video_seq,
                    rtp_time,
                    marker: i + 1 == n,
                    size,
                };
                match self.pacer.as_mut() {
                    Some(pacer) => pacer.push(size, packet),
                    None => out.push(packet),
                }
                self.video_seq += 1;
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
}
