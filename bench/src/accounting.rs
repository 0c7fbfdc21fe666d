//! Receive-side accounting: loss, reordering, duplicates, jitter and added
//! latency, per stream and merged over a run.
//!
//! A simulcast stream reaches a viewer one layer at a time ([`LayerRuns`]):
//! the server forwards a run of one layer's packets, then switches to
//! another layer at that layer's keyframe (or stops video and resumes it
//! later). Each layer has its own probe sequence numbers, and the server
//! rewrites the RTP sequence numbers into one continuous space for the
//! viewer, with a fixed offset within a run (`docs/rewriting.md`). So a
//! received packet belongs to the run of its layer whose offset between RTP
//! and probe sequence number it shares: a retransmission or a late packet
//! finds its own run after a switch.
//!
//! Loss of such a stream is counted twice. Its headline figure is the gaps
//! in the RTP sequence numbers, as the viewer's WebRTC stack sees them: a
//! switch or a pause leaves none (the server's numbers continue), and a
//! packet lost at the end of a run, just before a switch, counts too. The
//! check is the gaps in the probe sequence numbers inside each run
//! ([`Totals::run_lost`]): they are the packets of a layer missing between
//! two packets the viewer got of it, whatever the server numbered. The two
//! agree except for losses at the ends of runs; gaps in the probes that
//! the RTP numbers do not show would mean the server skipped packets inside
//! a run (or started a new run without telling).

use hdrhistogram::Histogram;

/// Highest latency the histograms record, in microseconds (60 s).
const MAX_US: u64 = 60_000_000;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("static histogram bounds are valid")
}

/// One stream (one publisher track) as one viewer receives it.
#[derive(Debug, Clone, Default)]
pub struct StreamAccount {
    first: Option<u64>,
    highest: u64,
    received: u64,
    reordered: u64,
    duplicates: u64,
    /// Bit i set: sequence `highest - i` was received (duplicate detection).
    recent: u128,
    last_transit_ns: Option<i64>,
    /// RFC 3550 interarrival jitter, in nanoseconds.
    jitter_ns: f64,
}

impl StreamAccount {
    /// Records a packet with sequence `seq` whose one-way transit took
    /// `transit_ns` (receive time minus send time, same clock).
    pub fn on_packet(&mut self, seq: u64, transit_ns: i64) {
        let Some(first) = self.first else {
            self.first = Some(seq);
            self.highest = seq;
            self.received = 1;
            self.recent = 1;
            self.last_transit_ns = Some(transit_ns);
            return;
        };
        if seq < first {
            // Older than the first packet we saw: a late reorder from before we joined.
            self.reordered += 1;
            return;
        }
        if seq > self.highest {
            let shift = seq - self.highest;
            self.recent = if shift >= 128 {
                0
            } else {
                self.recent << shift
            };
            self.recent |= 1;
            self.highest = seq;
        } else {
            let age = self.highest - seq;
            if age < 128 && self.recent & (1 << age) != 0 {
                self.duplicates += 1;
                return;
            }
            if age < 128 {
                self.recent |= 1 << age;
            }
            self.reordered += 1;
        }
        self.received += 1;
        if let Some(last) = self.last_transit_ns {
            let d = (transit_ns - last).unsigned_abs() as f64;
            self.jitter_ns += (d - self.jitter_ns) / 16.0;
        }
        self.last_transit_ns = Some(transit_ns);
    }

    /// The highest sequence number received, if any.
    pub fn highest(&self) -> Option<u64> {
        self.first.map(|_| self.highest)
    }

    /// Packets the sequence numbers say should have arrived.
    pub fn expected(&self) -> u64 {
        self.first.map_or(0, |f| self.highest - f + 1)
    }

    pub fn received(&self) -> u64 {
        self.received
    }

    /// Packets missing (RFC 3550 cumulative loss, never negative).
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received)
    }

    pub fn reordered(&self) -> u64 {
        self.reordered
    }

    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    pub fn jitter_ms(&self) -> f64 {
        self.jitter_ns / 1e6
    }
}

/// One run of one layer as a viewer received it.
#[derive(Debug, Clone)]
struct LayerRun {
    layer: u8,
    /// RTP sequence number minus probe sequence number, the same for every
    /// packet of the run.
    offset: u64,
    /// Lowest RTP sequence number seen (orders the runs) and the highest.
    first_rtp: u64,
    newest_rtp: u64,
    /// Lowest probe sequence number seen, and whether that packet started a
    /// keyframe.
    first_seq: u64,
    keyed: bool,
    account: StreamAccount,
    /// Probes skipped by gaps that ended at a keyframe start of the run
    /// and have not arrived since.
    gaps_before_keyframes: u64,
    /// The latest such gaps (`start..end`), so that a late packet that
    /// fills one is taken off the count.
    keyframe_gaps: Vec<(u64, u64)>,
}

/// Gaps before keyframes a run remembers.
const KEYFRAME_GAPS: usize = 8;

/// How a viewer's layer changed between consecutive runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerChanges {
    pub up: u64,
    pub down: u64,
    /// A new run of the same layer: video stopped and resumed (a server
    /// pauses video when its estimate carries no layer).
    pub resumed: u64,
    /// Runs whose first packet (in probe order) was not a keyframe's first
    /// packet: that packet never arrived, or the server switched elsewhere.
    pub unkeyed: u64,
}

/// A simulcast video stream as one viewer receives it (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct LayerRuns {
    /// In order of their first arrival.
    runs: Vec<LayerRun>,
    /// The stream by its RTP sequence numbers, all runs together.
    rtp: StreamAccount,
}

impl LayerRuns {
    /// Records a packet of `layer` with the layer's probe sequence number
    /// `seq`, as it arrived with extended RTP sequence number `rtp_seq`;
    /// `keyframe_start`: it is a keyframe's first packet.
    pub fn on_packet(
        &mut self,
        layer: u8,
        seq: u64,
        rtp_seq: u64,
        keyframe_start: bool,
        transit_ns: i64,
    ) {
        let offset = rtp_seq.wrapping_sub(seq);
        let idx = match self
            .runs
            .iter()
            .rposition(|r| r.layer == layer && r.offset == offset)
        {
            Some(i) => i,
            None => {
                self.runs.push(LayerRun {
                    layer,
                    offset,
                    first_rtp: rtp_seq,
                    newest_rtp: rtp_seq,
                    first_seq: seq,
                    keyed: keyframe_start,
                    account: StreamAccount::default(),
                    gaps_before_keyframes: 0,
                    keyframe_gaps: Vec::new(),
                });
                self.runs.len() - 1
            }
        };
        let run = &mut self.runs[idx];
        if seq < run.first_seq {
            run.first_seq = seq;
            run.first_rtp = rtp_seq;
            run.keyed = keyframe_start;
        }
        run.newest_rtp = run.newest_rtp.max(rtp_seq);
        if let Some(highest) = run.account.highest().filter(|_| keyframe_start) {
            if seq > highest + 1 {
                run.gaps_before_keyframes += seq - highest - 1;
                if run.keyframe_gaps.len() == KEYFRAME_GAPS {
                    run.keyframe_gaps.remove(0);
                }
                run.keyframe_gaps.push((highest + 1, seq));
            }
        }
        let received = run.account.received();
        run.account.on_packet(seq, transit_ns);
        let late = run.account.received() > received
            && run
                .keyframe_gaps
                .iter()
                .any(|(a, b)| (*a..*b).contains(&seq));
        if late {
            run.gaps_before_keyframes = run.gaps_before_keyframes.saturating_sub(1);
        }
        self.rtp.on_packet(rtp_seq, transit_ns);
    }

    /// The layer of the run that holds the newest packet.
    pub fn current_layer(&self) -> Option<u8> {
        self.runs
            .iter()
            .max_by_key(|r| r.newest_rtp)
            .map(|r| r.layer)
    }

    /// Switches between consecutive runs, in RTP order.
    pub fn changes(&self) -> LayerChanges {
        let mut order: Vec<&LayerRun> = self.runs.iter().collect();
        order.sort_by_key(|r| r.first_rtp);
        let mut c = LayerChanges {
            unkeyed: order.iter().filter(|r| !r.keyed).count() as u64,
            ..LayerChanges::default()
        };
        for pair in order.windows(2) {
            match pair[1].layer.cmp(&pair[0].layer) {
                std::cmp::Ordering::Greater => c.up += 1,
                std::cmp::Ordering::Less => c.down += 1,
                std::cmp::Ordering::Equal => c.resumed += 1,
            }
        }
        c
    }

    /// Adds the stream's counters (by RTP sequence number) to `totals`,
    /// the loss inside runs and the changes.
    pub fn add_to(&self, totals: &mut Totals) {
        totals.add_stream(&self.rtp);
        totals.run_lost += self.runs.iter().map(|r| r.account.lost()).sum::<u64>();
        totals.gaps_before_keyframes += self
            .runs
            .iter()
            .map(|r| r.gaps_before_keyframes)
            .sum::<u64>();
        let c = self.changes();
        totals.switches_up += c.up;
        totals.switches_down += c.down;
        totals.resumed += c.resumed;
        totals.unkeyed_runs += c.unkeyed;
        if let Some(layer) = self.current_layer() {
            if let Some(n) = totals.on_layer.get_mut(usize::from(layer)) {
                *n += 1;
            }
        }
    }
}

/// Counts and histograms of a whole run (or one interval of it).
#[derive(Debug, Clone)]
pub struct Totals {
    pub sent: u64,
    pub received: u64,
    pub expected: u64,
    pub lost: u64,
    pub reordered: u64,
    pub duplicates: u64,
    pub corrupted: u64,
    pub jitter_ms_max: f64,
    /// Added latency per packet, microseconds: publisher's send to the
    /// kernel's arrival stamp at the viewer's socket.
    pub latency_us: Histogram<u64>,
    /// Publisher's send to the generator's handling of the packet,
    /// microseconds: also counts the generator's own queueing.
    pub delivered_us: Histogram<u64>,
    /// Time from the WHEP POST to the first media packet, microseconds.
    pub join_us: Histogram<u64>,
    pub sessions_up: u64,
    pub session_failures: u64,
    /// Packets received that carry no probe and are not checked (Opus that
    /// the server transcoded from an RTMP encoder's AAC, SPS/PPS): egress,
    /// but no loss or latency accounting.
    pub unchecked: u64,
    /// Simulcast: layer switches the viewers saw, up and down ([`LayerRuns`]).
    pub switches_up: u64,
    pub switches_down: u64,
    /// Simulcast: runs of the layer that ran before (video resumed).
    pub resumed: u64,
    /// Simulcast: runs whose first packet was no keyframe start.
    pub unkeyed_runs: u64,
    /// Simulcast: probes missing inside layer runs (the check on `lost`,
    /// see the module docs).
    pub run_lost: u64,
    /// Simulcast: probes skipped by gaps inside a run that end at a
    /// keyframe's first packet: what a server that stopped a layer and
    /// resumed it at a keyframe without a new run of sequence numbers
    /// leaves (or loss just before a keyframe).
    pub gaps_before_keyframes: u64,
    /// Simulcast: viewers' streams whose newest packet is of layer i.
    pub on_layer: [u64; 4],
    /// Keyframes the publishers sent because the server asked for them.
    pub requested_keyframes: u64,
    /// Datagrams the viewers' capped links dropped (`--viewer-cap`).
    pub cap_dropped: u64,
    /// Bytes of the datagrams that arrived at viewers' sockets (UDP
    /// payload; before a cap).
    pub viewer_rx_bytes: u64,
}

impl Default for Totals {
    fn default() -> Self {
        Totals {
            sent: 0,
            received: 0,
            expected: 0,
            lost: 0,
            reordered: 0,
            duplicates: 0,
            corrupted: 0,
            jitter_ms_max: 0.0,
            latency_us: histogram(),
            delivered_us: histogram(),
            join_us: histogram(),
            sessions_up: 0,
            session_failures: 0,
            unchecked: 0,
            switches_up: 0,
            switches_down: 0,
            resumed: 0,
            unkeyed_runs: 0,
            run_lost: 0,
            gaps_before_keyframes: 0,
            on_layer: [0; 4],
            requested_keyframes: 0,
            cap_dropped: 0,
            viewer_rx_bytes: 0,
        }
    }
}

impl Totals {
    pub fn record_latency(&mut self, micros: u64) {
        let _ = self.latency_us.record(micros.clamp(1, MAX_US));
    }

    pub fn record_delivered(&mut self, micros: u64) {
        let _ = self.delivered_us.record(micros.clamp(1, MAX_US));
    }

    pub fn record_join(&mut self, micros: u64) {
        let _ = self.join_us.record(micros.clamp(1, MAX_US));
    }

    /// Adds a stream's counters (call once per stream, at the end of a period).
    pub fn add_stream(&mut self, s: &StreamAccount) {
        self.expected += s.expected();
        self.received += s.received();
        self.lost += s.lost();
        self.reordered += s.reordered();
        self.duplicates += s.duplicates();
        self.jitter_ms_max = self.jitter_ms_max.max(s.jitter_ms());
    }

    /// Adds another's counters and histograms.
    pub fn merge(&mut self, other: &Totals) {
        self.merge_counts(other);
        let _ = self.latency_us.add(&other.latency_us);
        let _ = self.delivered_us.add(&other.delivered_us);
        let _ = self.join_us.add(&other.join_us);
    }

    /// Adds another's counters, leaving the histograms alone.
    pub fn merge_counts(&mut self, other: &Totals) {
        self.sent += other.sent;
        self.received += other.received;
        self.expected += other.expected;
        self.lost += other.lost;
        self.reordered += other.reordered;
        self.duplicates += other.duplicates;
        self.corrupted += other.corrupted;
        self.jitter_ms_max = self.jitter_ms_max.max(other.jitter_ms_max);
        self.sessions_up += other.sessions_up;
        self.session_failures += other.session_failures;
        self.unchecked += other.unchecked;
        self.switches_up += other.switches_up;
        self.switches_down += other.switches_down;
        self.resumed += other.resumed;
        self.unkeyed_runs += other.unkeyed_runs;
        self.run_lost += other.run_lost;
        self.gaps_before_keyframes += other.gaps_before_keyframes;
        for (a, b) in self.on_layer.iter_mut().zip(other.on_layer) {
            *a += b;
        }
        self.requested_keyframes += other.requested_keyframes;
        self.cap_dropped += other.cap_dropped;
        self.viewer_rx_bytes += other.viewer_rx_bytes;
    }

    /// Lost over expected, 0 when nothing was expected.
    pub fn loss(&self) -> f64 {
        if self.expected == 0 {
            0.0
        } else {
            self.lost as f64 / self.expected as f64
        }
    }

    pub fn latency_ms(&self, quantile: f64) -> f64 {
        if self.latency_us.is_empty() {
            return 0.0;
        }
        self.latency_us.value_at_quantile(quantile) as f64 / 1000.0
    }

    pub fn delivered_ms(&self, quantile: f64) -> f64 {
        if self.delivered_us.is_empty() {
            return 0.0;
        }
        self.delivered_us.value_at_quantile(quantile) as f64 / 1000.0
    }

    pub fn join_ms(&self, quantile: f64) -> f64 {
        if self.join_us.is_empty() {
            return 0.0;
        }
        self.join_us.value_at_quantile(quantile) as f64 / 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_stream_has_no_loss() {
        let mut s = StreamAccount::default();
        for seq in 100..200 {
            s.on_packet(seq, 1_000_000);
        }
        assert_eq!((s.expected(), s.received(), s.lost()), (100, 100, 0));
        assert_eq!(s.reordered(), 0);
        assert_eq!(s.jitter_ms(), 0.0);
    }

    #[test]
    fn gaps_count_as_loss_and_late_packets_as_reordered() {
        let mut s = StreamAccount::default();
        for seq in [1, 2, 4, 5, 3, 7] {
            s.on_packet(seq, 0);
        }
        assert_eq!(s.expected(), 7);
        assert_eq!(s.received(), 6);
        assert_eq!(s.lost(), 1); // 6 is missing
        assert_eq!(s.reordered(), 1); // 3 came after 5
    }

    #[test]
    fn duplicates_are_not_received_twice() {
        let mut s = StreamAccount::default();
        for seq in [1, 2, 2, 3, 1] {
            s.on_packet(seq, 0);
        }
        assert_eq!(s.received(), 3);
        assert_eq!(s.duplicates(), 2);
        assert_eq!(s.lost(), 0);
    }

    #[test]
    fn jitter_follows_rfc3550() {
        let mut s = StreamAccount::default();
        s.on_packet(1, 0);
        s.on_packet(2, 16_000_000); // transit grew by 16 ms
        assert!((s.jitter_ms() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn totals_merge_and_quantiles() {
        let mut a = Totals::default();
        for us in 1..=100 {
            a.record_latency(us * 10);
        }
        let mut s = StreamAccount::default();
        for seq in [1, 3] {
            s.on_packet(seq, 0);
        }
        a.add_stream(&s);
        let mut b = Totals::default();
        b.merge(&a);
        b.merge(&a);
        assert_eq!(b.latency_us.len(), 200);
        assert!((b.latency_ms(0.5) - 0.5).abs() < 0.01);
        assert_eq!(b.lost, 2);
        assert!((b.loss() - 2.0 / 6.0).abs() < 1e-9);
    }

    /// Feeds a layer's packets `seqs` (probe sequence numbers) to `runs`,
    /// each with the next RTP sequence number from `rtp`, the first of the
    /// run a keyframe start.
    fn forward(runs: &mut LayerRuns, rtp: &mut u64, layer: u8, seqs: std::ops::Range<u64>) {
        let first = seqs.start;
        for seq in seqs {
            runs.on_packet(layer, seq, *rtp, seq == first, 0);
            *rtp += 1;
        }
    }

    #[test]
    fn a_switch_is_not_loss() {
        let mut runs = LayerRuns::default();
        let mut rtp = 5000;
        // Layer 2 packets 0..100, then the server switches to layer 0 at
        // its keyframe (its own sequence numbers, 40..), then back up.
        forward(&mut runs, &mut rtp, 2, 0..100);
        forward(&mut runs, &mut rtp, 0, 40..60);
        forward(&mut runs, &mut rtp, 2, 180..200);
        let mut t = Totals::default();
        runs.add_to(&mut t);
        assert_eq!(
            (t.expected, t.received, t.lost, t.run_lost),
            (140, 140, 0, 0)
        );
        assert_eq!((t.switches_up, t.switches_down, t.resumed), (1, 1, 0));
        assert_eq!(t.unkeyed_runs, 0);
        assert_eq!(t.on_layer, [0, 0, 1, 0]);
        assert_eq!(runs.current_layer(), Some(2));
    }

    #[test]
    fn gaps_inside_a_run_are_loss_and_late_packets_find_their_run() {
        let mut runs = LayerRuns::default();
        // Layer 1: 0..10 arrive as RTP 100..110 but 7 is lost on the link
        // (its RTP number 107 skipped), then a switch to layer 0 (RTP 110..).
        for seq in (0..10).filter(|s| *s != 7) {
            runs.on_packet(1, seq, 100 + seq, seq == 0, 0);
        }
        for seq in 0..5 {
            runs.on_packet(0, 300 + seq, 110 + seq, seq == 0, 0);
        }
        let mut t = Totals::default();
        runs.add_to(&mut t);
        assert_eq!((t.lost, t.run_lost), (1, 1));
        assert_eq!(t.switches_down, 1);
        // The retransmission of 7 arrives after the switch: it fills its own
        // run's gap and is no switch back up.
        runs.on_packet(1, 7, 107, false, 0);
        let mut t = Totals::default();
        runs.add_to(&mut t);
        assert_eq!((t.lost, t.run_lost, t.reordered), (0, 0, 1));
        assert_eq!((t.switches_up, t.switches_down), (0, 1));
        assert_eq!(runs.current_layer(), Some(0));
    }

    #[test]
    fn a_run_s_lost_tail_is_loss_by_rtp_numbers_only() {
        let mut runs = LayerRuns::default();
        // Layer 2 packets 0..10 as RTP 50..60, of which the last three
        // never arrive; the switch to layer 0 follows at RTP 60.
        for seq in 0..7 {
            runs.on_packet(2, seq, 50 + seq, seq == 0, 0);
        }
        for seq in 0..4 {
            runs.on_packet(0, 20 + seq, 60 + seq, seq == 0, 0);
        }
        let mut t = Totals::default();
        runs.add_to(&mut t);
        assert_eq!((t.expected, t.received, t.lost), (14, 11, 3));
        assert_eq!(t.run_lost, 0, "no gap between two packets of a run");
        assert_eq!(t.switches_down, 1);
    }

    #[test]
    fn a_pause_then_the_same_layer_again_is_a_resume_not_loss() {
        let mut runs = LayerRuns::default();
        let mut rtp = 0;
        forward(&mut runs, &mut rtp, 0, 0..50);
        // Video stopped for 300 packets of the layer, then resumed at its
        // keyframe: the RTP numbers continue, the probe numbers jump.
        forward(&mut runs, &mut rtp, 0, 350..400);
        let mut t = Totals::default();
        runs.add_to(&mut t);
        assert_eq!(
            (t.lost, t.resumed, t.switches_up, t.switches_down),
            (0, 1, 0, 0)
        );
        assert_eq!(t.on_layer, [1, 0, 0, 0]);
    }

    #[test]
    fn a_layer_stopped_and_resumed_without_a_new_run_leaves_a_gap() {
        let mut runs = LayerRuns::default();
        // Layer 2 flows (RTP 0..50), stops for 100 packets and resumes at
        // its keyframe, but its RTP numbers keep the run's offset: the
        // viewer sees a gap of 100 in both numberings.
        for seq in 0..50 {
            runs.on_packet(2, seq, seq, seq == 0, 0);
        }
        for seq in 150..160 {
            runs.on_packet(2, seq, seq, seq == 150, 0);
        }
        let mut t = Totals::default();
        runs.add_to(&mut t);
        assert_eq!(
            (t.lost, t.run_lost, t.gaps_before_keyframes),
            (100, 100, 100)
        );
        assert_eq!(t.resumed, 0, "not a new run");
        // A gap that ends at a delta frame is not one of them.
        runs.on_packet(2, 170, 170, false, 0);
        let mut t = Totals::default();
        runs.add_to(&mut t);
        assert_eq!((t.lost, t.gaps_before_keyframes), (110, 100));
        // A retransmission that fills one (once) is taken off.
        runs.on_packet(2, 120, 120, false, 0);
        runs.on_packet(2, 120, 120, false, 0);
        let mut t = Totals::default();
        runs.add_to(&mut t);
        assert_eq!((t.lost, t.gaps_before_keyframes), (109, 99));
    }

    #[test]
    fn a_run_without_its_keyframe_start_is_counted() {
        let mut runs = LayerRuns::default();
        runs.on_packet(2, 10, 1000, false, 0);
        runs.on_packet(2, 11, 1001, false, 0);
        // Its keyframe start arrives late: the run did start keyed.
        runs.on_packet(2, 9, 999, true, 0);
        assert_eq!(runs.changes().unkeyed, 0);
        runs.on_packet(0, 50, 1002, false, 0);
        assert_eq!(runs.changes().unkeyed, 1);
        assert_eq!(runs.changes().down, 1);
    }
}
