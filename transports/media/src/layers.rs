//! Which simulcast layer of a video track one viewer gets.
//!
//! A simulcast publisher sends the same picture several times, as
//! independent streams of rising resolution and bitrate: its **spatial
//! layers** (a WebRTC publisher's RIDs, lowest first). All of them travel on
//! the track's channel; every viewer has a [`LayerSelector`] that forwards
//! one of them:
//!
//! - It measures each layer's bitrate from the packets it sees (payload plus
//!   a fixed per-packet overhead), averaged over the last second.
//! - With a bandwidth estimate of the viewer's link ([`LayerSelector::set_estimate`]),
//!   it targets the highest layer that fits: the current layer or a lower one
//!   must fit the estimate, a higher one must fit it with a margin
//!   ([`SelectorConfig::up_margin`]), and the choice must hold for a while
//!   (shorter down than up) before it becomes the target. When not even
//!   the lowest layer fits, video pauses (audio is another track and keeps
//!   going) until it fits again. Without an estimate it targets the highest
//!   layer.
//! - A switch happens only at a keyframe of the target layer: until one
//!   arrives the current layer keeps flowing, and the caller asks the
//!   publisher for that layer's keyframe ([`LayerSelector::wants_keyframe`]).
//!   A viewer never gets a delta frame of a layer before its keyframe.
//!
//! The caller keeps sequence numbers, timestamps and picture ids
//! continuous across a switch ([`crate::Rewriter`], [`crate::vp8`]): a
//! [`Verdict::Switch`] starts a new run of its rewriters.
//!
//! Pure state, no clock: time comes in as `Instant`.

use std::time::{Duration, Instant};

/// Spatial layers a selector tells apart; packets of higher layers are
/// dropped.
pub const MAX_SPATIAL: usize = 4;

/// The layer a packet belongs to: its spatial layer (a simulcast stream,
/// 0 = lowest) and temporal layer (0 = base). A track without layers
/// sends everything in layer 0/0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Layer {
    pub spatial: u8,
    pub temporal: u8,
}

/// How a [`LayerSelector`] decides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SelectorConfig {
    /// Bytes added to each packet's payload when measuring a layer's rate
    /// (IP, UDP, RTP with extensions, SRTP tag).
    pub overhead: usize,
    /// A higher layer (or resuming from a pause) needs an estimate of at
    /// least its rate times this.
    pub up_margin: f64,
    /// How long a higher layer must keep fitting before it becomes the target.
    pub up_hold: Duration,
    /// How long the current layer must keep not fitting before a lower one
    /// (or a pause) becomes the target.
    pub down_hold: Duration,
    /// A layer without packets for this long is gone.
    pub inactive_after: Duration,
}

impl Default for SelectorConfig {
    fn default() -> Self {
        SelectorConfig {
            overhead: 60,
            up_margin: 1.15,
            up_hold: Duration::from_millis(1000),
            down_hold: Duration::from_millis(400),
            inactive_after: Duration::from_millis(1500),
        }
    }
}

/// Length of one rate-measurement window; a layer's rate is the average of
/// the last two.
const WINDOW: Duration = Duration::from_millis(500);

/// A layer that sends this many times the estimate stops at once when a
/// lower one is the target, instead of flowing until that one's keyframe.
const FAR_OVER: f64 = 1.5;

/// A paused viewer tries the lowest layer again this long after it paused
/// (for [`RETRY_GRACE`]): with no video flowing, an estimate that fell
/// short would never learn that the link got better.
pub const PAUSE_RETRY: Duration = Duration::from_secs(4);
/// How long such a retry flows before the estimate may pause it again.
pub const RETRY_GRACE: Duration = Duration::from_secs(2);

/// What to do with one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it: it is of the layer being forwarded.
    Forward,
    /// Send it, and it starts the newly forwarded layer (a keyframe): the
    /// caller's rewriters start a new run here.
    Switch,
    /// Do not send it.
    Drop,
}

#[derive(Debug, Clone, Copy, Default)]
struct LayerRate {
    /// Bytes in the window being filled.
    bytes: u64,
    /// Bits per second of the last two complete windows (newest first).
    windows: [u64; 2],
    /// Complete windows seen since the layer (re)appeared, at most 2.
    measured: u8,
    last_seen: Option<Instant>,
}

impl LayerRate {
    fn rate(&self) -> u64 {
        (self.windows[0] + self.windows[1]) / u64::from(self.measured.max(1))
    }
}

/// Counters of one selector, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SelectorStats {
    pub switches_up: u64,
    pub switches_down: u64,
    /// Times video paused because no layer fitted.
    pub pauses: u64,
}

/// Chooses the layer one viewer gets (see the module docs).
#[derive(Debug, Clone)]
pub struct LayerSelector {
    config: SelectorConfig,
    layers: [LayerRate; MAX_SPATIAL],
    window_start: Option<Instant>,
    /// Bits per second available to this track, if estimated.
    estimate: Option<u64>,
    max_spatial: u8,
    /// The layer being forwarded.
    current: Option<u8>,
    /// The layer wanted: a switch to it happens at its next keyframe.
    /// `None` with an estimate that fits nothing: paused.
    target: Option<u8>,
    /// A different choice than the target, and since when it holds.
    pending: Option<(Option<u8>, Instant)>,
    /// The layer forwarded last (kept while stopped for a switch down).
    last: Option<u8>,
    /// Paused since then: after [`PAUSE_RETRY`] the lowest layer is tried
    /// again.
    paused_at: Option<Instant>,
    /// A retry after a pause holds until then, whatever the estimate says:
    /// the estimator needs media to measure the link with.
    retry_until: Option<Instant>,
    stats: SelectorStats,
}

impl LayerSelector {
    pub fn new(config: SelectorConfig) -> LayerSelector {
        LayerSelector {
            config,
            layers: [LayerRate::default(); MAX_SPATIAL],
            window_start: None,
            estimate: None,
            max_spatial: (MAX_SPATIAL - 1) as u8,
            current: None,
            target: None,
            pending: None,
            last: None,
            paused_at: None,
            retry_until: None,
            stats: SelectorStats::default(),
        }
    }

    /// The layer being forwarded.
    pub fn current(&self) -> Option<u8> {
        self.current
    }

    /// The layer it switches to at that layer's next keyframe.
    pub fn target(&self) -> Option<u8> {
        self.target
    }

    /// The last bandwidth estimate given, bits per second.
    pub fn estimate(&self) -> Option<u64> {
        self.estimate
    }

    pub fn stats(&self) -> SelectorStats {
        self.stats
    }

    /// Whether video is paused because no layer fits the estimate.
    pub fn is_paused(&self) -> bool {
        self.target.is_none() && self.estimate.is_some() && self.any_active()
    }

    /// The measured rate of a spatial layer, bits per second (0 when it is
    /// not active).
    pub fn layer_rate(&self, spatial: u8) -> u64 {
        self.layers
            .get(usize::from(spatial))
            .filter(|l| l.measured > 0)
            .map_or(0, LayerRate::rate)
    }

    /// The viewer's preference: no spatial layer above `max` (the highest
    /// with `None`).
    pub fn set_max_spatial(&mut self, now: Instant, max: Option<u8>) {
        self.max_spatial = max.unwrap_or(u8::MAX).min((MAX_SPATIAL - 1) as u8);
        self.pending = None;
        self.choose(now);
    }

    /// The bandwidth available to this track on the viewer's link, bits per
    /// second.
    pub fn set_estimate(&mut self, now: Instant, bps: u64) {
        self.estimate = Some(bps);
        self.choose(now);
    }

    /// Whether it waits for its first picture, before any layer's rate is
    /// known: the first keyframe of layer 0 starts it.
    pub fn starting(&self) -> bool {
        self.current.is_none() && self.target.is_none() && !self.any_active()
    }

    /// The layer whose keyframe the selector waits for, if any: ask the
    /// publisher for it (within the caller's keyframe-request limits).
    pub fn wants_keyframe(&self) -> Option<u8> {
        match self.target {
            Some(t) if self.current != Some(t) => Some(t),
            _ => None,
        }
    }

    /// What to send the viewer to find the next layer up, and what it would
    /// like eventually (bits per second): the rate of the next active layer
    /// above the current one, and of the highest allowed one, each with the
    /// up margin. For a bandwidth estimator that probes with padding.
    pub fn wanted_bitrate(&self, now: Instant) -> (u64, u64) {
        let margin = |rate: u64| (rate as f64 * self.config.up_margin) as u64;
        let active: Vec<u8> = (0..MAX_SPATIAL as u8)
            .filter(|&s| s <= self.max_spatial && self.active(now, s))
            .collect();
        let next = active
            .iter()
            .find(|&&s| self.current.is_none_or(|c| s > c))
            .map_or(0, |&s| margin(self.layer_rate(s)));
        let top = active.last().map_or(0, |&s| margin(self.layer_rate(s)));
        (next, top)
    }

    /// One packet of the track (any layer): counts it toward its layer's
    /// rate and says whether to send it. `keyframe` tells whether the packet
    /// starts a keyframe; it is asked only when that decides (a packet of
    /// the target layer while waiting to switch).
    pub fn on_packet(
        &mut self,
        now: Instant,
        layer: Layer,
        payload_len: usize,
        keyframe: impl FnOnce() -> bool,
    ) -> Verdict {
        let s = layer.spatial;
        let Some(rate) = self.layers.get_mut(usize::from(s)) else {
            return Verdict::Drop;
        };
        rate.bytes += (payload_len + self.config.overhead) as u64;
        let gone = rate
            .last_seen
            .is_none_or(|at| now.saturating_duration_since(at) >= self.config.inactive_after);
        if gone {
            // (Re)appeared: measured from scratch.
            *rate = LayerRate {
                bytes: rate.bytes,
                ..LayerRate::default()
            };
        }
        rate.last_seen = Some(now);
        self.roll(now);
        if self.starting() {
            // Nothing measured yet: start on the first keyframe of the
            // lowest layer (a quick first picture that any link carries),
            // then adapt.
            if s != 0 || !keyframe() {
                return Verdict::Drop;
            }
            self.current = Some(s);
            self.target = Some(s);
            self.last = Some(s);
            return Verdict::Switch;
        }
        if self.current == Some(s) {
            if self.target.is_none() || self.far_over(s) {
                // Paused, or far over the link while a lower layer's
                // keyframe is awaited: stop at once, so that the link
                // drains and that keyframe gets through.
                self.current = None;
                return Verdict::Drop;
            }
            return Verdict::Forward;
        }
        if self.target == Some(s) && keyframe() {
            match self.last {
                Some(c) if c > s => self.stats.switches_down += 1,
                Some(c) if c < s => self.stats.switches_up += 1,
                _ => {}
            }
            self.current = Some(s);
            self.last = Some(s);
            return Verdict::Switch;
        }
        Verdict::Drop
    }

    /// Whether layer `s` is waiting to be left for a lower one and sends
    /// more than [`FAR_OVER`] times the estimate.
    fn far_over(&self, s: u8) -> bool {
        let lower = self.target.is_some_and(|t| t < s);
        let rate = self.layer_rate(s) as f64;
        lower && self.estimate.is_some_and(|e| rate > e as f64 * FAR_OVER)
    }

    /// Closes rate windows that ended, then chooses again.
    fn roll(&mut self, now: Instant) {
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed < WINDOW {
            return;
        }
        let windows = (elapsed.as_nanos() / WINDOW.as_nanos()).min(2) as u32;
        let secs = WINDOW.as_secs_f64();
        for l in &mut self.layers {
            let bps = (l.bytes as f64 * 8.0 / secs) as u64;
            l.windows = [bps, l.windows[0]];
            if windows > 1 {
                l.windows = [0, bps];
            }
            if l.last_seen.is_some() {
                l.measured = (l.measured + windows as u8).min(2);
            }
            l.bytes = 0;
        }
        self.window_start = Some(if windows >= 2 { now } else { start + WINDOW });
        self.choose(now);
    }

    fn active(&self, now: Instant, spatial: u8) -> bool {
        self.layers.get(usize::from(spatial)).is_some_and(|l| {
            l.measured > 0
                && l.last_seen.is_some_and(|at| {
                    now.saturating_duration_since(at) < self.config.inactive_after
                })
        })
    }

    fn any_active(&self) -> bool {
        self.layers.iter().any(|l| l.measured > 0)
    }

    /// The layer that fits best now, before holds.
    fn best(&self, now: Instant) -> Option<u8> {
        let mut active = (0..MAX_SPATIAL as u8)
            .filter(|&s| self.active(now, s))
            .peekable();
        active.peek()?;
        let allowed: Vec<u8> = active.collect();
        if allowed.len() == 1 {
            // One layer flows: nothing cheaper to offer, so it is forwarded
            // whatever the estimate (a track without simulcast is never
            // paused; the viewer's loss recovery deals with congestion).
            return Some(allowed[0]);
        }
        let preferred: Vec<u8> = allowed
            .iter()
            .copied()
            .filter(|&s| s <= self.max_spatial)
            .collect();
        // A preference below every active layer still gets the lowest.
        let candidates = if preferred.is_empty() {
            vec![allowed[0]]
        } else {
            preferred
        };
        let Some(estimate) = self.estimate else {
            return candidates.last().copied();
        };
        let fits = |s: u8| {
            let rate = self.layer_rate(s) as f64;
            let margin = match self.current {
                Some(c) if s <= c => 1.0,
                _ => self.config.up_margin,
            };
            rate * margin <= estimate as f64
        };
        candidates.iter().rev().copied().find(|&s| fits(s))
    }

    fn choose(&mut self, now: Instant) {
        if !self.any_active() {
            return;
        }
        let mut best = self.best(now);
        if best.is_none() && self.retry_until.is_some_and(|until| now < until) {
            best = self.target;
        }
        if best.is_none() && self.paused_at.is_some_and(|at| now >= at + PAUSE_RETRY) {
            // Try the lowest layer again; the estimate decides after the grace.
            best = (0..MAX_SPATIAL as u8).find(|&s| self.active(now, s));
            self.target = best;
            self.paused_at = None;
            self.retry_until = Some(now + RETRY_GRACE);
            self.pending = None;
            return;
        }
        if best == self.target {
            self.pending = None;
            return;
        }
        // The current layer vanished: no reason to wait.
        let current_gone = self.current.is_some_and(|c| !self.active(now, c));
        let up = match (best, self.target) {
            (Some(b), Some(t)) => b > t,
            (Some(_), None) => true,
            (None, _) => false,
        };
        let hold = if current_gone || self.target.is_none() && self.estimate.is_none() {
            Duration::ZERO
        } else if up {
            self.config.up_hold
        } else {
            self.config.down_hold
        };
        let since = match self.pending {
            Some((choice, since)) if choice == best => since,
            _ => {
                self.pending = Some((best, now));
                now
            }
        };
        if now.saturating_duration_since(since) >= hold {
            if best.is_none() && self.target.is_some() {
                self.stats.pauses += 1;
                self.paused_at = Some(now);
            }
            self.target = best;
            self.pending = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Three layers of 150, 500 and 1500 kbit/s (payload + overhead), 30
    /// frames a second, a keyframe every `gop` frames.
    struct Source {
        t0: Instant,
        frame: u64,
        gop: u64,
    }

    impl Source {
        /// Packets of one frame time: (layer, payload size, keyframe start).
        fn frame(&mut self) -> Vec<(u8, usize, bool)> {
            let mut out = Vec::new();
            for (s, kbps) in [(0u8, 150u64), (1, 500), (2, 1500)] {
                let bytes = kbps * 1000 / 8 / 30;
                let packets = bytes.div_ceil(1000);
                for p in 0..packets {
                    let size = (bytes / packets) as usize - 60;
                    out.push((s, size, p == 0 && self.frame.is_multiple_of(self.gop)));
                }
            }
            self.frame += 1;
            out
        }

        fn now(&self) -> Instant {
            self.t0 + Duration::from_micros(self.frame * 33_333)
        }
    }

    /// Runs `frames` frame times; returns the forwarded (layer, keyframe)
    /// packets. `estimate` gives the link's estimate at each time.
    fn run(
        sel: &mut LayerSelector,
        src: &mut Source,
        frames: u64,
        estimate: impl Fn(Instant) -> Option<u64>,
    ) -> Vec<(Instant, u8, bool, Verdict)> {
        let mut out = Vec::new();
        for _ in 0..frames {
            let now = src.now();
            if let Some(e) = estimate(now) {
                sel.set_estimate(now, e);
            }
            for (s, size, key) in src.frame() {
                let layer = Layer {
                    spatial: s,
                    temporal: 0,
                };
                let v = sel.on_packet(now, layer, size, || key);
                if v != Verdict::Drop {
                    out.push((now, s, key, v));
                }
            }
        }
        out
    }

    /// Every forwarded run of a layer starts with its keyframe.
    fn assert_switches_at_keyframes(out: &[(Instant, u8, bool, Verdict)]) {
        let mut layer = None;
        for &(_, s, key, v) in out {
            if layer != Some(s) {
                assert!(key, "layer {s} started without a keyframe");
                assert_eq!(v, Verdict::Switch);
                layer = Some(s);
            } else {
                assert_eq!(v, Verdict::Forward);
            }
        }
    }

    #[test]
    fn without_an_estimate_it_forwards_the_top_layer() {
        let mut src = Source {
            t0: Instant::now(),
            frame: 0,
            gop: 30,
        };
        let mut sel = LayerSelector::new(SelectorConfig::default());
        let out = run(&mut sel, &mut src, 150, |_| None);
        assert_eq!(sel.current(), Some(2));
        assert_switches_at_keyframes(&out);
        let rate = sel.layer_rate(2);
        assert!((1_400_000..1_600_000).contains(&rate), "top layer {rate}");
        let rate = sel.layer_rate(0);
        assert!((140_000..160_000).contains(&rate), "low layer {rate}");
    }

    #[test]
    fn a_link_that_drops_steps_down_and_comes_back_at_keyframes_only() {
        let t0 = Instant::now();
        let mut src = Source {
            t0,
            frame: 0,
            gop: 15,
        };
        let mut sel = LayerSelector::new(SelectorConfig::default());
        // 2 Mbit/s for 5 s, 300 kbit/s for 5 s, 2 Mbit/s again.
        let link = |now: Instant| {
            let t = now - t0;
            Some(if t >= MS * 5000 && t < MS * 10_000 {
                300_000
            } else {
                2_000_000
            })
        };
        let out = run(&mut sel, &mut src, 450, link);
        assert_switches_at_keyframes(&out);
        let layer_at = |ms: u64| {
            out.iter()
                .rev()
                .find(|p| p.0 <= t0 + MS * ms as u32)
                .map(|p| p.1)
        };
        assert_eq!(layer_at(4900), Some(2), "top layer on 2 Mbit/s");
        // Down within 2 s of the drop, to the layer that fits 300 kbit/s.
        assert_eq!(layer_at(7000), Some(0));
        // Up again within 5 s of the link's return.
        assert_eq!(layer_at(14_900), Some(2));
        let stats = sel.stats();
        assert!(
            stats.switches_down >= 1 && stats.switches_up >= 1,
            "{stats:?}"
        );
        assert!(
            stats.switches_down + stats.switches_up <= 6,
            "no flapping: {stats:?}"
        );
    }

    #[test]
    fn nothing_fits_pauses_video_and_it_resumes() {
        let t0 = Instant::now();
        let mut src = Source {
            t0,
            frame: 0,
            gop: 15,
        };
        let mut sel = LayerSelector::new(SelectorConfig::default());
        let link = |now: Instant| {
            let t = now - t0;
            Some(if t >= MS * 3000 && t < MS * 6000 {
                60_000
            } else {
                400_000
            })
        };
        let out = run(&mut sel, &mut src, 300, link);
        assert_switches_at_keyframes_or_pause(&out);
        let sent_between = |a: u64, b: u64| {
            out.iter()
                .filter(|p| p.0 >= t0 + MS * a as u32 && p.0 < t0 + MS * b as u32)
                .count()
        };
        assert!(sent_between(1500, 3000) > 0);
        assert_eq!(sent_between(4000, 6000), 0, "paused");
        assert!(sent_between(8000, 10_000) > 0, "resumed");
        assert_eq!(sel.stats().pauses, 1);
        assert_eq!(sel.current(), Some(0), "400 kbit/s carries 150, not 500");
    }

    fn assert_switches_at_keyframes_or_pause(out: &[(Instant, u8, bool, Verdict)]) {
        // After a gap (pause), the first packet is a keyframe too.
        let mut last: Option<(Instant, u8)> = None;
        for &(at, s, key, _) in out {
            let new_run = last.is_none_or(|(t, l)| l != s || at - t > MS * 200);
            if new_run {
                assert!(key, "run of layer {s} started without a keyframe");
            }
            last = Some((at, s));
        }
    }

    #[test]
    fn a_long_pause_retries_the_lowest_layer() {
        let t0 = Instant::now();
        let mut src = Source {
            t0,
            frame: 0,
            gop: 15,
        };
        let mut sel = LayerSelector::new(SelectorConfig::default());
        // Fine for 2 s, then an estimate that fits nothing for good.
        let link = |now: Instant| {
            Some(if now - t0 < MS * 2000 {
                400_000
            } else {
                50_000
            })
        };
        let out = run(&mut sel, &mut src, 450, link);
        let sent_between = |a: u64, b: u64| {
            out.iter()
                .filter(|p| p.0 >= t0 + MS * a as u32 && p.0 < t0 + MS * b as u32)
                .count()
        };
        assert_eq!(sent_between(3000, 6000), 0, "paused");
        // PAUSE_RETRY after the pause (~2.4 s) the low layer flows again
        // for RETRY_GRACE, then pauses again, and retries again.
        assert!(sent_between(6500, 8300) > 0, "retried");
        assert_eq!(sent_between(9000, 10_000), 0, "paused again");
        assert!(sent_between(12_500, 14_500) > 0, "retried again");
        assert!(sel.stats().pauses >= 2, "{:?}", sel.stats());
    }

    #[test]
    fn the_viewers_preference_caps_the_layer() {
        let mut src = Source {
            t0: Instant::now(),
            frame: 0,
            gop: 15,
        };
        let mut sel = LayerSelector::new(SelectorConfig::default());
        sel.set_max_spatial(src.now(), Some(1));
        let out = run(&mut sel, &mut src, 120, |_| Some(5_000_000));
        assert_switches_at_keyframes(&out);
        assert_eq!(sel.current(), Some(1));
        assert!(out.iter().all(|p| p.1 <= 1));
    }

    #[test]
    fn a_layer_that_stops_is_replaced_by_one_that_flows() {
        let t0 = Instant::now();
        let mut sel = LayerSelector::new(SelectorConfig::default());
        let mut now = t0;
        let mut frame = 0u64;
        let mut forwarded = Vec::new();
        // Layers 0 and 2 flow for 3 s, then layer 2 stops (the publisher's
        // own uplink got worse).
        while now < t0 + MS * 6000 {
            for s in [0u8, 2] {
                if s == 2 && now >= t0 + MS * 3000 {
                    continue;
                }
                let key = frame.is_multiple_of(15);
                let layer = Layer {
                    spatial: s,
                    temporal: 0,
                };
                if sel.on_packet(now, layer, 1000, || key) != Verdict::Drop {
                    forwarded.push((now, s));
                }
            }
            frame += 1;
            now += MS * 33;
        }
        assert_eq!(sel.current(), Some(0));
        let first_low = forwarded
            .iter()
            .find(|p| p.1 == 0 && p.0 > t0 + MS * 2000)
            .unwrap();
        assert!(first_low.0 < t0 + MS * 5600, "{:?}", first_low.0 - t0);
    }

    #[test]
    fn wanted_bitrate_names_the_next_layer_and_the_top() {
        let mut src = Source {
            t0: Instant::now(),
            frame: 0,
            gop: 15,
        };
        let mut sel = LayerSelector::new(SelectorConfig::default());
        run(&mut sel, &mut src, 120, |_| Some(700_000));
        assert_eq!(sel.current(), Some(1));
        let (next, top) = sel.wanted_bitrate(src.now());
        assert!((1_700_000..2_000_000).contains(&next), "{next}");
        assert_eq!(next, top);
        assert_eq!(sel.wants_keyframe(), None);
    }

    #[test]
    fn packets_of_unknown_layers_are_dropped() {
        let mut sel = LayerSelector::new(SelectorConfig::default());
        let layer = Layer {
            spatial: 9,
            temporal: 0,
        };
        assert_eq!(
            sel.on_packet(Instant::now(), layer, 100, || true),
            Verdict::Drop
        );
    }
}
