//! Sequence number and timestamp rewriting toward one subscriber.
//!
//! A subscriber's outgoing RTP stream must look like one continuous stream even
//! when the publisher behind it changes (a WHIP publisher replaced by the next
//! one). The rewriter keeps an offset per source: the first source passes
//! through unchanged, and each later source is shifted so that its first packet
//! follows the last packet sent (sequence + 1, timestamp + the wall time that
//! passed, in the codec's clock). `docs/rewriting.md` walks through an example.

use std::time::Instant;

use crate::ChannelId;

/// Outgoing header values for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    pub seq: u64,
    pub rtp_time: u32,
}

#[derive(Debug, Clone, Copy)]
struct LastSent {
    seq: u64,
    rtp_time: u32,
    at: Instant,
}

/// Keeps one outgoing stream continuous across source changes.
#[derive(Debug)]
pub struct Rewriter {
    clock_rate: u32,
    source: Option<ChannelId>,
    seq_offset: i64,
    ts_offset: u32,
    last: Option<LastSent>,
}

impl Rewriter {
    /// A rewriter for a stream whose codec clock runs at `clock_rate` Hz.
    pub fn new(clock_rate: u32) -> Rewriter {
        Rewriter {
            clock_rate: clock_rate.max(1),
            source: None,
            seq_offset: 0,
            ts_offset: 0,
            last: None,
        }
    }

    /// The source the last packet came from.
    pub fn source(&self) -> Option<ChannelId> {
        self.source
    }

    /// Rewrites one packet from `source`.
    ///
    /// Returns `None` for a packet that would land before the start of its
    /// source's run (a late packet from before a switch), which must be dropped.
    pub fn rewrite(
        &mut self,
        source: ChannelId,
        seq: u64,
        rtp_time: u32,
        arrival: Instant,
    ) -> Option<Rewritten> {
        if self.source != Some(source) {
            self.switch_to(source, seq, rtp_time, arrival);
        }
        let out_seq = u64::try_from(seq as i64 + self.seq_offset).ok()?;
        let out_ts = rtp_time.wrapping_add(self.ts_offset);
        let newest = self.last.is_none_or(|l| out_seq > l.seq);
        if newest {
            self.last = Some(LastSent {
                seq: out_seq,
                rtp_time: out_ts,
                at: arrival,
            });
        }
        Some(Rewritten {
            seq: out_seq,
            rtp_time: out_ts,
        })
    }

    fn switch_to(&mut self, source: ChannelId, seq: u64, rtp_time: u32, arrival: Instant) {
        self.source = Some(source);
        let Some(last) = self.last else {
            self.seq_offset = 0;
            self.ts_offset = 0;
            return;
        };
        let next_seq = last.seq + 1;
        let elapsed = arrival.saturating_duration_since(last.at);
        let ticks = (elapsed.as_secs_f64() * f64::from(self.clock_rate)) as u64;
        let next_ts = last.rtp_time.wrapping_add(ticks.max(1) as u32);
        self.seq_offset = next_seq as i64 - seq as i64;
        self.ts_offset = next_ts.wrapping_sub(rtp_time);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const A: ChannelId = ChannelId(1);
    const B: ChannelId = ChannelId(2);

    #[test]
    fn first_source_passes_through() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(90_000);
        for i in 0..10u64 {
            let out = r.rewrite(A, 1000 + i, 5000 + i as u32 * 3000, t0).unwrap();
            assert_eq!(out.seq, 1000 + i);
            assert_eq!(out.rtp_time, 5000 + i as u32 * 3000);
        }
    }

    #[test]
    fn switch_continues_sequence_and_time() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(90_000);
        r.rewrite(A, 100, 9000, t0).unwrap();
        let last = r.rewrite(A, 101, 12000, t0).unwrap();
        // 100 ms later a new publisher starts at an unrelated place.
        let t1 = t0 + Duration::from_millis(100);
        let first = r.rewrite(B, 50_000, 4_000_000_000, t1).unwrap();
        assert_eq!(first.seq, last.seq + 1);
        assert_eq!(first.rtp_time, last.rtp_time + 9000);
        let second = r.rewrite(B, 50_001, 4_000_003_000, t1).unwrap();
        assert_eq!(second.seq, first.seq + 1);
        assert_eq!(second.rtp_time, first.rtp_time + 3000);
    }

    #[test]
    fn timestamp_wraps_like_rtp() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(48_000);
        r.rewrite(A, 1, u32::MAX - 10, t0).unwrap();
        let out = r.rewrite(A, 2, 950, t0).unwrap();
        assert_eq!(out.rtp_time, 950);
        let t1 = t0 + Duration::from_millis(20);
        let b = r.rewrite(B, 7, 0, t1).unwrap();
        assert_eq!(b.rtp_time, 950 + 960);
        assert_eq!(b.seq, 3);
    }

    #[test]
    fn reordered_packets_keep_their_order_and_late_ones_drop() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(90_000);
        r.rewrite(A, 10, 0, t0).unwrap();
        let b0 = r.rewrite(B, 500, 0, t0).unwrap();
        assert_eq!(b0.seq, 11);
        // A reordered packet of B from just before its first one.
        let early = r.rewrite(B, 499, 0, t0).unwrap();
        assert_eq!(early.seq, 10);
        // One far before the start of B cannot be represented.
        let mut r2 = Rewriter::new(90_000);
        r2.rewrite(A, 0, 0, t0).unwrap();
        r2.rewrite(B, 5000, 0, t0).unwrap();
        assert_eq!(r2.rewrite(B, 10, 0, t0), None);
    }

    #[test]
    fn zero_elapsed_time_still_advances_the_clock() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(90_000);
        let a = r.rewrite(A, 1, 100, t0).unwrap();
        let b = r.rewrite(B, 1, 100, t0).unwrap();
        assert!(b.rtp_time > a.rtp_time);
    }
}
