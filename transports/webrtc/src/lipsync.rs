//! A publisher's media times on this node's clock, from its sender reports.
//!
//! Every RTCP sender report (SR) of a publisher's track pairs an RTP time of
//! that track with the publisher's NTP wallclock. The tracks of one
//! publisher share that wallclock, which is how a receiver lines audio up
//! with video. An SFU that stamps forwarded packets with their *arrival*
//! time loses it: a video frame arrives later than the audio captured with
//! it (encoding, pacing). So the publisher's NTP time is placed on this
//! node's monotonic clock with **one offset per publisher** (taken from the
//! first SR: its NTP time ↔ when it arrived), and each packet's media time
//! is `offset + SR_ntp + (rtp_time − SR_rtp) / clock_rate` of its track's
//! latest SR. The viewers' legs build their own SRs from those times, so the
//! viewer gets the publisher's mapping.

use std::time::{Duration, Instant, SystemTime};

/// If the publisher's clock and ours drift apart by more than this, the
/// offset is taken again from the next SR.
const MAX_DRIFT: Duration = Duration::from_secs(1);

/// A media time further than this from the packet's arrival is not trusted
/// (a bogus SR); the arrival time is used.
const MAX_SKEW: Duration = Duration::from_secs(10);

/// The last sender report of one track.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TrackReport {
    ntp: SystemTime,
    rtp_time: u32,
    clock_rate: u32,
}

/// One publisher's NTP clock placed on ours.
#[derive(Debug, Default)]
pub(crate) struct SenderClock {
    base: Option<(SystemTime, Instant)>,
}

impl SenderClock {
    /// A sender report arrived at `received_at`; returns the track's report.
    pub(crate) fn on_report(
        &mut self,
        ntp: SystemTime,
        rtp_time: u32,
        clock_rate: u32,
        received_at: Instant,
    ) -> TrackReport {
        let drifted = self
            .place(ntp)
            .is_none_or(|at| abs_diff(at, received_at) > MAX_DRIFT);
        if drifted {
            self.base = Some((ntp, received_at));
        }
        TrackReport {
            ntp,
            rtp_time,
            clock_rate: clock_rate.max(1),
        }
    }

    /// The media time of a packet of a track whose last SR is `report`, on
    /// this node's clock; `arrival` when it is not plausible.
    pub(crate) fn wallclock(
        &self,
        report: &TrackReport,
        rtp_time: u32,
        arrival: Instant,
    ) -> Instant {
        let Some(sr_at) = self.place(report.ntp) else {
            return arrival;
        };
        let ticks = rtp_time.wrapping_sub(report.rtp_time) as i32;
        let nanos = u64::from(ticks.unsigned_abs()) * 1_000_000_000 / u64::from(report.clock_rate);
        let d = Duration::from_nanos(nanos);
        let at = if ticks >= 0 {
            sr_at.checked_add(d)
        } else {
            sr_at.checked_sub(d)
        };
        match at {
            Some(at) if abs_diff(at, arrival) <= MAX_SKEW => at,
            _ => arrival,
        }
    }

    /// Where the publisher's NTP time `ntp` lies on our clock.
    fn place(&self, ntp: SystemTime) -> Option<Instant> {
        let (ntp0, at0) = self.base?;
        match ntp.duration_since(ntp0) {
            Ok(d) => at0.checked_add(d),
            Err(e) => at0.checked_sub(e.duration()),
        }
    }
}

fn abs_diff(a: Instant, b: Instant) -> Duration {
    if a >= b {
        a - b
    } else {
        b - a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_of_one_publisher_share_one_offset() {
        let t0 = Instant::now() + Duration::from_secs(1000);
        let ntp0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut clock = SenderClock::default();
        // Audio SR: rtp 48_000 at ntp0, arrived at t0 (+ 20 ms network).
        let audio = clock.on_report(ntp0, 48_000, 48_000, t0 + Duration::from_millis(20));
        // Video SR 300 ms later, arriving with 35 ms of delay: the offset
        // stays the audio's, so both tracks keep the publisher's timing.
        let video = clock.on_report(
            ntp0 + Duration::from_millis(300),
            900_000,
            90_000,
            t0 + Duration::from_millis(335),
        );
        // Audio captured 1 s after ntp0, video captured at the same instant.
        let a = clock.wallclock(&audio, 96_000, t0 + Duration::from_millis(1030));
        let v = clock.wallclock(&video, 900_000 + 63_000, t0 + Duration::from_millis(1090));
        assert_eq!(a, t0 + Duration::from_millis(1020));
        assert_eq!(v, a, "same capture instant, same media time");
    }

    #[test]
    fn implausible_reports_fall_back_to_arrival_and_drift_rebases() {
        let t0 = Instant::now() + Duration::from_secs(1000);
        let ntp0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut clock = SenderClock::default();
        let r = clock.on_report(ntp0, 0, 90_000, t0);
        // An RTP time an hour away from the report: arrival is used.
        let arrival = t0 + Duration::from_millis(10);
        assert_eq!(clock.wallclock(&r, 90_000 * 3600, arrival), arrival);
        // Timestamps before the report map before it.
        assert_eq!(
            clock.wallclock(&r, 0u32.wrapping_sub(9_000), arrival),
            t0 - Duration::from_millis(100)
        );
        // The publisher's clock jumped by 5 s: the next SR takes a new offset.
        let r2 = clock.on_report(
            ntp0 + Duration::from_secs(7),
            0,
            90_000,
            t0 + Duration::from_secs(2),
        );
        assert_eq!(
            clock.wallclock(&r2, 0, t0 + Duration::from_secs(2)),
            t0 + Duration::from_secs(2)
        );
    }
}
