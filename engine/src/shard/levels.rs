//! Audio levels of the tracks a shard publishes, for active speakers.
//!
//! Publishers (browsers) put their audio level on every Opus packet (RFC
//! 6464, the `ssrc-audio-level` extension): 0 is the loudest, 127 silence,
//! in -dBov. The shard that publishes a track (a local publisher's, or a
//! remote one's that the cluster delivers) averages it per track over
//! [`REPORT_INTERVAL`] (in power, not in dB) and tells the control thread,
//! which decides each room's active speakers (`control/speakers.rs`). Per
//! packet: one map update, no allocation once the track is known.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use corecast_media::ChannelId;

/// How often a shard reports its tracks' levels.
pub const REPORT_INTERVAL: Duration = Duration::from_millis(200);
/// Tracks measured per report, at most (more are left out of it).
pub const MAX_TRACKS: usize = 4096;

#[derive(Debug, Default)]
pub(super) struct LevelMeter {
    /// Per track: the sum of its packets' power and their count.
    acc: HashMap<ChannelId, (f64, u32)>,
    due: Option<Instant>,
}

impl LevelMeter {
    /// One audio packet of `channel` with RFC 6464 level `level`.
    pub fn add(&mut self, now: Instant, channel: ChannelId, level: u8) {
        self.due.get_or_insert(now + REPORT_INTERVAL);
        let power = power_of(level);
        if let Some(acc) = self.acc.get_mut(&channel) {
            acc.0 += power;
            acc.1 += 1;
        } else if self.acc.len() < MAX_TRACKS {
            self.acc.insert(channel, (power, 1));
        }
    }

    /// The tracks' mean levels since the last report, when a report is due.
    pub fn take_due(&mut self, now: Instant) -> Option<Vec<(ChannelId, u8)>> {
        if self.due.is_none_or(|due| now < due) {
            return None;
        }
        self.due = None;
        let report = self
            .acc
            .drain()
            .map(|(channel, (power, n))| (channel, level_of(power / f64::from(n.max(1)))))
            .collect();
        Some(report)
    }
}

/// The linear power of a level (-dBov).
fn power_of(level: u8) -> f64 {
    10f64.powf(-f64::from(level.min(127)) / 10.0)
}

/// The level (-dBov, 0..=127) of a linear power.
fn level_of(power: f64) -> u8 {
    if power <= 0.0 {
        return 127;
    }
    (-10.0 * power.log10()).round().clamp(0.0, 127.0) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_averaged_in_power_and_reported_per_interval() {
        let t0 = Instant::now();
        let mut m = LevelMeter::default();
        let (a, b) = (ChannelId(1), ChannelId(2));
        // a: half its packets at -20 dBov, half silent: 3 dB below -20.
        for i in 0..10u32 {
            let at = t0 + Duration::from_millis(u64::from(i) * 20);
            m.add(at, a, if i % 2 == 0 { 20 } else { 127 });
            m.add(at, b, 40);
            assert!(m.take_due(at).is_none(), "not due before the interval");
        }
        let mut report = m.take_due(t0 + REPORT_INTERVAL).unwrap();
        report.sort();
        assert_eq!(report, vec![(a, 23), (b, 40)]);
        // Nothing heard: nothing due, nothing reported.
        assert!(m.take_due(t0 + REPORT_INTERVAL * 3).is_none());
    }

    #[test]
    fn tracks_are_bounded() {
        let t0 = Instant::now();
        let mut m = LevelMeter::default();
        for i in 0..(MAX_TRACKS as u64 + 10) {
            m.add(t0, ChannelId(i), 30);
        }
        assert_eq!(m.take_due(t0 + REPORT_INTERVAL).unwrap().len(), MAX_TRACKS);
    }
}
