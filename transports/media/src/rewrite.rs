//! Sequence number and timestamp rewriting toward one subscriber.
//!
//! Every subscriber's outgoing RTP stream has a sequence space of its own:
//! it starts at a value the caller picks (random, below 2^15) and stays
//! continuous, whatever the sources behind it do. Its extended value (the
//! upper bits are the SRTP rollover counter of the subscriber's leg) starts
//! at ROC 0, as every receiver expects, even when the source has already
//! wrapped its own sequence numbers many times.
//!
//! The rewriter keeps an offset per source: the first packet of each source
//! (the first, or the next one after a switch) follows the last packet sent
//! (sequence + 1, timestamp + the wall time that passed, in the codec's
//! clock). A packet of the current source older than its first forwarded
//! packet (reordered across the start) is dropped: its sequence number
//! would collide with one already sent. `docs/rewriting.md` walks through
//! an example.
//!
//! Within a run the caller may leave packets out (a temporal or spatial
//! layer the subscriber does not get): [`Rewriter::skip`] takes each one's
//! number out of the outgoing sequence, so the packets after it close the
//! gap and the subscriber sees no loss. Only packets newer than every one
//! seen can be skipped; a reordered older packet left out leaves a hole
//! (its number was already counted by the packets after it).

use std::collections::VecDeque;
use std::time::Instant;

use crate::ChannelId;

/// How far behind the start of a run a packet may arrive and still count
/// as reordered (dropped) rather than a restart of its source.
pub const REORDER_WINDOW: u64 = 1 << 12;

/// A forward jump of a source's sequence numbers beyond this is a restart
/// of the source, not loss.
pub const MAX_JUMP: u64 = 1 << 15;

/// Outgoing header values for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    /// Extended sequence number in the subscriber's own space.
    pub seq: u64,
    pub rtp_time: u32,
}

#[derive(Debug, Clone, Copy)]
struct LastSent {
    seq: u64,
    rtp_time: u32,
    at: Instant,
}

/// The current source and how its packets map onto the outgoing stream.
#[derive(Debug, Clone, Copy)]
struct Run {
    source: ChannelId,
    /// Extended sequence number of the source's first forwarded packet.
    first_in: u64,
    /// Outgoing sequence number of that packet.
    first_out: u64,
    ts_offset: u32,
    /// The newest extended sequence number of the source seen in this run,
    /// forwarded or skipped.
    newest_in: u64,
}

/// Packets of the current run that were left out, so that the ones after
/// them close the gap.
#[derive(Debug, Default)]
struct Skipped {
    /// Skipped packets older than the reorder window: every packet still
    /// accepted comes after them.
    folded: u64,
    /// Skipped sequence numbers within the reorder window, ascending.
    recent: VecDeque<u64>,
}

impl Skipped {
    /// Skipped packets numbered below `seq`.
    fn before(&self, seq: u64) -> u64 {
        self.folded + self.recent.partition_point(|s| *s < seq) as u64
    }
}

/// Keeps one outgoing stream continuous across source changes.
#[derive(Debug)]
pub struct Rewriter {
    clock_rate: u32,
    first_seq: u64,
    run: Option<Run>,
    last: Option<LastSent>,
    skipped: Skipped,
}

impl Rewriter {
    /// A rewriter for a stream whose codec clock runs at `clock_rate` Hz and
    /// whose first outgoing packet gets sequence number `first_seq`.
    ///
    /// Pick `first_seq` at random below 2^15 (RFC 3550 asks for a random
    /// start; below 2^15 leaves a receiver that probes the start ample room
    /// before the first wrap).
    pub fn new(clock_rate: u32, first_seq: u16) -> Rewriter {
        Rewriter {
            clock_rate: clock_rate.max(1),
            first_seq: u64::from(first_seq),
            run: None,
            last: None,
            skipped: Skipped::default(),
        }
    }

    /// The source the current run of packets comes from.
    pub fn source(&self) -> Option<ChannelId> {
        self.run.map(|r| r.source)
    }

    /// Ends the current run: the next packet starts a new one that follows
    /// the last packet sent, even from the same source (a layer resumed
    /// after a pause: the packets it skipped are not a gap to the viewer).
    pub fn break_run(&mut self) {
        self.run = None;
    }

    /// Whether a packet from `source` with extended sequence number `seq`
    /// would start a new run: the first packet, a switch to another source,
    /// or a discontinuity of the current source (a jump of more than
    /// `MAX_JUMP` forward, or back past the reorder window, as when the
    /// source restarts its sequence numbers). A video subscriber must start
    /// a run only at a keyframe.
    pub fn starts_run(&self, source: ChannelId, seq: u64) -> bool {
        let Some(run) = self.run else {
            return true;
        };
        if run.source != source {
            return true;
        }
        seq.saturating_add(REORDER_WINDOW) < run.first_in
            || seq > run.newest_in.saturating_add(MAX_JUMP)
    }

    /// Leaves out the packet of `source` numbered `seq` (the source's
    /// extended sequence number): the packets after it are numbered as if
    /// it never existed. Nothing happens for a packet that is not of the
    /// current run, would start a new one, or is older than the newest
    /// packet seen (then the hole stays: its number is taken).
    pub fn skip(&mut self, source: ChannelId, seq: u64) {
        if self.starts_run(source, seq) {
            return;
        }
        let Some(run) = self.run.as_mut() else {
            return;
        };
        if seq <= run.newest_in {
            return;
        }
        run.newest_in = seq;
        let skipped = &mut self.skipped;
        skipped.recent.push_back(seq);
        while skipped
            .recent
            .front()
            .is_some_and(|s| s.saturating_add(REORDER_WINDOW) < seq)
        {
            skipped.recent.pop_front();
            skipped.folded += 1;
        }
    }

    /// Rewrites one packet from `source` (`seq` is the source's extended
    /// sequence number).
    ///
    /// A packet for which [`Rewriter::starts_run`] holds starts a new run.
    /// Returns `None` for a packet of the current run that is older than the
    /// run's first packet (reordered across its start), which must be
    /// dropped.
    pub fn rewrite(
        &mut self,
        source: ChannelId,
        seq: u64,
        rtp_time: u32,
        arrival: Instant,
    ) -> Option<Rewritten> {
        let run = match self.run {
            Some(run) if !self.starts_run(source, seq) => run,
            _ => self.start_run(source, seq, rtp_time, arrival),
        };
        // Older than the run's start: its number is taken (or would be).
        let ahead = seq.checked_sub(run.first_in)?;
        if seq.saturating_add(REORDER_WINDOW) < run.newest_in {
            // Older than the skips remembered: its number is unknown.
            return None;
        }
        let out_seq = run
            .first_out
            .checked_add(ahead)?
            .checked_sub(self.skipped.before(seq))?;
        if let Some(r) = self.run.as_mut() {
            r.newest_in = r.newest_in.max(seq);
        }
        let out_ts = rtp_time.wrapping_add(run.ts_offset);
        if self.last.is_none_or(|l| out_seq > l.seq) {
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

    fn start_run(&mut self, source: ChannelId, seq: u64, rtp_time: u32, arrival: Instant) -> Run {
        let run = match self.last {
            None => Run {
                source,
                first_in: seq,
                first_out: self.first_seq,
                // The first source's timestamps pass through: nothing was
                // sent that they must continue.
                ts_offset: 0,
                newest_in: seq,
            },
            Some(last) => {
                let elapsed = arrival.saturating_duration_since(last.at);
                let ticks = (elapsed.as_secs_f64() * f64::from(self.clock_rate)) as u64;
                let next_ts = last.rtp_time.wrapping_add(ticks.clamp(1, 1 << 31) as u32);
                Run {
                    source,
                    first_in: seq,
                    first_out: last.seq.saturating_add(1),
                    ts_offset: next_ts.wrapping_sub(rtp_time),
                    newest_in: seq,
                }
            }
        };
        self.run = Some(run);
        self.skipped = Skipped::default();
        run
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_space_is_the_subscribers_own() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(90_000, 1234);
        // A source that has wrapped three times already.
        let src = 3 * 65_536 + 65_500;
        let a = r.rewrite(ChannelId(1), src, 10, t0).unwrap();
        assert_eq!(a.seq, 1234);
        assert_eq!(a.rtp_time, 10);
        // Across the source's own wrap the output stays continuous.
        for i in 1..100u64 {
            let out = r.rewrite(ChannelId(1), src + i, 10, t0).unwrap();
            assert_eq!(out.seq, 1234 + i);
        }
    }

    #[test]
    fn output_counts_past_two_to_the_seventeen() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(48_000, 30_000);
        let mut last = 0;
        for i in 0..140_000u64 {
            last = r.rewrite(ChannelId(1), 7 + i, 0, t0).unwrap().seq;
        }
        assert_eq!(last, 30_000 + 139_999);
        assert!(last > 1 << 17);
    }

    #[test]
    fn skipped_packets_leave_no_gap() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(90_000, 100);
        let src = ChannelId(1);
        assert_eq!(r.rewrite(src, 1000, 0, t0).unwrap().seq, 100);
        // 1001 and 1002 belong to a layer the subscriber does not get.
        r.skip(src, 1001);
        r.skip(src, 1002);
        assert_eq!(r.rewrite(src, 1003, 0, t0).unwrap().seq, 101);
        r.skip(src, 1004);
        assert_eq!(r.rewrite(src, 1005, 0, t0).unwrap().seq, 102);
        // A forwarded packet that arrives late keeps its own place.
        assert_eq!(r.rewrite(src, 1000, 0, t0).unwrap().seq, 100);
        assert_eq!(r.rewrite(src, 1003, 0, t0).unwrap().seq, 101);
        // A late packet cannot be skipped any more: the hole stays.
        r.skip(src, 1006);
        r.skip(src, 1004);
        assert_eq!(r.rewrite(src, 1007, 0, t0).unwrap().seq, 103);
        // Another source's packets are not this run's.
        r.skip(ChannelId(2), 1008);
        assert_eq!(r.rewrite(src, 1008, 0, t0).unwrap().seq, 104);
        // A new run forgets the skips of the last one.
        r.break_run();
        assert_eq!(r.rewrite(src, 5000, 0, t0).unwrap().seq, 105);
        assert_eq!(r.rewrite(src, 5001, 0, t0).unwrap().seq, 106);
    }

    #[test]
    fn skips_older_than_the_window_still_count() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(90_000, 0);
        let src = ChannelId(1);
        r.rewrite(src, 0, 0, t0).unwrap();
        // Every other packet left out, far past the reorder window.
        let n = 3 * REORDER_WINDOW;
        for i in 1..n {
            if i % 2 == 1 {
                r.skip(src, i);
            } else {
                assert_eq!(r.rewrite(src, i, 0, t0).unwrap().seq, i / 2);
            }
        }
        assert!(r.skipped.recent.len() as u64 <= REORDER_WINDOW);
        // A packet older than the remembered skips is refused.
        assert_eq!(r.rewrite(src, 2, 0, t0), None);
    }

    #[test]
    fn a_broken_run_resumes_the_same_source_without_a_gap() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(90_000, 500);
        for i in 0..10u64 {
            r.rewrite(ChannelId(1), 100 + i, 0, t0).unwrap();
        }
        // The source went on (seq 110..299) while nothing was forwarded.
        r.break_run();
        assert!(r.starts_run(ChannelId(1), 300));
        assert_eq!(r.rewrite(ChannelId(1), 300, 0, t0).unwrap().seq, 510);
        assert_eq!(r.rewrite(ChannelId(1), 301, 0, t0).unwrap().seq, 511);
    }

    #[test]
    fn a_source_that_restarts_its_numbers_starts_a_new_run() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(90_000, 100);
        for i in 0..50u64 {
            r.rewrite(ChannelId(1), 70_000 + i, 0, t0).unwrap();
        }
        // Reordered by a little: dropped, not a restart.
        assert!(!r.starts_run(ChannelId(1), 69_990));
        assert_eq!(r.rewrite(ChannelId(1), 69_990, 0, t0), None);
        // Far back: the source restarted; its first packet follows on.
        assert!(r.starts_run(ChannelId(1), 5));
        assert_eq!(r.rewrite(ChannelId(1), 5, 0, t0).unwrap().seq, 150);
        // Far forward: the same.
        assert!(r.starts_run(ChannelId(1), 5 + MAX_JUMP + 1));
        assert!(!r.starts_run(ChannelId(1), 5 + 100));
        assert_eq!(r.rewrite(ChannelId(1), 5 + 100, 0, t0).unwrap().seq, 250);
    }
}
