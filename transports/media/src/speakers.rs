//! Active-speaker detection and top-N audio selection for a room, from the
//! RFC 6464 client-to-mixer audio level that publishers put on every audio
//! packet: a level of 0..=127 meaning -dBov (0 is the loudest, 127 silence)
//! and an optional voice-activity flag (V).
//!
//! Sans-IO: time comes in as [`Instant`], the clock is never read, and
//! [`Speakers::observe`], called once per audio packet, allocates nothing (only
//! the first packet of a new key may grow the table of tracks).
//!
//! # The model
//!
//! - **Speech.** A packet is speech when its level is below
//!   [`SpeakerConfig::silence_level`] and its V flag is not `false` (a missing
//!   flag counts as voice). Other packets are silence.
//! - **Smoothed level.** Each track keeps the last [`SpeakerConfig::window`]
//!   of packets in ten fixed buckets (a ring, no allocation). Its level is the
//!   mean *power* of those packets, `10^(-level/10)` per speech packet and 0
//!   per silence packet, back in dBov (floored at -127). Averaging power
//!   rather than dB is what a meter does: one loud second among quiet ones
//!   weighs as much as its energy, and a track that speaks half the window is
//!   3 dB below one that speaks all of it. Because the buckets expire whole,
//!   the window in effect spans between nine and ten tenths of `window`.
//! - **Eligible.** A track is eligible when its window holds at least one
//!   speech packet. A track that only sends silence, or nothing at all (Opus
//!   DTX, mute), stops being eligible at the latest one window after its last
//!   speech packet; a track without any packet in the window is forgotten.
//! - **The set.** [`Speakers::update`], called every 100-200 ms, recomputes
//!   the ordered set of at most [`SpeakerConfig::top_n`] eligible tracks,
//!   loudest first, with hysteresis:
//!   1. members that are no longer eligible leave at once;
//!   2. free places are filled at once by the loudest eligible non-members;
//!   3. when the set is full, a non-member replaces the quietest member only
//!      after it has been louder than that member by more than
//!      [`SpeakerConfig::switch_margin`] dB for [`SpeakerConfig::hold`];
//!   4. within the set, a member passes the one ahead of it under the same
//!      rule (louder by the margin, for the hold time).
//!
//!   Two speakers within the margin of each other therefore never swap, and a
//!   burst shorter than the hold never displaces anyone. The first member is
//!   the dominant speaker, [`Speakers::loudest`].
//! - **Bounded.** At most [`MAX_TRACKS`] keys are tracked; packets of further
//!   new keys are dropped and counted ([`Speakers::ignored`]) until forgotten
//!   or removed tracks make room.

use std::time::{Duration, Instant};

/// The most keys a [`Speakers`] tracks at once.
pub const MAX_TRACKS: usize = 1024;

/// Buckets per window: the window advances in steps of a tenth of itself.
const BUCKETS: usize = 10;

/// The level of a track that only sent silence, in dBov.
const FLOOR_DB: f32 = -127.0;

/// How [`Speakers`] picks and orders the active set.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeakerConfig {
    /// How many tracks the active set holds at most. Default 3. With 0,
    /// [`Speakers::top`] is always empty but [`Speakers::loudest`] still
    /// names the dominant speaker.
    pub top_n: usize,
    /// The span levels are averaged over. Default 1 s.
    pub window: Duration,
    /// The RFC 6464 level (-dBov) at or above which a packet is silence.
    /// Default 80 (-80 dBov, the threshold mediasoup's audio-level observer
    /// uses by default): quieter than any speech, while the V flag, where the
    /// browser sends it, is what tells background noise from voice.
    pub silence_level: u8,
    /// How many dB a track must be louder than the one it would displace (the
    /// quietest member, or the member ahead of it in the set). Default 3 dB.
    /// A negative or NaN margin counts as 0.
    pub switch_margin: f32,
    /// How long a track must stay louder by the margin before it displaces
    /// another. Default 500 ms.
    pub hold: Duration,
}

impl Default for SpeakerConfig {
    fn default() -> Self {
        SpeakerConfig {
            top_n: 3,
            window: Duration::from_secs(1),
            silence_level: 80,
            switch_margin: 3.0,
            hold: Duration::from_millis(500),
        }
    }
}

/// Parses the data of an RFC 6464 audio-level header extension element (the
/// one byte after the element's header): `Some((level, voice))` with the level
/// in -dBov (0..=127) and the V flag; `None` unless exactly one byte.
pub fn parse_audio_level(ext: &[u8]) -> Option<(u8, bool)> {
    match ext {
        [b] => Some((b & 0x7f, b & 0x80 != 0)),
        _ => None,
    }
}

/// Packets of one tenth of the window.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Which tenth: time since the origin divided by the bucket length.
    epoch: u64,
    packets: u32,
    speech: u32,
    /// Sum of the linear power of the speech packets.
    power: f64,
}

#[derive(Debug, Clone)]
struct Track<K> {
    key: K,
    buckets: [Bucket; BUCKETS],
    /// Smoothed level in dBov, as of the last [`Speakers::update`].
    level: f32,
    /// Any packet in the window, as of the last update.
    heard: bool,
    /// Speech in the window, as of the last update.
    eligible: bool,
    member: bool,
    /// Since when this track has been louder, by the margin, than the track it
    /// would displace (the quietest member for a non-member, the member ahead
    /// for a member); `None` when it is not.
    since: Option<Instant>,
}

impl<K> Track<K> {
    fn new(key: K) -> Self {
        Track {
            key,
            buckets: [Bucket::default(); BUCKETS],
            level: FLOOR_DB,
            heard: false,
            eligible: false,
            member: false,
            since: None,
        }
    }

    /// `(packets, speech packets, power sum)` of the buckets in the window
    /// that ends in `epoch`.
    fn window(&self, epoch: u64) -> (u32, u32, f64) {
        let mut total = (0u32, 0u32, 0.0f64);
        for b in &self.buckets {
            if b.packets > 0 && epoch.saturating_sub(b.epoch) < BUCKETS as u64 {
                total.0 = total.0.saturating_add(b.packets);
                total.1 = total.1.saturating_add(b.speech);
                total.2 += b.power;
            }
        }
        total
    }
}

/// Mean power of `packets` packets whose power sums to `power`, in dBov.
fn mean_db(packets: u32, power: f64) -> f32 {
    let mean = power / f64::from(packets.max(1));
    if mean > 0.0 {
        ((10.0 * mean.log10()) as f32).clamp(FLOOR_DB, 0.0)
    } else {
        FLOOR_DB
    }
}

fn find<K: Copy + Eq>(tracks: &[Track<K>], key: K) -> Option<usize> {
    tracks.iter().position(|t| t.key == key)
}

/// Active-speaker detection over the audio tracks of one room, keyed by `K`
/// (for instance the track's channel id). See the module documentation.
#[derive(Debug, Clone)]
pub struct Speakers<K> {
    config: SpeakerConfig,
    /// The margin, sanitized.
    margin: f32,
    bucket_nanos: u128,
    /// The first instant seen; epochs count buckets from it.
    origin: Option<Instant>,
    /// The latest epoch seen: time never runs backwards for the buckets.
    epoch: u64,
    tracks: Vec<Track<K>>,
    /// The ordered set, loudest first; holds up to `cap` keys.
    set: Vec<K>,
    /// `top_n` within `1..=MAX_TRACKS`: the set keeps at least the dominant
    /// speaker even with `top_n` 0.
    cap: usize,
    /// A removal changed the set since the last update.
    dirty: bool,
    ignored: u64,
}

impl<K: Copy + Eq> Speakers<K> {
    pub fn new(config: SpeakerConfig) -> Self {
        let cap = config.top_n.clamp(1, MAX_TRACKS);
        Speakers {
            margin: config.switch_margin.max(0.0),
            bucket_nanos: (config.window.as_nanos() / BUCKETS as u128).max(1),
            origin: None,
            epoch: 0,
            tracks: Vec::new(),
            set: Vec::with_capacity(cap),
            cap,
            dirty: false,
            ignored: 0,
            config,
        }
    }

    /// The epoch of `now`, never earlier than one seen before.
    fn advance(&mut self, now: Instant) -> u64 {
        let origin = *self.origin.get_or_insert(now);
        let nanos = now.saturating_duration_since(origin).as_nanos();
        let epoch = u64::try_from(nanos / self.bucket_nanos).unwrap_or(u64::MAX);
        self.epoch = self.epoch.max(epoch);
        self.epoch
    }

    /// Records the audio level of one packet of `key`: `level` in -dBov
    /// (values above 127 count as 127) and the V flag if the packet had one.
    pub fn observe(&mut self, now: Instant, key: K, level: u8, voice: Option<bool>) {
        let epoch = self.advance(now);
        let i = match find(&self.tracks, key) {
            Some(i) => i,
            None if self.tracks.len() < MAX_TRACKS => {
                self.tracks.push(Track::new(key));
                self.tracks.len() - 1
            }
            None => {
                self.ignored = self.ignored.saturating_add(1);
                return;
            }
        };
        let level = level.min(127);
        let speech = level < self.config.silence_level && voice != Some(false);
        let Some(track) = self.tracks.get_mut(i) else {
            return;
        };
        let b = &mut track.buckets[(epoch % BUCKETS as u64) as usize];
        if b.epoch != epoch || b.packets == 0 {
            *b = Bucket {
                epoch,
                ..Bucket::default()
            };
        }
        b.packets = b.packets.saturating_add(1);
        if speech {
            b.speech = b.speech.saturating_add(1);
            b.power += 10f64.powf(-f64::from(level) / 10.0);
        }
    }

    /// Forgets `key` (its track ended); it leaves the set at once, and the
    /// next [`update`](Self::update) reports the change.
    pub fn remove(&mut self, key: K) {
        if let Some(i) = find(&self.tracks, key) {
            self.tracks.swap_remove(i);
        }
        if let Some(pos) = self.set.iter().position(|&k| k == key) {
            self.set.remove(pos);
            self.dirty = true;
        }
    }

    /// Recomputes the levels and the active set as of `now` (see the module
    /// documentation); returns whether the ordered set ([`top`](Self::top),
    /// or [`loudest`](Self::loudest) when `top_n` is 0) changed since the
    /// last update.
    pub fn update(&mut self, now: Instant) -> bool {
        let epoch = self.advance(now);
        let mut changed = std::mem::take(&mut self.dirty);
        let margin = self.margin;
        let hold = self.config.hold;
        let held = |since: Instant| now.saturating_duration_since(since) >= hold;

        for t in &mut self.tracks {
            let (packets, speech, power) = t.window(epoch);
            t.level = mean_db(packets, power);
            t.heard = packets > 0;
            t.eligible = speech > 0;
            if !t.eligible {
                t.since = None;
            }
        }

        // 1. Members no longer eligible leave.
        let tracks = &mut self.tracks;
        let before = self.set.len();
        self.set.retain(|&k| match find(tracks, k) {
            Some(i) if tracks[i].eligible => true,
            Some(i) => {
                tracks[i].member = false;
                false
            }
            None => false,
        });
        changed |= self.set.len() != before;
        // Tracks without any packet in the window are forgotten (members are
        // eligible, so heard).
        self.tracks.retain(|t| t.heard);

        // 2. Free places go to the loudest eligible non-members.
        while self.set.len() < self.cap {
            let Some(i) = self.loudest_candidate(|_| true) else {
                break;
            };
            self.tracks[i].member = true;
            self.set.push(self.tracks[i].key);
            changed = true;
        }

        // 3. A full set: the loudest non-member that has beaten the quietest
        // member by the margin for the hold time replaces it. Each round puts
        // a louder track in place of a quieter one, so at most one round per
        // track.
        for _ in 0..=self.tracks.len() {
            let Some((pos, quietest)) = self.quietest_member() else {
                break;
            };
            let threshold = quietest + margin;
            for t in self.tracks.iter_mut().filter(|t| !t.member && t.eligible) {
                if t.level > threshold {
                    t.since.get_or_insert(now);
                } else {
                    t.since = None;
                }
            }
            let Some(i) = self.loudest_candidate(|t| t.since.is_some_and(held)) else {
                break;
            };
            let out = self.set.remove(pos);
            if let Some(o) = find(&self.tracks, out) {
                self.tracks[o].member = false;
                self.tracks[o].since = None;
            }
            self.tracks[i].member = true;
            self.set.push(self.tracks[i].key);
            changed = true;
        }

        // 4. Order: a member passes the one ahead of it once it has been
        // louder by the margin for the hold time (an insertion sort with
        // hysteresis).
        for start in 1..self.set.len() {
            let mut j = start;
            while j > 0 {
                let (Some(a), Some(b)) = (
                    find(&self.tracks, self.set[j - 1]),
                    find(&self.tracks, self.set[j]),
                ) else {
                    break;
                };
                if self.tracks[b].level > self.tracks[a].level + margin {
                    let since = *self.tracks[b].since.get_or_insert(now);
                    if held(since) {
                        self.set.swap(j - 1, j);
                        changed = true;
                        j -= 1;
                        continue;
                    }
                } else {
                    self.tracks[b].since = None;
                }
                break;
            }
        }
        if let Some(i) = self.set.first().and_then(|&k| find(&self.tracks, k)) {
            self.tracks[i].since = None;
        }

        changed
    }

    /// The loudest eligible non-member for which `pick` holds.
    fn loudest_candidate(&self, pick: impl Fn(&Track<K>) -> bool) -> Option<usize> {
        let mut best: Option<usize> = None;
        for (i, t) in self.tracks.iter().enumerate() {
            if t.member || !t.eligible || !pick(t) {
                continue;
            }
            if best.is_none_or(|b| t.level > self.tracks[b].level) {
                best = Some(i);
            }
        }
        best
    }

    /// The position in the set and the level of its quietest member (the last
    /// of equals).
    fn quietest_member(&self) -> Option<(usize, f32)> {
        let mut quietest: Option<(usize, f32)> = None;
        for (pos, &k) in self.set.iter().enumerate() {
            let level = find(&self.tracks, k).map_or(FLOOR_DB, |i| self.tracks[i].level);
            if quietest.is_none_or(|(_, q)| level <= q) {
                quietest = Some((pos, level));
            }
        }
        quietest
    }

    /// The active set as of the last update, loudest first: at most `top_n`
    /// keys, only tracks with speech in the window, fewer when fewer speak.
    pub fn top(&self) -> &[K] {
        &self.set[..self.set.len().min(self.config.top_n)]
    }

    /// The dominant speaker as of the last update: the first of the set.
    pub fn loudest(&self) -> Option<K> {
        self.set.first().copied()
    }

    /// The smoothed level of `key` in dBov (0 the loudest, -127 silence) over
    /// the window ending at the latest instant seen; `None` for a key without
    /// any packet in the window.
    pub fn level_db(&self, key: K) -> Option<f32> {
        let track = &self.tracks[find(&self.tracks, key)?];
        let (packets, _, power) = track.window(self.epoch);
        (packets > 0).then(|| mean_db(packets, power))
    }

    /// How many packets were dropped because [`MAX_TRACKS`] keys were already
    /// tracked.
    pub fn ignored(&self) -> u64 {
        self.ignored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A room in simulated time: every 20 ms one packet per speaker, every
    /// 100 ms an update.
    struct Room {
        s: Speakers<u32>,
        t0: Instant,
        ms: u64,
        changes: u32,
    }

    impl Room {
        fn new(config: SpeakerConfig) -> Self {
            Room {
                s: Speakers::new(config),
                t0: Instant::now(),
                ms: 0,
                changes: 0,
            }
        }

        fn now(&self) -> Instant {
            self.t0 + Duration::from_millis(self.ms)
        }

        /// Runs `ms` milliseconds with these `(key, level, voice)` packets.
        fn run(&mut self, ms: u64, packets: &[(u32, u8, Option<bool>)]) {
            let end = self.ms + ms;
            while self.ms < end {
                self.ms += 20;
                let now = self.now();
                for &(key, level, voice) in packets {
                    self.s.observe(now, key, level, voice);
                }
                if self.ms.is_multiple_of(100) && self.s.update(now) {
                    self.changes += 1;
                }
            }
        }

        /// Like `run` with steady levels and no V flag.
        fn speak(&mut self, ms: u64, levels: &[(u32, u8)]) {
            let packets: Vec<_> = levels.iter().map(|&(k, l)| (k, l, None)).collect();
            self.run(ms, &packets);
        }
    }

    const FIVE: [(u32, u8); 5] = [(1, 40), (2, 20), (3, 60), (4, 30), (5, 50)];

    #[test]
    fn steady_speakers_give_the_loudest_in_order() {
        let mut room = Room::new(SpeakerConfig::default());
        room.speak(3000, &FIVE);
        assert_eq!(room.s.top(), &[2, 4, 1]);
        assert_eq!(room.s.loudest(), Some(2));
        assert_eq!(room.changes, 1, "one change: the first fill");
        let level = room.s.level_db(2).unwrap();
        assert!((level + 20.0).abs() < 0.01, "{level}");
        assert_eq!(room.s.level_db(99), None);

        // Fewer speakers than places: a smaller set.
        let mut room = Room::new(SpeakerConfig::default());
        room.speak(1000, &[(7, 50), (8, 30)]);
        assert_eq!(room.s.top(), &[8, 7]);
    }

    #[test]
    fn levels_are_averaged_as_energy() {
        let mut s = Speakers::new(SpeakerConfig::default());
        let t0 = Instant::now();
        for i in 0..40u64 {
            let now = t0 + Duration::from_millis(20 * i);
            // -10 and -30 dBov in turns: mean power (0.1 + 0.001) / 2.
            s.observe(now, 1, if i % 2 == 0 { 10 } else { 30 }, None);
            // -20 dBov half the time, silence the other half: 3 dB down.
            s.observe(now, 2, if i % 2 == 0 { 20 } else { 127 }, None);
            // Loud, but flagged as no voice: silence.
            s.observe(now, 3, 5, Some(false));
        }
        let l1 = s.level_db(1).unwrap();
        assert!((l1 - 10.0 * (0.101f32 / 2.0).log10()).abs() < 0.01, "{l1}");
        let l2 = s.level_db(2).unwrap();
        assert!((l2 + 23.01).abs() < 0.01, "{l2}");
        assert_eq!(s.level_db(3), Some(FLOOR_DB));
        s.update(t0 + Duration::from_millis(800));
        assert_eq!(s.top(), &[1, 2]);
    }

    #[test]
    fn the_set_follows_a_speaker_who_gets_loud() {
        let config = SpeakerConfig::default();
        let limit = config.window + config.hold + Duration::from_millis(100);
        let mut room = Room::new(config.clone());
        room.speak(3000, &FIVE);
        assert_eq!(room.s.top(), &[2, 4, 1]);

        // Speaker 3 goes from -60 to -10 dBov.
        let mut levels = FIVE;
        levels[2].1 = 10;
        let start = room.ms;
        while !room.s.top().contains(&3) {
            room.speak(20, &levels);
            assert!(room.ms - start <= limit.as_millis() as u64, "too slow");
        }
        let entered = room.ms - start;
        assert!(entered >= config.hold.as_millis() as u64, "{entered} ms");
        assert!(!room.s.top().contains(&1), "the quietest left");

        room.speak(3000, &levels);
        assert_eq!(room.s.top(), &[3, 2, 4]);
        assert_eq!(room.s.loudest(), Some(3));
    }

    /// Changes over 10 s after settling, while speakers `a` and `b` trade
    /// places every 2 s by a 2 dB difference.
    fn trading_changes(
        config: SpeakerConfig,
        steady: &[(u32, u8)],
        a: u32,
        b: u32,
        level: u8,
    ) -> u32 {
        let mut room = Room::new(config);
        let mut levels = steady.to_vec();
        levels.extend([(a, level), (b, level + 2)]);
        room.speak(3000, &levels);
        room.changes = 0;
        for round in 0..5 {
            let n = levels.len();
            let (x, y) = if round % 2 == 0 {
                (level + 2, level)
            } else {
                (level, level + 2)
            };
            levels[n - 2].1 = x;
            levels[n - 1].1 = y;
            room.speak(2000, &levels);
        }
        room.changes
    }

    #[test]
    fn no_flapping_within_the_margin() {
        let hysteresis = SpeakerConfig {
            top_n: 2,
            ..SpeakerConfig::default()
        };
        let none = SpeakerConfig {
            switch_margin: 0.0,
            hold: Duration::ZERO,
            ..hysteresis.clone()
        };
        // The last place of the set.
        assert_eq!(trading_changes(hysteresis.clone(), &[(1, 20)], 2, 3, 40), 0);
        assert!(trading_changes(none.clone(), &[(1, 20)], 2, 3, 40) >= 4);
        // The dominant speaker.
        assert_eq!(trading_changes(hysteresis, &[], 2, 3, 30), 0);
        assert!(trading_changes(none, &[], 2, 3, 30) >= 4);
    }

    #[test]
    fn a_silent_speaker_leaves_after_the_window() {
        let window = SpeakerConfig::default().window;
        let half = window.as_millis() as u64 / 2;
        let rest = window.as_millis() as u64 - half + 100;
        let talk = [(1, 20, None), (2, 30, None), (3, 40, None)];
        // Speaker 1 sends silence levels, loud packets without voice, or
        // nothing at all (DTX).
        let quiet: [&[(u32, u8, Option<bool>)]; 3] = [
            &[(1, 127, None), (2, 30, None), (3, 40, None)],
            &[
                (1, 25, Some(false)),
                (2, 30, Some(true)),
                (3, 40, Some(true)),
            ],
            &[(2, 30, None), (3, 40, None)],
        ];
        for packets in quiet {
            let mut room = Room::new(SpeakerConfig::default());
            room.run(2000, &talk);
            assert_eq!(room.s.top(), &[1, 2, 3]);
            room.run(half, packets);
            assert!(room.s.top().contains(&1), "still within the window");
            room.run(rest, packets);
            assert_eq!(room.s.top(), &[2, 3]);
            assert_eq!(room.s.loudest(), Some(2));
        }
        // Without packets the track is forgotten too.
        let mut room = Room::new(SpeakerConfig::default());
        room.run(2000, &talk);
        room.run(2 * (half + rest), quiet[2]);
        assert_eq!(room.s.level_db(1), None);
        assert_eq!(room.s.tracks.len(), 2);
    }

    #[test]
    fn remove_takes_a_track_out_at_once() {
        let mut room = Room::new(SpeakerConfig::default());
        room.speak(2000, &FIVE);
        assert_eq!(room.s.top(), &[2, 4, 1]);
        room.s.remove(2);
        assert_eq!(room.s.top(), &[4, 1]);
        assert_eq!(room.s.loudest(), Some(4));
        assert_eq!(room.s.level_db(2), None);
        room.s.remove(42); // unknown: nothing happens
                           // The next update reports it and fills the place.
        assert!(room.s.update(room.now()));
        assert_eq!(room.s.top(), &[4, 1, 5]);
        assert!(!room.s.update(room.now()));
    }

    #[test]
    fn tracks_are_bounded() {
        let mut s = Speakers::new(SpeakerConfig::default());
        let t0 = Instant::now();
        for key in 0..MAX_TRACKS as u32 {
            s.observe(t0, key, 50, None);
        }
        assert_eq!(s.ignored(), 0);
        let extra = MAX_TRACKS as u32;
        s.observe(t0, extra, 10, None);
        s.observe(t0, extra, 10, None);
        assert_eq!(s.ignored(), 2);
        assert_eq!(s.level_db(extra), None);
        s.update(t0);
        assert_eq!(s.top().len(), 3);
        assert!(!s.top().contains(&extra));

        // Only key 0 keeps talking; the others are forgotten after the
        // window, which makes room.
        let later = t0 + Duration::from_secs(2);
        s.observe(later, 0, 50, None);
        s.update(later);
        assert_eq!(s.top(), &[0]);
        s.observe(later, extra, 10, None);
        assert_eq!(s.ignored(), 2);
        assert!(s.level_db(extra).is_some());
    }

    #[test]
    fn parses_the_audio_level_element() {
        assert_eq!(parse_audio_level(&[0x80 | 30]), Some((30, true)));
        assert_eq!(parse_audio_level(&[30]), Some((30, false)));
        assert_eq!(parse_audio_level(&[0x7f]), Some((127, false)));
        assert_eq!(parse_audio_level(&[0xff]), Some((127, true)));
        assert_eq!(parse_audio_level(&[0x80]), Some((0, true)));
        assert_eq!(parse_audio_level(&[]), None);
        assert_eq!(parse_audio_level(&[0x80, 0]), None);
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        let t0 = Instant::now();
        let configs = [
            SpeakerConfig {
                top_n: 0,
                ..SpeakerConfig::default()
            },
            SpeakerConfig {
                top_n: usize::MAX,
                window: Duration::ZERO,
                silence_level: 0,
                switch_margin: f32::NAN,
                hold: Duration::MAX,
            },
            SpeakerConfig {
                window: Duration::MAX,
                silence_level: 255,
                switch_margin: f32::INFINITY,
                hold: Duration::ZERO,
                ..SpeakerConfig::default()
            },
        ];
        for config in configs {
            let mut s = Speakers::new(config.clone());
            for i in 0..200u64 {
                // Time jumps around, levels out of range.
                let now = if i % 7 == 0 {
                    t0
                } else {
                    t0 + Duration::from_millis(i * 37)
                };
                s.observe(now, (i % 5) as u32, (i * 13) as u8, None);
                if i % 3 == 0 {
                    s.update(now);
                }
                if i % 50 == 0 {
                    s.remove(1);
                }
            }
            s.update(t0);
            assert!(s.top().len() <= config.top_n.min(5));
            if let Some(k) = s.loudest() {
                assert!(s.level_db(k).is_some());
            }
        }
        // top_n 0: no set, but a dominant speaker.
        let mut room = Room::new(SpeakerConfig {
            top_n: 0,
            ..SpeakerConfig::default()
        });
        room.speak(1000, &FIVE);
        assert!(room.s.top().is_empty());
        assert_eq!(room.s.loudest(), Some(2));
    }
}
