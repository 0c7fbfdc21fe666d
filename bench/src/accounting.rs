//! Receive-side accounting: loss, reordering, duplicates, jitter and added
//! latency, per stream and merged over a run.

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
}
