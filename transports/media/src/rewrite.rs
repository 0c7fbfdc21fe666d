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
