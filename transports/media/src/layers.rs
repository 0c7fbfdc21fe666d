//! Which layer of a video track one viewer gets.
//!
//! A publisher may send one picture at several qualities:
//!
//! - **Simulcast**: independent streams of rising resolution and bitrate,
//!   its **spatial layers** (a WebRTC publisher's RIDs, lowest first). A
//!   viewer gets exactly one of them.
//! - **SVC** (VP9 k-SVC): one stream whose spatial layers each build on the
//!   ones below; a viewer of spatial layer `s` gets layers `0..=s` of every
//!   picture.
//! - **Temporal layers** (VP8 and VP9 `L1T3`, within either of the above):
//!   pictures of layer `t` refer only to layers `0..=t`, so dropping the
//!   upper ones lowers the frame rate, not the picture.
//!
//! All of them travel on the track's channel; every viewer has a
//! [`LayerSelector`] that forwards one [`Layer`] (spatial, temporal):
//!
//! - It measures each layer's bitrate from the packets it sees (payload plus
//!   a fixed per-packet overhead), averaged over the last second. What a
//!   layer costs the viewer is the sum of what it needs: its temporal layers
//!   `0..=t`, and with SVC the spatial layers below.
//! - With a bandwidth estimate of the viewer's link ([`LayerSelector::set_estimate`]),
//!   it targets the highest layer that fits, in (spatial, temporal) order
//!   (a spatial layer above the lowest only with all its temporal layers:
//!   fewer frames only where the alternative is a pause):
//!   the current layer or a lower one must fit the estimate, a higher one
//!   must fit it with a margin ([`SelectorConfig::up_margin`]), and the
//!   choice must hold for a while (shorter down than up) before it becomes
//!   the target. When not even the lowest layer fits, video pauses (audio is
//!   another track and keeps going) until it fits again. Without an
//!   estimate it targets the highest layer.
//! - It changes layers only where the viewer's decoder can follow. A new
//!   simulcast stream, and a higher SVC spatial layer, start at a keyframe:
//!   until one arrives the current layer keeps flowing, and the caller asks
//!   the publisher for it ([`LayerSelector::wants_keyframe`]). A lower SVC
//!   spatial layer starts with the next picture. Fewer temporal layers take
//!   effect at the next frame, a higher one at its next switching point (a
//!   frame that refers only to the layers below). A viewer never gets a
//!   delta frame it cannot decode.
//!
//! The caller keeps sequence numbers, timestamps and picture ids
//! continuous ([`crate::Rewriter`], [`crate::vp8`]): a [`Verdict::Switch`]
//! starts a new run of its rewriters, and a packet dropped from the stream
//! being forwarded is skipped ([`crate::Rewriter::skip`]).
//!
//! Pure state, no clock: time comes in as `Instant`.

use std::time::{Duration, Instant};

use crate::Codec;

/// Spatial layers a selector tells apart; packets of higher layers are
/// dropped.
pub const MAX_SPATIAL: usize = 4;

/// Temporal layers a selector tells apart; higher ones count as the top
/// one.
pub const MAX_TEMPORAL: usize = 4;

/// The layer a packet belongs to: its spatial layer (a simulcast stream or
/// an SVC spatial layer, 0 = lowest) and temporal layer (0 = base). A
/// track without layers sends everything in layer 0/0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Layer {
    pub spatial: u8,
    pub temporal: u8,
}

/// What the selector needs to know of one video packet, from the track
/// and the codec's payload descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LayerPacket {
    pub layer: Layer,
    /// The spatial layer is an SVC layer of one stream (built on the
    /// layers below), not a simulcast stream.
    pub svc: bool,
    /// The packet starts a frame of its layer.
    pub frame_start: bool,
    /// The packet ends a frame of its layer (with SVC, the viewer's last
    /// layer of a picture gets the RTP marker).
    pub frame_end: bool,
    /// The frame refers only to temporal layers below its own, so a viewer
    /// can start getting its layer here (VP8's layer sync bit Y, VP9's
    /// switching-up point U as encoders set it).
    pub switch_up: bool,
    /// With `switch_up`, the highest temporal layer that can start at this
    /// frame, when that is above the frame's own (a dependency
    /// descriptor's "switch" indication for that layer's decode target: a
    /// base-layer frame may start every layer above it); the frame's own
    /// layer is meant with 0.
    pub switch_up_to: u8,
}

impl LayerPacket {
    /// What the payload of a video packet of `codec` says of its layers;
    /// `stream` is the packet's simulcast stream (its spatial layer as the
    /// publisher's transport tagged it). VP8 gives temporal layers, VP9
    /// temporal and SVC spatial layers (a spatial layer above 0 in the base
    /// stream marks the track as SVC); other codecs say nothing beyond the
    /// stream. Never panics on bad input: a descriptor that does not parse
    /// says nothing either.
    pub fn describe(codec: Codec, stream: Layer, payload: &[u8]) -> LayerPacket {
        let mut p = LayerPacket::from(stream);
        match codec {
            Codec::Vp8 => {
                if let Some(d) = crate::vp8::parse(payload) {
                    p = LayerPacket::vp8(stream, &d);
                }
            }
            Codec::Vp9 => {
                if let Some(d) = crate::vp9::parse(payload) {
                    p.layer.temporal = d.tid;
                    // An SVC stream: a spatial layer above the base, or a
                    // keyframe's scalability structure announcing several.
                    let several = d.ss_spatial_layers.is_some_and(|n| n > 1);
                    if stream.spatial == 0 && (d.sid > 0 || several) {
                        p.layer.spatial = d.sid;
                        p.svc = true;
                    }
                    p.frame_start = d.begin;
                    p.frame_end = d.end;
                    p.switch_up = d.switch_up;
                }
            }
            _ => {}
        }
        p
    }
}

impl LayerPacket {
    /// [`LayerPacket::describe`] of a VP8 packet whose descriptor the
    /// caller parsed already.
    pub fn vp8(stream: Layer, d: &crate::vp8::Vp8Descriptor) -> LayerPacket {
        let mut p = LayerPacket::from(stream);
        p.layer.temporal = d.tid.unwrap_or(0);
        p.frame_start = d.start && d.partition == 0;
        p.switch_up = d.layer_sync;
        p
    }
}

impl From<Layer> for LayerPacket {
    /// A packet of a simulcast stream without temporal layers.
    fn from(layer: Layer) -> Self {
        LayerPacket {
            layer,
            ..LayerPacket::default()
        }
    }
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

/// A layer that sends this many times the estimate makes a lower one the
/// target at once (no hold), and stops at once, instead of flowing until
/// that one's keyframe.
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
    /// Send it, and it starts the newly forwarded stream (a keyframe): the
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
    /// Switches to a higher spatial layer.
    pub switches_up: u64,
    /// Switches to a lower spatial layer.
    pub switches_down: u64,
    /// Times video paused because no layer fitted.
    pub pauses: u64,
}

/// Chooses the layer one viewer gets (see the module docs).
#[derive(Debug, Clone)]
pub struct LayerSelector {
    config: SelectorConfig,
    layers: [[LayerRate; MAX_TEMPORAL]; MAX_SPATIAL],
    window_start: Option<Instant>,
    /// Spatial layers are SVC layers (seen in a packet).
    svc: bool,
    /// Bits per second available to this track, if estimated.
    estimate: Option<u64>,
    max_spatial: u8,
    max_temporal: u8,
    /// The layer being forwarded.
    current: Option<Layer>,
    /// The layer wanted: the switch to it happens where the decoder can
    /// follow (see the module docs). `None` with an estimate that fits
    /// nothing: paused.
    target: Option<Layer>,
    /// A different choice than the target, and since when it holds.
    pending: Option<(Option<Layer>, Instant)>,
    /// The layer forwarded last (kept while stopped for a switch down).
    last: Option<Layer>,
    /// Paused since then: after [`PAUSE_RETRY`] the lowest layer is tried
    /// again.
    paused_at: Option<Instant>,
    /// A retry after a pause holds until then, whatever the estimate says:
    /// the estimator needs media to measure the link with.
    retry_until: Option<Instant>,
    stats: SelectorStats,
}

/// Every temporal layer of the lowest spatial layer: where a viewer starts,
/// before any rate is known.
const START: Layer = Layer {
    spatial: 0,
    temporal: (MAX_TEMPORAL - 1) as u8,
};

impl LayerSelector {
    pub fn new(config: SelectorConfig) -> LayerSelector {
        LayerSelector {
            config,
            layers: [[LayerRate::default(); MAX_TEMPORAL]; MAX_SPATIAL],
            window_start: None,
            svc: false,
            estimate: None,
            max_spatial: (MAX_SPATIAL - 1) as u8,
            max_temporal: (MAX_TEMPORAL - 1) as u8,
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
    pub fn current(&self) -> Option<Layer> {
        self.current
    }

    /// The layer it switches to where the viewer's decoder can follow.
    pub fn target(&self) -> Option<Layer> {
        self.target
    }

    /// Whether the track's spatial layers are SVC layers of one stream.
    pub fn is_svc(&self) -> bool {
        self.svc
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

    /// What forwarding `layer` costs, bits per second: the measured rates
    /// of the layers it needs (0 for those not active).
    pub fn layer_rate(&self, layer: Layer) -> u64 {
        let spatial = match self.svc {
            true => 0..=layer.spatial,
            false => layer.spatial..=layer.spatial,
        };
        spatial
            .flat_map(|s| (0..=layer.temporal).map(move |t| (s, t)))
            .filter_map(|(s, t)| self.rate(s, t))
            .filter(|r| r.measured > 0)
            .map(LayerRate::rate)
            .sum()
    }

    /// The viewer's preference: no spatial layer above `max` (the highest
    /// with `None`).
    pub fn set_max_spatial(&mut self, now: Instant, max: Option<u8>) {
        self.max_spatial = max.unwrap_or(u8::MAX).min((MAX_SPATIAL - 1) as u8);
        self.pending = None;
        self.choose(now);
    }

    /// The viewer's preference: no temporal layer above `max` (the highest
    /// with `None`).
    pub fn set_max_temporal(&mut self, now: Instant, max: Option<u8>) {
        self.max_temporal = max.unwrap_or(u8::MAX).min((MAX_TEMPORAL - 1) as u8);
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

    /// The spatial layer whose keyframe the selector waits for, if any: ask
    /// the publisher for it (within the caller's keyframe-request limits).
    /// With SVC that is the stream's keyframe, spatial layer 0.
    pub fn wants_keyframe(&self) -> Option<u8> {
        if self.starting() {
            return Some(0);
        }
        let target = self.target?;
        let needs = match self.current {
            None => true,
            Some(c) if self.svc => target.spatial > c.spatial,
            Some(c) => target.spatial != c.spatial,
        };
        match (needs, self.svc) {
            (false, _) => None,
            (true, true) => Some(0),
            (true, false) => Some(target.spatial),
        }
    }

    /// The spatial layers this viewer may take soon, one bit each (bit `s`
    /// for layer `s`): those up to the one it forwards or switches to, and
    /// one more to climb to (whose rate it must see to know that it fits);
    /// every allowed layer while it has no estimate to choose by. Never
    /// above its preference. A node that relays a track from another node
    /// carries only the layers some viewer wants.
    pub fn wanted_spatial(&self) -> u8 {
        let below = |s: u8| ((1u16 << (u16::from(s) + 1)) - 1) as u8;
        let cap = self.max_spatial;
        if self.svc || self.estimate.is_none() {
            return below(cap);
        }
        match self.target.or(self.current) {
            Some(l) => below(cap.min(l.spatial.saturating_add(1))),
            None if self.is_paused() => 1,
            None => below(cap),
        }
    }

    /// What to send the viewer to find the next layer up, and what it would
    /// like eventually (bits per second): the cost of the next layer above
    /// the current one, and of the highest allowed one, each with the up
    /// margin. For a bandwidth estimator that probes with padding.
    pub fn wanted_bitrate(&self, now: Instant) -> (u64, u64) {
        let margin = |l: Layer| (self.layer_rate(l) as f64 * self.config.up_margin) as u64;
        let candidates = self.preferred(now);
        let next = candidates
            .iter()
            .find(|&&l| self.current.is_none_or(|c| l > c))
            .map_or(0, |&l| margin(l));
        let top = candidates.last().map_or(0, |&l| margin(l));
        (next, top)
    }

    /// One packet of the track (any layer): counts it toward its layer's
    /// rate and says whether to send it. `keyframe` tells whether the packet
    /// starts a keyframe; it is asked only when that decides (while waiting
    /// to start or switch).
    pub fn on_packet(
        &mut self,
        now: Instant,
        packet: LayerPacket,
        payload_len: usize,
        keyframe: impl FnOnce() -> bool,
    ) -> Verdict {
        let s = packet.layer.spatial;
        let t = packet.layer.temporal.min((MAX_TEMPORAL - 1) as u8);
        let overhead = self.config.overhead;
        let inactive_after = self.config.inactive_after;
        let Some(rate) = self.rate_mut(s, t) else {
            return Verdict::Drop;
        };
        rate.bytes += (payload_len + overhead) as u64;
        let gone = rate
            .last_seen
            .is_none_or(|at| now.saturating_duration_since(at) >= inactive_after);
        if gone {
            // (Re)appeared: measured from scratch.
            *rate = LayerRate {
                bytes: rate.bytes,
                ..LayerRate::default()
            };
        }
        rate.last_seen = Some(now);
        if packet.svc && !self.svc {
            self.svc = true;
            self.pending = None;
        }
        self.roll(now);
        let layer = Layer {
            spatial: s,
            temporal: t,
        };
        if self.starting() {
            // Nothing measured yet: start on the first keyframe of the
            // lowest layer (a quick first picture that any link carries),
            // then adapt.
            if s != 0 || !keyframe() {
                return Verdict::Drop;
            }
            self.current = Some(START);
            self.target = Some(START);
            self.last = Some(START);
            return Verdict::Switch;
        }
        let Some(target) = self.target else {
            // Paused: stop at once, so that the link drains.
            self.current = None;
            return Verdict::Drop;
        };
        let switched = self.follow(now, packet, target, keyframe);
        let Some(c) = self.current else {
            return Verdict::Drop;
        };
        let spatial_ok = match self.svc {
            true => s <= c.spatial,
            false => s == c.spatial,
        };
        match (spatial_ok && layer.temporal <= c.temporal, switched) {
            (false, _) => Verdict::Drop,
            (true, true) => Verdict::Switch,
            (true, false) => Verdict::Forward,
        }
    }

    /// Moves the current layer toward `target` where this packet allows it;
    /// returns whether a new stream starts with it (a simulcast switch, or
    /// a start after a pause).
    fn follow(
        &mut self,
        now: Instant,
        p: LayerPacket,
        target: Layer,
        keyframe: impl FnOnce() -> bool,
    ) -> bool {
        let s = p.layer.spatial;
        let Some(c) = self.current else {
            // Stopped: start again at a keyframe of the target (with SVC,
            // the stream's keyframe begins at layer 0).
            let at = if self.svc { 0 } else { target.spatial };
            if s != at || !keyframe() {
                return false;
            }
            self.switch_to(target);
            return true;
        };
        if c == target {
            return false;
        }
        if c.spatial != target.spatial {
            if self.svc {
                // Down: the lower layers were flowing all along, so the next
                // picture can do without the upper ones. Up: the upper
                // layers need a keyframe.
                let picture_start = p.frame_start && s == 0;
                let ready = match target.spatial < c.spatial {
                    true => picture_start,
                    false => s == 0 && keyframe(),
                };
                if ready {
                    self.switch_to(target);
                }
                return false;
            }
            if s == target.spatial && keyframe() {
                self.switch_to(target);
                return true;
            }
            if s == c.spatial && self.far_over(c, target) {
                // Far over the link while the lower layer's keyframe is
                // awaited: stop at once, so that the link drains and that
                // keyframe gets through.
                self.current = None;
            }
            return false;
        }
        // The same spatial layer, other temporal layers: fewer at the start
        // of a frame of the stream (of a picture, with SVC); more at a
        // switching point of a higher layer, a frame that refers only to
        // layers below its own: up to that frame's layer.
        let own_frame = p.frame_start && s == if self.svc { 0 } else { c.spatial };
        let t = p.layer.temporal;
        let next = if target.temporal < c.temporal {
            // Fewer temporal layers than flow is no change at all (the
            // start, or a codec that does not say): at once.
            let nothing_above = self
                .top_temporal(now, c.spatial)
                .is_none_or(|top| top <= target.temporal);
            (nothing_above || own_frame).then_some(target.temporal)
        } else {
            let reach = p.switch_up_to.max(t).min(target.temporal);
            let switch = p.frame_start && p.switch_up && reach > c.temporal && t <= target.temporal;
            switch.then_some(reach)
        };
        if let Some(temporal) = next {
            let layer = Layer { temporal, ..c };
            self.current = Some(layer);
            self.last = Some(layer);
        }
        false
    }

    fn switch_to(&mut self, target: Layer) {
        match self.last {
            Some(l) if l.spatial > target.spatial => self.stats.switches_down += 1,
            Some(l) if l.spatial < target.spatial => self.stats.switches_up += 1,
            _ => {}
        }
        self.current = Some(target);
        self.last = Some(target);
    }

    /// Whether the current layer `c` is waiting to be left for a lower
    /// `target` and costs more than [`FAR_OVER`] times the estimate.
    fn far_over(&self, c: Layer, target: Layer) -> bool {
        let rate = self.layer_rate(c) as f64;
        target < c && self.estimate.is_some_and(|e| rate > e as f64 * FAR_OVER)
    }

    fn rate(&self, s: u8, t: u8) -> Option<&LayerRate> {
        self.layers.get(usize::from(s))?.get(usize::from(t))
    }

    fn rate_mut(&mut self, s: u8, t: u8) -> Option<&mut LayerRate> {
        self.layers.get_mut(usize::from(s))?.get_mut(usize::from(t))
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
        for l in self.layers.iter_mut().flatten() {
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

    fn active_rate(&self, now: Instant, l: &LayerRate) -> bool {
        l.measured > 0
            && l.last_seen
                .is_some_and(|at| now.saturating_duration_since(at) < self.config.inactive_after)
    }

    /// The highest active temporal layer of spatial layer `s`, if any is
    /// active.
    fn top_temporal(&self, now: Instant, s: u8) -> Option<u8> {
        let layers = self.layers.get(usize::from(s))?;
        (0..MAX_TEMPORAL as u8)
            .rev()
            .find(|&t| self.active_rate(now, &layers[usize::from(t)]))
    }

    fn any_active(&self) -> bool {
        self.layers.iter().flatten().any(|l| l.measured > 0)
    }

    /// Every layer one could forward now, lowest first: every temporal
    /// layer of the lowest spatial layer; of a higher one, only its top (a
    /// lower resolution at the full frame rate rather than a higher one
    /// that stutters; fewer frames only where the alternative is a pause).
    fn candidates(&self, now: Instant) -> Vec<Layer> {
        let mut out = Vec::new();
        for s in 0..MAX_SPATIAL as u8 {
            let Some(top) = self.top_temporal(now, s) else {
                continue;
            };
            let lowest = if out.is_empty() {
                0
            } else {
                top.saturating_sub(1)
            };
            out.extend((lowest..=top).map(|t| Layer {
                spatial: s,
                temporal: t,
            }));
        }
        out
    }

    /// The candidates within the viewer's preference; a preference below
    /// every candidate still gets the lowest.
    fn preferred(&self, now: Instant) -> Vec<Layer> {
        let all = self.candidates(now);
        let preferred: Vec<Layer> = all
            .iter()
            .copied()
            .filter(|l| l.spatial <= self.max_spatial && l.temporal <= self.max_temporal)
            .collect();
        match preferred.is_empty() {
            true => all.into_iter().take(1).collect(),
            false => preferred,
        }
    }

    /// The layer that fits best now, before holds.
    fn best(&self, now: Instant) -> Option<Layer> {
        let candidates = self.preferred(now);
        let lowest = *candidates.first()?;
        let Some(estimate) = self.estimate else {
            return candidates.last().copied();
        };
        let fits = |l: Layer| {
            let margin = match self.current {
                Some(c) if l <= c => 1.0,
                _ => self.config.up_margin,
            };
            self.layer_rate(l) as f64 * margin <= estimate as f64
        };
        let best = candidates.iter().rev().copied().find(|&l| fits(l));
        let spatial_layers = (0..MAX_SPATIAL as u8)
            .filter(|&s| self.top_temporal(now, s).is_some())
            .count();
        if best.is_none() && spatial_layers == 1 {
            // One stream flows: nothing cheaper to offer than its base
            // layer, so that is forwarded whatever the estimate (a track
            // without simulcast is never paused; the viewer's loss recovery
            // deals with congestion).
            return Some(lowest);
        }
        best
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
            best = self.candidates(now).first().copied();
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
        let current_gone = self
            .current
            .is_some_and(|c| self.top_temporal(now, c.spatial).is_none());
        let up = match (best, self.target) {
            (Some(b), Some(t)) => b > t,
            (Some(_), None) => true,
            (None, _) => false,
        };
        // Far over the link: the queue grows and the viewer loses packets
        // now; no reason to wait either.
        let far_over = !up
            && self.current.is_some_and(|c| {
                let rate = self.layer_rate(c) as f64;
                self.estimate.is_some_and(|e| rate > e as f64 * FAR_OVER)
            });
        let hold = if current_gone || far_over || self.target.is_none() && self.estimate.is_none() {
            Duration::ZERO
        } else if up {
            self.config.up_hold
        } else {
            self.config.down_hold
        };
        // The hold counts from when the choice first left the target in
        // this direction: a link that keeps falling does not restart it
        // at every lower layer (`None`, a pause, is below every layer).
        let since = match self.pending {
            Some((choice, since)) if (choice > self.target) == up => since,
            _ => now,
        };
        self.pending = Some((best, since));
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

    /// The spatial layer being forwarded.
    fn spatial(sel: &LayerSelector) -> Option<u8> {
        sel.current().map(|l| l.spatial)
    }

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
                let v = sel.on_packet(now, layer.into(), size, || key);
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
        assert_eq!(spatial(&sel), Some(2));
        assert_switches_at_keyframes(&out);
        let rate = sel.layer_rate(Layer {
            spatial: 2,
            temporal: 0,
        });
        assert!((1_400_000..1_600_000).contains(&rate), "top layer {rate}");
        let rate = sel.layer_rate(Layer::default());
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
        assert_eq!(spatial(&sel), Some(0), "400 kbit/s carries 150, not 500");
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
        assert_eq!(spatial(&sel), Some(1));
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
                if sel.on_packet(now, layer.into(), 1000, || key) != Verdict::Drop {
                    forwarded.push((now, s));
                }
            }
            frame += 1;
            now += MS * 33;
        }
        assert_eq!(spatial(&sel), Some(0));
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
        assert_eq!(spatial(&sel), Some(1));
        let (next, top) = sel.wanted_bitrate(src.now());
        assert!((1_700_000..2_000_000).contains(&next), "{next}");
        assert_eq!(next, top);
        assert_eq!(sel.wants_keyframe(), None);
    }

    #[test]
    fn wanted_layers_follow_the_choice_with_one_to_climb_to() {
        let mut src = Source {
            t0: Instant::now(),
            frame: 0,
            gop: 15,
        };
        let mut sel = LayerSelector::new(SelectorConfig::default());
        // No estimate to choose by: every layer there may be.
        assert_eq!(sel.wanted_spatial(), 0b1111);
        run(&mut sel, &mut src, 120, |_| None);
        assert_eq!(sel.wanted_spatial(), 0b1111);
        // On the middle layer, the top one stays wanted (one to climb to).
        run(&mut sel, &mut src, 120, |_| Some(700_000));
        assert_eq!(spatial(&sel), Some(1));
        assert_eq!(sel.wanted_spatial(), 0b111);
        // On the lowest layer: layers 0 and 1.
        run(&mut sel, &mut src, 120, |_| Some(250_000));
        assert_eq!(spatial(&sel), Some(0));
        assert_eq!(sel.wanted_spatial(), 0b011);
        // Paused: only the lowest, to retry with.
        run(&mut sel, &mut src, 120, |_| Some(20_000));
        assert!(sel.is_paused());
        assert_eq!(sel.wanted_spatial(), 0b001);
        // The preference caps it, whatever the estimate.
        sel.set_max_spatial(src.now(), Some(0));
        run(&mut sel, &mut src, 120, |_| Some(5_000_000));
        assert_eq!(sel.wanted_spatial(), 0b001);
        sel.set_max_spatial(src.now(), Some(1));
        assert_eq!(sel.wanted_spatial(), 0b011);
    }

    #[test]
    fn packets_of_unknown_layers_are_dropped() {
        let mut sel = LayerSelector::new(SelectorConfig::default());
        let layer = Layer {
            spatial: 9,
            temporal: 0,
        };
        assert_eq!(
            sel.on_packet(Instant::now(), layer.into(), 100, || true),
            Verdict::Drop
        );
    }

    /// The temporal pattern 0-2-1-2 (`L1T3`): frame `i`'s temporal layer and
    /// the frame it refers to (keyframes refer to none). The frames after a
    /// base frame refer only to it: switching points.
    fn l1t3(i: u64, gop: u64) -> (u8, Option<u64>) {
        let tid = [0u8, 2, 1, 2][(i % 4) as usize];
        let reference = match i % 4 {
            _ if i.is_multiple_of(gop) => None,
            0 => Some(i - 4),
            2 => Some(i - 2),
            _ => Some(i - 1),
        };
        (tid, reference)
    }

    #[test]
    fn temporal_layers_thin_a_single_stream_instead_of_pausing_it() {
        // One stream, L1T3: TL0 400 kbit/s, TL1 and TL2 200 kbit/s each.
        let t0 = Instant::now();
        let gop = 120;
        let mut sel = LayerSelector::new(SelectorConfig::default());
        let mut forwarded = std::collections::BTreeSet::new();
        let mut history = Vec::new();
        let estimate = |secs: u64| match secs {
            0..6 => 1_000_000,
            6..12 => 500_000,
            12..18 => 100_000,
            _ => 1_000_000,
        };
        for i in 0..24 * 30u64 {
            let now = t0 + Duration::from_micros(i * 33_333);
            sel.set_estimate(now, estimate(i / 30));
            let (tid, reference) = l1t3(i, gop);
            // TL0 and TL1 each have 7.5 frames a second, TL2 15.
            let bytes = [400_000u64, 200_000, 200_000][usize::from(tid)] * 2 / 8 / 15;
            let bytes = if tid == 2 { bytes / 2 } else { bytes };
            let packets = bytes.div_ceil(1000);
            let mut sent = false;
            for k in 0..packets {
                let p = LayerPacket {
                    layer: Layer {
                        spatial: 0,
                        temporal: tid,
                    },
                    svc: false,
                    frame_start: k == 0,
                    frame_end: k + 1 == packets,
                    switch_up: reference.is_some_and(|r| r % 4 == 0),
                    switch_up_to: 0,
                };
                let key = k == 0 && reference.is_none();
                let v = sel.on_packet(now, p, (bytes / packets) as usize - 60, || key);
                if k == 0 {
                    sent = v != Verdict::Drop;
                } else {
                    // Whole frames: the verdict holds for all its packets.
                    assert_eq!(v != Verdict::Drop, sent, "frame {i} packet {k}");
                }
            }
            if sent {
                if let Some(r) = reference.filter(|_| !forwarded.is_empty()) {
                    assert!(
                        forwarded.contains(&r),
                        "frame {i} (TL{tid}) without frame {r}"
                    );
                }
                forwarded.insert(i);
            }
            let c = sel.current().map(|l| l.temporal.min(2));
            if history.last().map(|(_, l)| *l) != Some(c) {
                history.push((i / 30, c));
            }
        }
        println!("{history:?}");
        let at = |secs: u64| {
            history
                .iter()
                .rev()
                .find(|(s, _)| *s <= secs)
                .map(|(_, l)| *l)
        };
        // The whole stream (800 kbit/s) on 1 Mbit/s, the base and TL1 (600)
        // on 500 kbit/s... (400 + 200 = 600 > 500): the base only; never a
        // pause on 100 kbit/s (nothing cheaper to offer), all of it again.
        assert_eq!(at(5), Some(Some(2)));
        assert_eq!(at(11), Some(Some(0)));
        assert_eq!(at(17), Some(Some(0)));
        assert_eq!(at(23), Some(Some(2)));
        assert!(!sel.is_paused());
        assert_eq!(sel.stats().pauses, 0);
    }

    #[test]
    fn svc_switches_down_at_the_next_picture_and_up_at_a_keyframe() {
        // One stream of three spatial layers (150, 350, 1000 kbit/s), each
        // picture S0, S1, S2; a keyframe every 90 pictures unless asked.
        let t0 = Instant::now();
        let mut sel = LayerSelector::new(SelectorConfig::default());
        let rates = [150_000u64, 350_000, 1_000_000];
        let estimate = |secs: u64| match secs {
            0..8 => 3_000_000,
            8..16 => 700_000,
            _ => 3_000_000,
        };
        let mut asked = false;
        let mut last_picture: [Option<u64>; 3] = [None; 3];
        let mut history: Vec<(u64, u8)> = Vec::new();
        for i in 0..24 * 30u64 {
            let now = t0 + Duration::from_micros(i * 33_333);
            let key = i.is_multiple_of(90) || std::mem::take(&mut asked);
            let mut top = None;
            for (s, rate) in rates.iter().enumerate() {
                let s = s as u8;
                let bytes = rate / 8 / 30;
                let packets = bytes.div_ceil(1000);
                let mut sent = false;
                for k in 0..packets {
                    if s == 2 && k == 1 {
                        // The estimate changes in the middle of a frame.
                        sel.set_estimate(now, estimate(i / 30));
                    }
                    let p = LayerPacket {
                        layer: Layer {
                            spatial: s,
                            temporal: 0,
                        },
                        svc: true,
                        frame_start: k == 0,
                        frame_end: k + 1 == packets,
                        switch_up: true,
                        switch_up_to: 0,
                    };
                    let v = sel.on_packet(now, p, (bytes / packets) as usize - 60, || {
                        key && s == 0 && k == 0
                    });
                    if k == 0 {
                        sent = v != Verdict::Drop;
                    } else {
                        assert_eq!(v != Verdict::Drop, sent, "picture {i} S{s} packet {k}");
                    }
                }
                if sent {
                    // Each layer's frame refers to the same layer's last
                    // picture (or the keyframe's lower layer): that one
                    // reached the viewer too.
                    if !key {
                        assert_eq!(
                            last_picture[usize::from(s)],
                            Some(i - 1),
                            "picture {i} S{s}"
                        );
                    }
                    last_picture[usize::from(s)] = Some(i);
                    top = Some(s);
                }
            }
            asked |= sel.wants_keyframe().is_some();
            if let Some(t) = top {
                if history.last().map(|(_, l)| *l) != Some(t) {
                    history.push((i, t));
                }
            }
        }
        println!("{history:?}");
        assert!(sel.is_svc());
        // Down to S1 (150 + 350 = 500 fits 700) within the hold and one
        // picture; up again at a keyframe it asked for.
        let down = history
            .iter()
            .find(|(i, l)| *i >= 240 && *l == 1)
            .unwrap()
            .0;
        assert!(down <= 240 + 15, "down at picture {down}");
        let up = history
            .iter()
            .find(|(i, l)| *i >= 480 && *l == 2)
            .unwrap()
            .0;
        assert!(up <= 480 + 45, "up at picture {up}");
        assert_eq!(history.last().unwrap().1, 2);
        assert_eq!(sel.stats().switches_down, 1);
    }
}
