//! The shard's state and handlers.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corecast_media::{ChannelId, MediaKind, MediaPacket};
use corecast_webrtc::{stun_local_ufrag, Endpoint, EndpointEvent, Output, Role, Transmit};

use super::cluster::ClusterPort;
use super::limiter::TokenBucket;
use crate::mesh::ShardLinks;
use crate::messages::{ControlEvent, Datagram, RingMsg, SessionId, ShardCommand};
use crate::metrics::{add, inc, ShardMetrics};

/// Addresses of endpoints on other shards that one shard forwards, at most.
pub const MAX_ROUTES: usize = 16_384;
/// Routed addresses per session, at most (candidate pairs of one client).
pub const MAX_ROUTES_PER_SESSION: usize = 8;
/// Lifecycle events waiting for room in the control queue, at most. The
/// queue holds 4096 and the control thread drains it continuously; this
/// bound is only reached if the control thread stops.
pub const CONTROL_OUTBOX_CAP: usize = 65_536;

/// An endpoint and what the shard knows about it.
struct Slot {
    endpoint: Endpoint,
    next_timeout: Instant,
    addrs: Vec<SocketAddr>,
    ufrag: String,
    subscriptions: Vec<(MediaKind, ChannelId)>,
    /// Media queued in the endpoint, waiting for [`Shard::flush_media`].
    queued: bool,
}

/// One shard's state. Owned by its executor; never shared, never locked.
pub struct Shard {
    pub id: usize,
    endpoints: HashMap<SessionId, Slot>,
    by_addr: HashMap<SocketAddr, SessionId>,
    by_ufrag: HashMap<String, SessionId>,
    /// Local viewers per channel.
    subscribers: HashMap<ChannelId, Vec<SessionId>>,
    /// Local publishers per channel (for keyframe requests).
    publishers: HashMap<ChannelId, SessionId>,
    /// Shards (bit per shard) with subscribers, per channel.
    fanout: HashMap<ChannelId, u64>,
    /// Channels whose local publishers' packets also go to the cluster.
    exported: HashSet<ChannelId>,
    links: ShardLinks,
    pub(super) control: flume::Sender<ControlEvent>,
    pub metrics: Arc<ShardMetrics>,
    /// Datagrams to send at the next flush.
    pub out: Vec<Transmit>,
    /// The cluster (shard 0 of a clustered node only).
    pub cluster: Option<ClusterPort>,
    /// Viewers with queued media, and when the oldest of it arrived.
    queued: Vec<SessionId>,
    oldest_queued: Option<Instant>,
    /// Addresses of endpoints held by other shards: session and owner shard.
    routes: HashMap<SocketAddr, (SessionId, usize)>,
    routes_by_session: HashMap<SessionId, Vec<SocketAddr>>,
    /// Lifecycle events (never dropped) that found the control queue full,
    /// oldest first; retried every loop round ([`Shard::flush_control`]).
    outbox: VecDeque<ControlEvent>,
    /// STUN claims passed to the control thread per second.
    claims: TokenBucket,
}

impl Shard {
    pub fn new(
        id: usize,
        links: ShardLinks,
        control: flume::Sender<ControlEvent>,
        metrics: Arc<ShardMetrics>,
        cluster: Option<ClusterPort>,
        claims_per_second: u32,
    ) -> Shard {
        Shard {
            id,
            endpoints: HashMap::new(),
            by_addr: HashMap::new(),
            by_ufrag: HashMap::new(),
            subscribers: HashMap::new(),
            publishers: HashMap::new(),
            fanout: HashMap::new(),
            exported: HashSet::new(),
            links,
            control,
            metrics,
            out: Vec::new(),
            cluster,
            queued: Vec::new(),
            oldest_queued: None,
            routes: HashMap::new(),
            routes_by_session: HashMap::new(),
            outbox: VecDeque::new(),
            claims: TokenBucket::new(claims_per_second, claims_per_second.max(1)),
        }
    }

    /// The earliest time an endpoint wants a timeout.
    pub fn next_timeout(&self, now: Instant) -> Instant {
        self.endpoints
            .values()
            .map(|s| s.next_timeout)
            .min()
            .unwrap_or(now + Duration::from_millis(100))
    }

    pub fn doorbell(&self) -> flume::Receiver<()> {
        self.links.doorbell.clone()
    }

    // ---- network input ----

    /// A datagram arrived on one of this shard's sockets.
    pub fn on_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) {
        inc(&self.metrics.rx_packets_total);
        add(&self.metrics.rx_bytes_total, data.len() as u64);
        if let Some(&session) = self.by_addr.get(&source) {
            self.receive(now, session, source, destination, data);
            return;
        }
        if let Some(&(session, owner)) = self.routes.get(&source) {
            // A second address of a client whose endpoint another shard holds.
            let datagram = Datagram {
                at: now,
                source,
                destination,
                contents: data.to_vec(),
            };
            if self.push_ring(owner, RingMsg::Ingress { session, datagram }) {
                inc(&self.metrics.ingress_forwards_total);
            }
            return;
        }
        let Some(ufrag) = stun_local_ufrag(data) else {
            inc(&self.metrics.bad_packets_total);
            return;
        };
        if let Some(&session) = self.by_ufrag.get(ufrag) {
            // A new address of an endpoint we hold (another candidate pair).
            self.receive(now, session, source, destination, data);
            return;
        }
        // Claims are for unknown ufrags (spoofable): at most so many per
        // second reach the control thread, the rest are dropped and counted.
        if !self.claims.allow(now) {
            inc(&self.metrics.claims_limited_total);
            return;
        }
        let claim = ControlEvent::Claim {
            shard: self.id,
            ufrag: ufrag.to_string(),
            datagram: Datagram {
                at: now,
                source,
                destination,
                contents: data.to_vec(),
            },
        };
        if self.control.try_send(claim).is_err() {
            inc(&self.metrics.control_drops_total);
        }
    }

    fn receive(
        &mut self,
        now: Instant,
        session: SessionId,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) {
        let Some(slot) = self.endpoints.get_mut(&session) else {
            inc(&self.metrics.bad_packets_total);
            return;
        };
        match slot.endpoint.handle_receive(now, source, destination, data) {
            Ok(()) => {
                if !slot.addrs.contains(&source) {
                    slot.addrs.push(source);
                    self.by_addr.insert(source, session);
                }
            }
            Err(_) => inc(&self.metrics.bad_packets_total),
        }
        self.drive(now, session);
    }

    // ---- time ----

    /// Gives every endpoint whose timeout is due its time input.
    pub fn on_tick(&mut self, now: Instant) {
        let due: Vec<SessionId> = self
            .endpoints
            .iter()
            .filter(|(_, s)| s.next_timeout <= now)
            .map(|(id, _)| *id)
            .collect();
        add(&self.metrics.endpoint_timeouts_total, due.len() as u64);
        for session in due {
            if let Some(slot) = self.endpoints.get_mut(&session) {
                slot.endpoint.handle_timeout(now);
            }
            self.drive(now, session);
        }
    }

    // ---- commands and rings ----

    pub fn on_command(&mut self, now: Instant, cmd: ShardCommand) {
        match cmd {
            ShardCommand::Adopt {
                session,
                endpoint,
                first,
                subscriptions,
            } => {
                let ufrag = endpoint.local_ufrag().to_string();
                if endpoint.role() == Role::Publisher {
                    for (_, ch) in endpoint.published_channels() {
                        self.publishers.insert(ch, session);
                    }
                }
                self.by_ufrag.insert(ufrag.clone(), session);
                self.endpoints.insert(
                    session,
                    Slot {
                        endpoint: *endpoint,
                        next_timeout: now,
                        addrs: Vec::new(),
                        ufrag,
                        subscriptions: Vec::new(),
                        queued: false,
                    },
                );
                self.metrics.endpoints.store(
                    self.endpoints.len() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
                self.emit(ControlEvent::Adopted {
                    session,
                    shard: self.id,
                });
                for (kind, ch) in subscriptions {
                    self.subscribe(now, session, kind, Some(ch));
                }
                self.receive(
                    now,
                    session,
                    first.source,
                    first.destination,
                    &first.contents,
                );
                // Viewers that subscribed while this publisher was pending
                // asked for a keyframe nobody could send: ask now (the
                // endpoint sends it with the track's first packet).
                let video: Vec<ChannelId> = self
                    .endpoints
                    .get(&session)
                    .map(|s| {
                        s.endpoint
                            .published_channels()
                            .filter(|(k, _)| *k == MediaKind::Video)
                            .map(|(_, c)| c)
                            .collect()
                    })
                    .unwrap_or_default();
                for ch in video {
                    self.keyframe_local(now, ch);
                }
            }
            ShardCommand::Ingress { session, datagram } => {
                inc(&self.metrics.cross_shard_ingress_total);
                self.receive(
                    now,
                    session,
                    datagram.source,
                    datagram.destination,
                    &datagram.contents,
                );
            }
            ShardCommand::Close { session } => {
                if let Some(slot) = self.endpoints.get_mut(&session) {
                    slot.endpoint.close();
                }
                self.drive(now, session);
            }
            ShardCommand::Route {
                session,
                addr,
                owner,
            } => self.add_route(session, addr, owner),
            ShardCommand::Unroute { session } => self.remove_routes(session),
            ShardCommand::Subscribe {
                session,
                kind,
                channel,
            } => self.subscribe(now, session, kind, channel),
            ShardCommand::Fanout { channel, shards } => {
                if shards == 0 {
                    self.fanout.remove(&channel);
                } else {
                    self.fanout.insert(channel, shards);
                }
            }
            ShardCommand::Export { channel, on } => {
                if on {
                    self.exported.insert(channel);
                } else {
                    self.exported.remove(&channel);
                }
            }
            ShardCommand::Cluster(cmd) => self.on_cluster_command(now, cmd),
            ShardCommand::Fragment {
                session,
                fragment,
                reply,
            } => {
                let result = match self.endpoints.get_mut(&session) {
                    Some(slot) => slot
                        .endpoint
                        .handle_fragment(&fragment)
                        .map_err(|e| e.to_string()),
                    None => Err("no such session".to_string()),
                };
                if let Some(slot) = self.endpoints.get_mut(&session) {
                    let ufrag = slot.endpoint.local_ufrag().to_string();
                    if ufrag != slot.ufrag {
                        self.by_ufrag.remove(&slot.ufrag);
                        self.by_ufrag.insert(ufrag.clone(), session);
                        slot.ufrag = ufrag.clone();
                        self.emit(ControlEvent::UfragChanged { session, ufrag });
                    }
                }
                let _ = reply.send(result);
                self.drive(now, session);
            }
        }
    }

    /// Pops everything other shards pushed toward this one.
    pub fn drain_rings(&mut self, now: Instant) {
        for j in 0..self.links.from.len() {
            while let Some(Some(ring)) = self.links.from.get_mut(j) {
                let Ok(msg) = ring.pop() else {
                    break;
                };
                match msg {
                    RingMsg::Media(packet) => self.deliver_local(now, &packet),
                    RingMsg::Keyframe(channel) => self.keyframe_local(now, channel),
                    RingMsg::Export(packet) => self.export(now, &packet),
                    RingMsg::Ingress { session, datagram } => {
                        inc(&self.metrics.cross_shard_ingress_total);
                        self.receive(
                            now,
                            session,
                            datagram.source,
                            datagram.destination,
                            &datagram.contents,
                        );
                    }
                }
            }
        }
    }

    // ---- fan-out ----

    fn subscribe(
        &mut self,
        now: Instant,
        session: SessionId,
        kind: MediaKind,
        channel: Option<ChannelId>,
    ) {
        let Some(slot) = self.endpoints.get_mut(&session) else {
            return;
        };
        for (k, old) in slot.subscriptions.iter().filter(|(k, _)| *k == kind) {
            if let Some(list) = self.subscribers.get_mut(old) {
                list.retain(|s| *s != session);
            }
            let _ = k;
        }
        slot.subscriptions.retain(|(k, _)| *k != kind);
        slot.endpoint.subscribe(kind, channel);
        if let Some(ch) = channel {
            slot.subscriptions.push((kind, ch));
            self.subscribers.entry(ch).or_default().push(session);
            if kind == MediaKind::Video {
                // A new viewer needs a keyframe to start decoding.
                self.request_keyframe(now, ch);
            }
        }
    }

    /// Publishes one packet: to local viewers, and once per other shard that
    /// has viewers of the channel.
    pub(super) fn publish(&mut self, now: Instant, packet: MediaPacket) {
        inc(&self.metrics.media_packets_total);
        if self.exported.contains(&packet.channel) {
            if self.id == 0 {
                self.export(now, &packet);
            } else {
                self.push_ring(0, RingMsg::Export(packet.clone()));
            }
        }
        let mask = self.fanout.get(&packet.channel).copied().unwrap_or(0) & !(1u64 << self.id);
        if mask != 0 {
            for j in 0..self.links.to.len() {
                if mask & (1u64 << j) == 0 {
                    continue;
                }
                self.push_ring(j, RingMsg::Media(packet.clone()));
            }
        }
        self.deliver_local(now, &packet);
    }

    /// Pushes onto the ring toward shard `j`; a full ring drops and counts.
    fn push_ring(&mut self, j: usize, msg: RingMsg) -> bool {
        let Some(Some(ring)) = self.links.to.get_mut(j) else {
            return false;
        };
        match ring.push(msg) {
            Ok(()) => {
                inc(&self.metrics.ring_forwards_total);
                let _ = self.links.doorbells[j].try_send(());
                true
            }
            Err(_) => {
                inc(&self.metrics.ring_drops_total);
                false
            }
        }
    }

    // ---- routes: addresses of endpoints on other shards ----

    fn add_route(&mut self, session: SessionId, addr: SocketAddr, owner: usize) {
        if owner == self.id || owner >= self.links.to.len() || self.by_addr.contains_key(&addr) {
            return;
        }
        if let Some(&(old, _)) = self.routes.get(&addr) {
            if old == session {
                self.routes.insert(addr, (session, owner));
                return;
            }
            // The address now belongs to another session (a reused port).
            self.unroute_addr(old, addr);
        }
        let per_session = self.routes_by_session.get(&session).map_or(0, Vec::len);
        if self.routes.len() >= MAX_ROUTES || per_session >= MAX_ROUTES_PER_SESSION {
            inc(&self.metrics.route_drops_total);
            return;
        }
        self.routes.insert(addr, (session, owner));
        self.routes_by_session.entry(session).or_default().push(addr);
        self.store_routes();
    }

    fn unroute_addr(&mut self, session: SessionId, addr: SocketAddr) {
        self.routes.remove(&addr);
        if let Some(list) = self.routes_by_session.get_mut(&session) {
            list.retain(|a| *a != addr);
            if list.is_empty() {
                self.routes_by_session.remove(&session);
            }
        }
        self.store_routes();
    }

    fn remove_routes(&mut self, session: SessionId) {
        for addr in self.routes_by_session.remove(&session).unwrap_or_default() {
            self.routes.remove(&addr);
        }
        self.store_routes();
    }

    fn store_routes(&self) {
        self.metrics.routes.store(
            self.routes.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    // ---- events to the control thread ----

    /// Sends a lifecycle event to the control thread; never drops it: a full
    /// queue puts it in the outbox, which keeps the order.
    fn emit(&mut self, event: ControlEvent) {
        if self.outbox.is_empty() {
            match self.control.try_send(event) {
                Ok(()) => return,
                Err(flume::TrySendError::Full(event)) => {
                    inc(&self.metrics.control_queued_total);
                    self.queue_event(event);
                }
                // The control thread is gone: shutdown.
                Err(flume::TrySendError::Disconnected(_)) => {}
            }
        } else {
            inc(&self.metrics.control_queued_total);
            self.queue_event(event);
            self.flush_control();
        }
    }

    fn queue_event(&mut self, event: ControlEvent) {
        if self.outbox.len() >= CONTROL_OUTBOX_CAP {
            inc(&self.metrics.control_outbox_drops_total);
            tracing::error!("shard {}: control outbox full, event dropped", self.id);
        } else {
            self.outbox.push_back(event);
        }
        self.store_outbox();
    }

    /// Retries the outbox (the shard loop calls this every round).
    pub fn flush_control(&mut self) {
        if self.outbox.is_empty() {
            return;
        }
        while let Some(event) = self.outbox.pop_front() {
            match self.control.try_send(event) {
                Ok(()) => inc(&self.metrics.control_retries_total),
                Err(flume::TrySendError::Full(event)) => {
                    self.outbox.push_front(event);
                    break;
                }
                Err(flume::TrySendError::Disconnected(_)) => {
                    self.outbox.clear();
                    break;
                }
            }
        }
        self.store_outbox();
    }

    fn store_outbox(&self) {
        self.metrics.control_outbox.store(
            self.outbox.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Queues a packet in every local viewer of its channel; it leaves at the
    /// next [`Shard::flush_media`], with whatever else arrived in the batch.
    fn deliver_local(&mut self, now: Instant, packet: &MediaPacket) {
        // Take the list out while endpoints run (they may close and leave
        // it); no copy, no allocation per packet.
        let Some(viewers) = self.subscribers.remove(&packet.channel) else {
            return;
        };
        for session in &viewers {
            let Some(slot) = self.endpoints.get_mut(session) else {
                continue;
            };
            if slot.endpoint.queue_media(now, packet) && !slot.queued {
                slot.queued = true;
                self.queued.push(*session);
            }
        }
        if self.oldest_queued.is_none() {
            self.oldest_queued = Some(packet.arrival);
        }
        self.put_back_subscribers(packet.channel, viewers);
    }

    /// Sends what viewers queued in this batch: one str0m time input per
    /// viewer, however many packets it queued. Handles at most `max`
    /// viewers and returns whether some are left, so that the caller can
    /// send what is ready in between (the first viewers' packets need not
    /// wait for the last viewer). Call until it returns false at the end of
    /// every batch of input (the shard loop does, before sending).
    pub fn flush_media(&mut self, now: Instant, max: usize) -> bool {
        let n = self.queued.len().min(max);
        if n == 0 {
            return false;
        }
        // Viewers are flushed in the order they were queued.
        let batch: Vec<SessionId> = self.queued.drain(..n).collect();
        for session in batch {
            let Some(slot) = self.endpoints.get_mut(&session) else {
                continue;
            };
            slot.queued = false;
            slot.endpoint.flush_media(now);
            self.drive(now, session);
        }
        !self.queued.is_empty()
    }

    /// Records the forward latency of the batch that [`Shard::flush_media`]
    /// finished: from its oldest packet's arrival to `now` (the caller reads
    /// the clock once the last viewer's media is handed off).
    pub fn record_forward_latency(&mut self, now: Instant) {
        if !self.queued.is_empty() {
            return;
        }
        if let Some(oldest) = self.oldest_queued.take() {
            self.metrics
                .forward_latency
                .record(now.saturating_duration_since(oldest));
        }
    }

    /// Returns a taken subscriber list, without sessions that ended meanwhile
    /// and with any that subscribed meanwhile.
    fn put_back_subscribers(&mut self, channel: ChannelId, mut viewers: Vec<SessionId>) {
        viewers.retain(|s| self.endpoints.contains_key(s));
        if let Some(added) = self.subscribers.remove(&channel) {
            viewers.extend(added);
        }
        if !viewers.is_empty() {
            self.subscribers.insert(channel, viewers);
        }
    }

    pub(super) fn request_keyframe(&mut self, now: Instant, channel: ChannelId) {
        if self.publishers.contains_key(&channel) {
            self.keyframe_local(now, channel);
            return;
        }
        if self.remote_keyframe(now, channel) {
            return;
        }
        for j in 0..self.links.to.len() {
            if j != self.id {
                self.push_ring(j, RingMsg::Keyframe(channel));
            }
        }
    }

    fn keyframe_local(&mut self, now: Instant, channel: ChannelId) {
        let Some(&session) = self.publishers.get(&channel) else {
            // Published on another node: shard 0 asks the cluster.
            self.remote_keyframe(now, channel);
            return;
        };
        let Some(slot) = self.endpoints.get_mut(&session) else {
            return;
        };
        let kind = slot
            .endpoint
            .published_channels()
            .find(|(_, c)| *c == channel)
            .map(|(k, _)| k);
        if let Some(kind) = kind {
            if slot.endpoint.request_keyframe(now, kind) {
                self.drive(now, session);
            }
        }
    }

    // ---- endpoint output ----

    /// Drains one endpoint's output until its next timeout.
    fn drive(&mut self, now: Instant, session: SessionId) {
        loop {
            let Some(slot) = self.endpoints.get_mut(&session) else {
                return;
            };
            match slot.endpoint.poll_output(now) {
                Output::Transmit(t) => self.out.push(t),
                Output::Timeout(at) => {
                    slot.next_timeout = at;
                    return;
                }
                Output::Event(event) => self.on_event(now, session, event),
            }
        }
    }

    fn on_event(&mut self, now: Instant, session: SessionId, event: EndpointEvent) {
        match event {
            EndpointEvent::Media(packet) => self.publish(now, packet),
            EndpointEvent::KeyframeRequest(kind) => {
                let channel = self
                    .endpoints
                    .get(&session)
                    .and_then(|s| s.endpoint.source(kind));
                if let Some(ch) = channel {
                    self.request_keyframe(now, ch);
                }
            }
            EndpointEvent::ActiveCodec(channel, codec) => {
                self.emit(ControlEvent::ActiveCodec {
                    session,
                    channel,
                    codec,
                });
            }
            EndpointEvent::Connected => {}
            EndpointEvent::Closed(reason) => {
                self.remove(session);
                self.emit(ControlEvent::Closed { session, reason });
            }
        }
    }

    fn remove(&mut self, session: SessionId) {
        // Flush what the endpoint still has to say (DTLS close_notify).
        let Some(mut slot) = self.endpoints.remove(&session) else {
            return;
        };
        let now = slot.next_timeout;
        while let Output::Transmit(t) = slot.endpoint.poll_output(now) {
            self.out.push(t);
        }
        for addr in &slot.addrs {
            self.by_addr.remove(addr);
        }
        self.by_ufrag.remove(&slot.ufrag);
        for (_, ch) in &slot.subscriptions {
            if let Some(list) = self.subscribers.get_mut(ch) {
                list.retain(|s| *s != session);
                if list.is_empty() {
                    self.subscribers.remove(ch);
                }
            }
        }
        self.publishers.retain(|_, s| *s != session);
        self.metrics.endpoints.store(
            self.endpoints.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}
