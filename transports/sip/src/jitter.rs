//! The jitter buffer in front of a phone's incoming RTP audio.
//!
//! Packets go in with their 16-bit sequence number, RTP timestamp, arrival
//! time and payload ([`JitterBuffer::push`]); frames come out at their playout
//! times ([`JitterBuffer::poll`] with the current time, until it returns
//! `None`; [`JitterBuffer::poll_timeout`] says when to poll next). Every
//! period of the stream comes out exactly once, either as the packet that
//! carries it or as [`Playout::Missing`], for the caller to conceal or fill
//! with silence; the output is therefore as steady as the clock that polls it.
//!
//! # The model
//!
//! - **Schedule.** The first packet fixes the mapping from RTP time to local
//!   time: it plays [`JitterConfig::target_delay`] after it arrived, and a
//!   packet with a timestamp `Δ` later plays `Δ / clock_rate` after it. The
//!   mapping is fixed (no adaptation to clock drift), so jitter up to the
//!   target delay is absorbed; a packet that comes later than its slot is
//!   dropped. Before the first frame has played, an earlier packet (the
//!   first two reordered) moves the start back.
//! - **Order.** Packets are held sorted by extended sequence number. At each
//!   slot the oldest one plays if its timestamp has come; otherwise the slot
//!   is [`Playout::Missing`], as long as one packet (learned from consecutive
//!   packets, [`JitterConfig::packet_time`] until then) or up to the next
//!   held packet's timestamp, whichever is shorter. Sequence numbers are only
//!   used up by packets that play, so silence suppression (timestamps that
//!   jump while sequence numbers do not) gives missing slots, not losses.
//! - **Dropped.** A packet whose sequence number has played or been passed, or
//!   whose slot has begun, is [`Arrival::Duplicate`] when that number played
//!   or is already held (a bitmap of the last 64 played numbers remembers),
//!   and [`Arrival::Late`] otherwise.
//! - **Restart.** A packet whose sequence number is more than 3 000 ahead or
//!   100 behind the highest one (RFC 3550's limits), or whose timestamp is
//!   more than [`JitterConfig::max_jump`] away from the one the schedule
//!   expects at its arrival, is held as [`Arrival::Suspect`]. If the next
//!   packet follows it (the next sequence number), the stream restarted: the
//!   held packets are dropped and the schedule starts again at the suspect
//!   ([`Arrival::Restarted`]). Otherwise the suspect is dropped as a stray.
//! - **Bounded.** At most [`JitterConfig::capacity`] packets are held (plus
//!   one suspect). Beyond it the oldest is dropped and the schedule moves
//!   forward by its duration, which shortens the delay instead of playing it
//!   late.
//!
//! # Counters ([`JitterStats`])
//!
//! `lost` counts the sequence numbers that were passed without playing
//! (never arrived, or arrived late: late packets are counted in both `late`
//! and `lost`); `concealed` counts the [`Playout::Missing`] slots.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How far ahead of the highest sequence number a packet may be before it is
/// a suspected restart (RFC 3550, appendix A.1, `MAX_DROPOUT`).
const MAX_DROPOUT: i64 = 3_000;
/// How far behind the highest sequence number a packet may be before it is a
/// suspected restart (RFC 3550, appendix A.1, `MAX_MISORDER`).
const MAX_MISORDER: i64 = 100;
/// The longest packet whose duration is learned: 120 ms (the most RFC 3551
/// and RFC 7587 allow for common audio).
const MAX_PACKET_TIME: Duration = Duration::from_millis(120);
/// How many played sequence numbers the duplicate bitmap remembers.
const PLAYED_HISTORY: i64 = 64;

/// How a [`JitterBuffer`] plays out.
#[derive(Debug, Clone, PartialEq)]
pub struct JitterConfig {
    /// The RTP clock rate, in Hz. Default 8 000 (G.711). 0 counts as 8 000.
    pub clock_rate: u32,
    /// How long a packet lasts until two consecutive packets tell. Default
    /// 20 ms.
    pub packet_time: Duration,
    /// How long after its arrival the first packet plays: the jitter the
    /// buffer absorbs. Default 60 ms.
    pub target_delay: Duration,
    /// The most packets held. Default 50 (a second of 20 ms packets);
    /// 0 counts as 1.
    pub capacity: usize,
    /// A timestamp this far from where the schedule expects it is a suspected
    /// restart. Default 3 s.
    pub max_jump: Duration,
}

impl Default for JitterConfig {
    fn default() -> Self {
        JitterConfig {
            clock_rate: crate::g711::SAMPLE_RATE,
            packet_time: Duration::from_millis(20),
            target_delay: Duration::from_millis(60),
            capacity: 50,
            max_jump: Duration::from_secs(3),
        }
    }
}

/// What [`JitterBuffer::push`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Held until its slot.
    Buffered,
    /// Dropped: that sequence number is held or has played.
    Duplicate,
    /// Dropped: its slot has begun or passed.
    Late,
    /// Held aside as a possible restart; the next packet decides.
    Suspect,
    /// The stream restarted at the suspect before this packet; both are held
    /// and the schedule starts again.
    Restarted,
}

/// One period of the stream, in playout order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    /// The packet of this period.
    Frame(Frame),
    /// No packet for this period: conceal or play silence for `samples`
    /// samples (at the RTP clock rate) starting at `timestamp`.
    Missing { timestamp: u32, samples: u32 },
}

/// A packet that plays now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The RTP sequence number as sent.
    pub seq: u16,
    /// The RTP timestamp as sent.
    pub timestamp: u32,
    /// The RTP payload.
    pub payload: Arc<[u8]>,
}

/// What a [`JitterBuffer`] has counted since it was made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets dropped because their slot had begun.
    pub late: u64,
    /// Packets dropped because their sequence number was held or had played.
    pub duplicates: u64,
    /// Sequence numbers passed without playing (late ones included).
    pub lost: u64,
    /// [`Playout::Missing`] slots given out.
    pub concealed: u64,
    /// Packets dropped because the buffer was full.
    pub overflow: u64,
    /// Restarts of the stream.
    pub restarts: u64,
    /// Suspects that turned out not to be a restart.
    pub strays: u64,
}

/// A held packet, with its extended numbers.
#[derive(Debug, Clone)]
struct Held {
    seq: i64,
    ts: i64,
    payload: Arc<[u8]>,
}

/// A packet held aside as a possible restart.
#[derive(Debug, Clone)]
struct Suspect {
    arrival: Instant,
    seq: u16,
    ts: u32,
    payload: Arc<[u8]>,
}

/// The mapping from RTP time to local time, and where playout stands.
#[derive(Debug, Clone)]
struct Schedule {
    /// The extended timestamp that plays at `anchor_time`.
    anchor_ts: i64,
    anchor_time: Instant,
    /// The extended timestamp of the next slot.
    next_ts: i64,
    /// Whether a slot has been given out since the schedule began.
    started: bool,
    /// The highest extended sequence number accepted, the reference for
    /// extending the next one.
    highest_seq: i64,
    /// The last sequence number used up (played or dropped for overflow).
    last_played: Option<i64>,
    /// The timestamp of `last_played`.
    last_played_ts: i64,
    /// Bit `i` set: `last_played - i` played.
    played: u64,
}

/// Holds a phone's incoming audio packets until their playout time.
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    config: JitterConfig,
    /// Sorted by extended sequence number.
    held: VecDeque<Held>,
    schedule: Option<Schedule>,
    suspect: Option<Suspect>,
    /// The current packet duration, in RTP clock units.
    packet_samples: i64,
    stats: JitterStats,
}

impl JitterBuffer {
    /// An empty buffer; the first packet starts the schedule.
    pub fn new(config: JitterConfig) -> Self {
        let mut config = config;
        if config.clock_rate == 0 {
            config.clock_rate = crate::g711::SAMPLE_RATE;
        }
        config.capacity = config.capacity.max(1);
        let packet_samples = samples_in(config.packet_time, config.clock_rate).max(1);
        JitterBuffer {
            held: VecDeque::with_capacity(config.capacity + 1),
            schedule: None,
            suspect: None,
            packet_samples,
            stats: JitterStats::default(),
            config,
        }
    }

    /// The configuration (after the bounds of [`JitterBuffer::new`]).
    pub fn config(&self) -> &JitterConfig {
        &self.config
    }

    /// What has been counted so far.
    pub fn stats(&self) -> &JitterStats {
        &self.stats
    }

    /// Packets held (a suspect not included).
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether no packet is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// When the next slot is due: poll then. `None` before the first packet.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.schedule
            .as_ref()
            .map(|s| s.due(s.next_ts, self.config.clock_rate))
    }

    /// Takes in one RTP packet that arrived at `arrival`.
    pub fn push(
        &mut self,
        arrival: Instant,
        seq: u16,
        timestamp: u32,
        payload: Arc<[u8]>,
    ) -> Arrival {
        let Some(schedule) = &self.schedule else {
            self.start(arrival, seq, timestamp, payload);
            return Arrival::Buffered;
        };
        let ext_seq = extend(schedule.highest_seq, u64::from(seq), 16);
        let ext_ts = extend(schedule.next_ts, u64::from(timestamp), 32);
        if self.is_jump(schedule, arrival, ext_seq, ext_ts) {
            return match self.suspect.take() {
                Some(s) if s.seq.wrapping_add(1) == seq => {
                    self.stats.restarts += 1;
                    self.start(s.arrival, s.seq, s.ts, s.payload);
                    self.push(arrival, seq, timestamp, payload);
                    Arrival::Restarted
                }
                previous => {
                    if previous.is_some() {
                        self.stats.strays += 1;
                    }
                    self.suspect = Some(Suspect {
                        arrival,
                        seq,
                        ts: timestamp,
                        payload,
                    });
                    Arrival::Suspect
                }
            };
        }
        if self.suspect.take().is_some() {
            self.stats.strays += 1;
        }
        self.accept(ext_seq, ext_ts, payload)
    }

    /// The next slot, if it is due at `now`: the packet that plays, or
    /// [`Playout::Missing`]. Call until `None`.
    pub fn poll(&mut self, now: Instant) -> Option<Playout> {
        let rate = self.config.clock_rate;
        let schedule = self.schedule.as_mut()?;
        if now < schedule.due(schedule.next_ts, rate) {
            return None;
        }
        schedule.started = true;
        match self.held.front() {
            Some(front) if front.ts <= schedule.next_ts => {
                let packet = self.held.pop_front()?;
                let lost = schedule.use_up(packet.seq, packet.ts);
                self.stats.lost += lost;
                if let Some(next) = self.held.front() {
                    if next.seq == packet.seq + 1 {
                        learn(&mut self.packet_samples, next.ts - packet.ts, rate);
                    }
                }
                schedule.next_ts = (packet.ts + self.packet_samples).max(schedule.next_ts);
                Some(Playout::Frame(Frame {
                    seq: packet.seq as u16,
                    timestamp: packet.ts as u32,
                    payload: packet.payload,
                }))
            }
            front => {
                let gap = front.map_or(self.packet_samples, |f| f.ts - schedule.next_ts);
                let samples = gap.min(self.packet_samples);
                let timestamp = schedule.next_ts as u32;
                schedule.next_ts += samples;
                self.stats.concealed += 1;
                Some(Playout::Missing {
                    timestamp,
                    samples: samples as u32,
                })
            }
        }
    }

    /// Starts the schedule afresh at a packet: nothing held, the packet plays
    /// one target delay after its arrival.
    fn start(&mut self, arrival: Instant, seq: u16, timestamp: u32, payload: Arc<[u8]>) {
        self.held.clear();
        self.suspect = None;
        self.packet_samples = samples_in(self.config.packet_time, self.config.clock_rate).max(1);
        let seq = i64::from(seq);
        let ts = i64::from(timestamp);
        self.schedule = Some(Schedule {
            anchor_ts: ts,
            anchor_time: arrival + self.config.target_delay,
            next_ts: ts,
            started: false,
            highest_seq: seq,
            last_played: None,
            last_played_ts: ts,
            played: 0,
        });
        self.held.push_back(Held { seq, ts, payload });
    }

    /// Whether a packet is too far from the stream to belong to it.
    fn is_jump(&self, schedule: &Schedule, arrival: Instant, ext_seq: i64, ext_ts: i64) -> bool {
        let seq_delta = ext_seq - schedule.highest_seq;
        if !(-MAX_MISORDER..=MAX_DROPOUT).contains(&seq_delta) {
            return true;
        }
        // The timestamp that is due one target delay after this arrival.
        let rate = self.config.clock_rate;
        let since_anchor = signed_nanos(arrival + self.config.target_delay, schedule.anchor_time);
        let expected =
            schedule.anchor_ts + (since_anchor * i128::from(rate) / 1_000_000_000) as i64;
        (ext_ts - expected).abs() > samples_in(self.config.max_jump, rate)
    }

    /// Holds a packet of the current stream, or drops it.
    fn accept(&mut self, seq: i64, ts: i64, payload: Arc<[u8]>) -> Arrival {
        let rate = self.config.clock_rate;
        let Some(schedule) = self.schedule.as_mut() else {
            return Arrival::Late;
        };
        schedule.highest_seq = schedule.highest_seq.max(seq);
        if let Some(last) = schedule.last_played {
            if seq <= last {
                let age = last - seq;
                return if age < PLAYED_HISTORY && schedule.played & (1 << age) != 0 {
                    self.stats.duplicates += 1;
                    Arrival::Duplicate
                } else {
                    self.stats.late += 1;
                    Arrival::Late
                };
            }
        }
        if ts < schedule.next_ts {
            if schedule.started {
                self.stats.late += 1;
                return Arrival::Late;
            }
            schedule.next_ts = ts;
        }
        let at = match self.held.binary_search_by_key(&seq, |h| h.seq) {
            Ok(_) => {
                self.stats.duplicates += 1;
                return Arrival::Duplicate;
            }
            Err(at) => at,
        };
        if at > 0 && self.held[at - 1].seq == seq - 1 {
            learn(&mut self.packet_samples, ts - self.held[at - 1].ts, rate);
        } else if schedule.last_played == Some(seq - 1) {
            learn(&mut self.packet_samples, ts - schedule.last_played_ts, rate);
        }
        if let Some(next) = self.held.get(at) {
            if next.seq == seq + 1 {
                learn(&mut self.packet_samples, next.ts - ts, rate);
            }
        }
        self.held.insert(at, Held { seq, ts, payload });
        if self.held.len() > self.config.capacity {
            if let Some(oldest) = self.held.pop_front() {
                self.stats.overflow += 1;
                self.stats.lost += schedule.use_up(oldest.seq, oldest.ts);
                // Skip the oldest's slot (and any gap before it): the rest
                // plays one packet earlier than scheduled.
                let next_ts = oldest.ts + self.packet_samples;
                schedule.anchor_ts += next_ts - schedule.next_ts;
                schedule.next_ts = next_ts;
                schedule.started = true;
            }
        }
        Arrival::Buffered
    }
}

impl Schedule {
    /// When the slot at extended timestamp `ts` begins.
    fn due(&self, ts: i64, rate: u32) -> Instant {
        let offset = ts - self.anchor_ts;
        let nanos = u128::from(offset.unsigned_abs()) * 1_000_000_000 / u128::from(rate);
        let span = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        let due = if offset >= 0 {
            self.anchor_time.checked_add(span)
        } else {
            self.anchor_time.checked_sub(span)
        };
        // Only out of range for spans of centuries; the anchor is the best
        // answer then.
        due.unwrap_or(self.anchor_time)
    }

    /// Marks sequence number `seq` as used up; returns how many numbers
    /// before it were passed without playing.
    fn use_up(&mut self, seq: i64, ts: i64) -> u64 {
        let skipped = match self.last_played {
            Some(last) => {
                let step = seq - last;
                self.played = if step >= PLAYED_HISTORY {
                    0
                } else {
                    self.played << step
                };
                (step - 1).max(0) as u64
            }
            None => 0,
        };
        self.played |= 1;
        self.last_played = Some(seq);
        self.last_played_ts = ts;
        skipped
    }
}

/// Extends a `bits`-wide wrapping counter to the value nearest `reference`.
fn extend(reference: i64, value: u64, bits: u32) -> i64 {
    let modulus = 1i64 << bits;
    let delta = (value as i64 - reference).rem_euclid(modulus);
    if delta >= modulus / 2 {
        reference + delta - modulus
    } else {
        reference + delta
    }
}

/// Updates the packet duration from two consecutive packets `delta` apart,
/// when that is a plausible duration.
fn learn(packet_samples: &mut i64, delta: i64, rate: u32) {
    if delta > 0 && delta <= samples_in(MAX_PACKET_TIME, rate) {
        *packet_samples = delta;
    }
}

/// How many RTP clock units a duration spans.
fn samples_in(duration: Duration, rate: u32) -> i64 {
    i64::try_from(duration.as_nanos() * u128::from(rate) / 1_000_000_000).unwrap_or(i64::MAX)
}

/// `a - b` in nanoseconds, negative when `a` is earlier.
fn signed_nanos(a: Instant, b: Instant) -> i128 {
    if a >= b {
        (a - b).as_nanos() as i128
    } else {
        -((b - a).as_nanos() as i128)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples in a 20 ms packet at 8 kHz.
    const STEP: u32 = 160;

    /// What came out, compactly: the sequence number of a frame, or `None`
    /// for a missing slot.
    type Heard = Vec<(u64, Option<u16>)>;

    /// One packet on the wire: arrival in ms after the base, seq, timestamp.
    #[derive(Debug, Clone, Copy)]
    struct Wire {
        at: u64,
        seq: u16,
        ts: u32,
    }

    /// A stream of 20 ms packets from `seq0`/`ts0`, sent every 20 ms from
    /// t = 0 and arriving `delay` ms later.
    fn stream(seq0: u16, ts0: u32, count: u16, delay: u64) -> Vec<Wire> {
        (0..count)
            .map(|i| Wire {
                at: u64::from(i) * 20 + delay,
                seq: seq0.wrapping_add(i),
                ts: ts0.wrapping_add(u32::from(i) * STEP),
            })
            .collect()
    }

    /// Runs the buffer in 1 ms steps from the base until `until` ms: at each
    /// step, first the packets that arrive then, then every due slot. Returns
    /// the slots with the ms they came out at, and what each push answered.
    fn run(
        buffer: &mut JitterBuffer,
        base: Instant,
        wire: &[Wire],
        until: u64,
    ) -> (Heard, Vec<Arrival>) {
        let mut wire = wire.to_vec();
        wire.sort_by_key(|w| w.at);
        let mut heard = Vec::new();
        let mut answers = Vec::new();
        let mut next = 0;
        for ms in 0..=until {
            let now = base + Duration::from_millis(ms);
            while next < wire.len() && wire[next].at == ms {
                let w = wire[next];
                let payload: Arc<[u8]> = Arc::from(w.seq.to_be_bytes().as_slice());
                answers.push(buffer.push(now, w.seq, w.ts, payload));
                next += 1;
            }
            while let Some(slot) = buffer.poll(now) {
                heard.push(match slot {
                    Playout::Frame(frame) => {
                        assert_eq!(*frame.payload, frame.seq.to_be_bytes());
                        (ms, Some(frame.seq))
                    }
                    Playout::Missing { samples, .. } => {
                        assert!(samples > 0 && samples <= STEP);
                        (ms, None)
                    }
                });
            }
        }
        (heard, answers)
    }

    fn seqs(heard: &Heard) -> Vec<Option<u16>> {
        heard.iter().map(|&(_, s)| s).collect()
    }

    fn frames(range: std::ops::Range<u16>) -> Vec<Option<u16>> {
        range.map(Some).collect()
    }

    #[test]
    fn in_order_packets_play_after_the_target_delay_every_20_ms() {
        let base = Instant::now();
        let mut buffer = JitterBuffer::new(JitterConfig::default());
        assert_eq!(buffer.poll_timeout(), None);
        assert_eq!(buffer.poll(base), None);
        let (heard, answers) = run(
            &mut buffer,
            base,
            &stream(1_000, 5_000, 20, 7),
            7 + 60 + 19 * 20,
        );
        assert!(answers.iter().all(|&a| a == Arrival::Buffered));
        assert_eq!(seqs(&heard), frames(1_000..1_020));
        for (i, &(ms, _)) in heard.iter().enumerate() {
            assert_eq!(ms, 67 + 20 * i as u64, "slot {i}");
        }
        assert_eq!(buffer.stats(), &JitterStats::default());
        assert!(buffer.is_empty());
        assert_eq!(
            buffer.poll_timeout(),
            Some(base + Duration::from_millis(67 + 20 * 20))
        );
    }

    #[test]
    fn reordering_within_the_delay_is_undone() {
        let base = Instant::now();
        let mut buffer = JitterBuffer::new(JitterConfig::default());
        let mut wire = stream(0, 0, 20, 10);
        // Packet 5 comes 35 ms late (after 6 and 7), packet 1 before packet 0.
        wire[5].at += 35;
        wire[0].at += 25;
        let (heard, _) = run(&mut buffer, base, &wire, 500);
        assert_eq!(seqs(&heard)[..20], frames(0..20)[..]);
        // Packet 0 came first after all: it still plays at its own slot.
        assert_eq!(heard[0].0, 70);
        assert_eq!(buffer.stats().late, 0);
        assert_eq!(buffer.stats().lost, 0);
    }

    #[test]
    fn a_packet_later_than_the_delay_is_dropped_and_concealed() {
        let base = Instant::now();
        let mut buffer = JitterBuffer::new(JitterConfig::default());
        let mut wire = stream(0, 0, 20, 10);
        // Packet 5 comes after packet 6 has played, packet 12 10 ms after
        // its slot began (packet 13 not played yet).
        wire[5].at += 100;
        wire[12].at = 70 + 12 * 20 + 10;
        let (heard, answers) = run(&mut buffer, base, &wire, 460);
        let mut expected = frames(0..20);
        expected[5] = None;
        expected[12] = None;
        assert_eq!(seqs(&heard), expected);
        assert_eq!(answers.iter().filter(|&&a| a == Arrival::Late).count(), 2);
        let stats = buffer.stats();
        assert_eq!((stats.late, stats.lost, stats.concealed), (2, 2, 2));
        // The output stays on its 20 ms grid through the gap.
        for (i, &(ms, _)) in heard.iter().enumerate() {
            assert_eq!(ms, 70 + 20 * i as u64);
        }
    }

    #[test]
    fn duplicates_are_dropped_while_held_and_after_playing() {
        let base = Instant::now();
        let mut buffer = JitterBuffer::new(JitterConfig::default());
        let mut wire = stream(0, 0, 20, 10);
        let mut again = wire[3];
        again.at += 5; // still held
        wire.push(again);
        again.at += 200; // long played
        wire.push(again);
        let (heard, answers) = run(&mut buffer, base, &wire, 460);
        assert_eq!(seqs(&heard), frames(0..20));
        assert_eq!(
            answers.iter().filter(|&&a| a == Arrival::Duplicate).count(),
            2
        );
        let stats = buffer.stats();
        assert_eq!((stats.duplicates, stats.late, stats.lost), (2, 0, 0));
    }

    #[test]
    fn a_loss_burst_gives_one_missing_slot_per_packet() {
        let base = Instant::now();
        let mut buffer = JitterBuffer::new(JitterConfig::default());
        let wire: Vec<Wire> = stream(0, 0, 30, 10)
            .into_iter()
            .filter(|w| !(10..15).contains(&w.seq))
            .collect();
        let (heard, _) = run(&mut buffer, base, &wire, 70 + 29 * 20);
        let mut expected = frames(0..30);
        expected[10..15].fill(None);
        assert_eq!(seqs(&heard), expected);
        let stats = buffer.stats();
        assert_eq!((stats.lost, stats.concealed, stats.late), (5, 5, 0));
        for (i, &(ms, _)) in heard.iter().enumerate() {
            assert_eq!(ms, 70 + 20 * i as u64);
        }
    }

    #[test]
    fn sequence_numbers_and_timestamps_wrap() {
        let base = Instant::now();
        let mut buffer = JitterBuffer::new(JitterConfig::default());
        let ts0 = u32::MAX - 3 * STEP + 1;
        let mut wire = stream(65_530, ts0, 12, 10);
        // Reordered across the wrap: 65535 after 0.
        wire[5].at += 25;
        let (heard, _) = run(&mut buffer, base, &wire, 70 + 11 * 20);
        let expected: Vec<Option<u16>> = (0..12u16)
            .map(|i| Some(65_530u16.wrapping_add(i)))
            .collect();
        assert_eq!(seqs(&heard), expected);
        assert_eq!(buffer.stats(), &JitterStats::default());
    }

    #[test]
    fn a_restart_resynchronises_after_two_packets() {
        let base = Instant::now();
        let mut buffer = JitterBuffer::new(JitterConfig::default());
        let mut wire = stream(100, 0, 10, 10);
        // At 200 ms the phone restarts with new numbers: 400 ms of audio
        // from seq 40 000, timestamp 3 000 000 000.
        wire.extend(
            stream(40_000, 3_000_000_000, 20, 10)
                .into_iter()
                .map(|w| Wire {
                    at: w.at + 200,
                    ..w
                }),
        );
        let (heard, answers) = run(&mut buffer, base, &wire, 1_000);
        assert_eq!(answers[10], Arrival::Suspect);
        assert_eq!(answers[11], Arrival::Restarted);
        assert!(answers[12..].iter().all(|&a| a == Arrival::Buffered));
        let new: Vec<&(u64, Option<u16>)> =
            heard.iter().filter(|(_, s)| *s >= Some(40_000)).collect();
        assert_eq!(new.len(), 20);
        // The new stream plays one target delay after its first packet.
        assert_eq!(*new[0], (270, Some(40_000)));
        assert_eq!(*new[19], (270 + 19 * 20, Some(40_019)));
        // The old stream's packets still held at the restart (108, 109) are
        // dropped with it.
        let old: Vec<u16> = heard
            .iter()
            .filter_map(|&(_, s)| s)
            .filter(|&s| s < 40_000)
            .collect();
        assert_eq!(old, (100..108).collect::<Vec<u16>>());
        assert_eq!(buffer.stats().restarts, 1);
        assert_eq!(buffer.stats().lost, 0);
    }

    #[test]
    fn a_single_stray_packet_does_not_restart() {
        let base = Instant::now();
        let mut buffer = JitterBuffer::new(JitterConfig::default());
        let mut wire = stream(0, 0, 20, 10);
        wire.push(Wire {
            at: 105,
            seq: 30_000,
            ts: 99,
        });
        let (heard, answers) = run(&mut buffer, base, &wire, 460);
        assert_eq!(seqs(&heard), frames(0..20));
        assert_eq!(
            answers.iter().filter(|&&a| a == Arrival::Suspect).count(),
            1
        );
        let stats = buffer.stats();
        assert_eq!((stats.strays, stats.restarts), (1, 0));
    }

    #[test]
    fn a_timestamp_jump_alone_is_a_restart() {
        let base = Instant::now();
        let mut buffer = JitterBuffer::new(JitterConfig::default());
        let mut wire = stream(0, 0, 10, 10);
        // Sequence numbers go on, the timestamp jumps by an hour.
        wire.extend(stream(10, 3_600 * 8_000, 10, 10).into_iter().map(|w| Wire {
            at: w.at + 300,
            ..w
        }));
        let (heard, _) = run(&mut buffer, base, &wire, 700);
        assert_eq!(buffer.stats().restarts, 1);
        let played: Vec<u16> = heard.iter().filter_map(|&(_, s)| s).collect();
        assert_eq!(played, (0..20).collect::<Vec<u16>>());
    }

    #[test]
    fn silence_suppression_gives_missing_slots_not_losses() {
        let base = Instant::now();
        let mut buffer = JitterBuffer::new(JitterConfig::default());
        let mut wire = stream(0, 0, 5, 10);
        // Half a second of silence: the sequence numbers go on, the
        // timestamps jump 500 ms.
        wire.extend(
            stream(5, 5 * STEP + 4_000, 5, 10)
                .into_iter()
                .map(|w| Wire {
                    at: w.at + 600,
                    ..w
                }),
        );
        let (heard, _) = run(&mut buffer, base, &wire, 760);
        let played: Vec<u16> = heard.iter().filter_map(|&(_, s)| s).collect();
        assert_eq!(played, (0..10).collect::<Vec<u16>>());
        let stats = buffer.stats();
        assert_eq!((stats.lost, stats.late, stats.restarts), (0, 0, 0));
        assert_eq!(stats.concealed, 25);
        // Packet 5 plays at its slot, one target delay after it arrived.
        assert!(heard.contains(&(670, Some(5))));
    }

    #[test]
    fn a_gap_shorter_than_a_packet_is_concealed_exactly() {
        let base = Instant::now();
        let ms = |n| base + Duration::from_millis(n);
        let mut buffer = JitterBuffer::new(JitterConfig::default());
        let payload: Arc<[u8]> = Arc::from([0u8].as_slice());
        buffer.push(ms(0), 0, 0, payload.clone());
        // Packet 1 is lost; packet 2 starts 10 ms after packet 1 would end.
        buffer.push(ms(50), 2, 2 * STEP + 80, payload);
        assert!(matches!(buffer.poll(ms(60)), Some(Playout::Frame(f)) if f.seq == 0));
        assert_eq!(buffer.poll(ms(60)), None);
        assert_eq!(buffer.poll_timeout(), Some(ms(80)));
        let missing = |timestamp, samples| Some(Playout::Missing { timestamp, samples });
        assert_eq!(buffer.poll(ms(80)), missing(STEP, STEP));
        assert_eq!(buffer.poll_timeout(), Some(ms(100)));
        assert_eq!(buffer.poll(ms(100)), missing(2 * STEP, 80));
        assert_eq!(buffer.poll_timeout(), Some(ms(110)));
        assert!(matches!(buffer.poll(ms(110)), Some(Playout::Frame(f)) if f.seq == 2));
        assert_eq!(buffer.stats().lost, 1);
        assert_eq!(buffer.stats().concealed, 2);
    }

    #[test]
    fn the_buffer_never_holds_more_than_its_capacity() {
        let base = Instant::now();
        let config = JitterConfig {
            capacity: 10,
            ..JitterConfig::default()
        };
        let mut buffer = JitterBuffer::new(config);
        // A burst of 2 s of audio in one instant.
        for i in 0..100u16 {
            buffer.push(base, i, u32::from(i) * STEP, Arc::from([0u8].as_slice()));
            assert!(buffer.len() <= 10);
        }
        assert_eq!(buffer.stats().overflow, 90);
        // What is held plays at once, in order, from the newest ten.
        let mut played = Vec::new();
        while let Some(slot) = buffer.poll(base + Duration::from_millis(60)) {
            if let Playout::Frame(frame) = slot {
                played.push(frame.seq);
            }
        }
        assert_eq!(played, [90]);
        assert_eq!(buffer.stats().lost, 0);
    }

    #[test]
    fn sequence_extension() {
        assert_eq!(extend(65_535, 0, 16), 65_536);
        assert_eq!(extend(65_536, 65_535, 16), 65_535);
        assert_eq!(extend(10, 5, 16), 5);
        assert_eq!(extend(i64::from(u32::MAX), 3, 32), i64::from(u32::MAX) + 4);
    }
}
