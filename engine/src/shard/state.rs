//! The shard's state and handlers.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corecast_media::{
    ChannelId, Command, Endpoint, EndpointStats, Event, Input, LayerStats, MediaKind, MediaPacket,
    Output, RouteKey, SlotId, Transmit, TransportKind,
};
use corecast_rtmp::{RtmpConfig, RtmpEndpoint};
use corecast_webrtc::stun_local_ufrag;

use super::cluster::ClusterPort;
use super::demand::LayerDemand;
use super::levels::LevelMeter;
use crate::mesh::ShardLinks;
use crate::messages::{ConnId, ControlEvent, Datagram, RingMsg, ShardCommand};
use crate::metrics::{add, inc, shift, ShardMetrics};
use corecast_media::TokenBucket;

mod moq;

/// Addresses of endpoints on other shards that one shard forwards, at most.
pub const MAX_ROUTES: usize = 16_384;
/// Routed addresses per conn, at most (candidate pairs of one client).
pub const MAX_ROUTES_PER_SESSION: usize = 8;
/// Lifecycle events waiting for room in the control queue, at most. The
/// queue holds 4096 and the control thread drains it continuously; this
/// bound is only reached if the control thread stops.
pub const CONTROL_OUTBOX_CAP: usize = 65_536;
/// Bytes a stream connection (RTMP) may leave unread before the shard
/// closes it. A publisher reads only acknowledgements and status messages.
pub const MAX_STREAM_BACKLOG: usize = 1 << 20;
/// Stream connections (RTMP) a shard holds before their publish is
/// admitted, at most: connections that never log in cannot fill the node's
/// endpoint capacity (they do not count toward it) or its descriptors.
pub const MAX_UNADMITTED_STREAMS: usize = 1024;

/// The TCP connection of a stream endpoint: a non-blocking handle to write
/// with (the shard's reader task holds the other).
struct StreamConn {
    socket: TcpStream,
    /// Bytes the socket did not take yet.
    pending: Vec<u8>,
    /// It asked the control thread to publish (which then knows it).
    requested: bool,
    /// Its publish was admitted: it counts as an endpoint of the node.
    admitted: bool,
}

/// What a shard is told at start: how to accept stream connections itself
/// (RTMP), and whether its node is in a cluster.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// The node id's low 16 bits, for connection ids.
    pub node: u16,
    pub rtmp: RtmpConfig,
    /// Endpoints this shard holds before it refuses new connections.
    pub max_endpoints: usize,
    /// The node is in a cluster: the shard tells shard 0 which layers its
    /// viewers want (see `shard/demand.rs`).
    pub clustered: bool,
}

/// An endpoint and what the shard knows about it.
struct Slot {
    endpoint: Box<dyn Endpoint>,
    next_timeout: Instant,
    addrs: Vec<SocketAddr>,
    /// How inputs from unknown addresses find it (an ICE ufrag).
    key: Option<RouteKey>,
    /// What its receive slots play.
    subscriptions: Vec<(SlotId, ChannelId)>,
    /// Media queued in the endpoint, waiting for [`Shard::flush_media`].
    queued: bool,
    /// The endpoint's counters as last added to the shard's metrics.
    reported: EndpointStats,
}

/// One shard's state. Owned by its executor; never shared, never locked.
pub struct Shard {
    pub id: usize,
    endpoints: HashMap<ConnId, Slot>,
    by_addr: HashMap<SocketAddr, ConnId>,
    by_key: HashMap<RouteKey, ConnId>,
    /// Local viewers per channel.
    subscribers: HashMap<ChannelId, Vec<ConnId>>,
    /// Local publishers per channel (for keyframe requests).
    publishers: HashMap<ChannelId, ConnId>,
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
    queued: Vec<ConnId>,
    oldest_queued: Option<Instant>,
    /// Addresses of endpoints held by other shards: conn and owner shard.
    routes: HashMap<SocketAddr, (ConnId, usize)>,
    routes_by_session: HashMap<ConnId, Vec<SocketAddr>>,
    /// Lifecycle events (never dropped) that found the control queue full,
    /// oldest first; retried every loop round ([`Shard::flush_control`]).
    outbox: VecDeque<ControlEvent>,
    /// STUN claims passed to the control thread per second.
    claims: TokenBucket,
    /// TCP connections of stream endpoints, by conn.
    streams: HashMap<ConnId, StreamConn>,
    /// The shard's number for the next stream connection.
    next_stream: u64,
    stream_settings: StreamSettings,
    /// Audio levels of the tracks published here (active speakers).
    levels: LevelMeter,
    /// What this shard last told shard 0 of its viewers' layers.
    pub(super) demand: LayerDemand,
    /// The MoQ port, when MoQ is on.
    moq: Option<moq::MoqPort>,
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
            by_key: HashMap::new(),
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
            levels: LevelMeter::default(),
            claims: TokenBucket::new(claims_per_second, claims_per_second.max(1)),
            streams: HashMap::new(),
            next_stream: 0,
            stream_settings: StreamSettings {
                node: 0,
                rtmp: RtmpConfig::default(),
                max_endpoints: usize::MAX,
                clustered: false,
            },
            demand: LayerDemand::default(),
            moq: None,
        }
    }

    pub fn set_stream_settings(&mut self, settings: StreamSettings) {
        self.stream_settings = settings;
    }

    // ---- stream connections (RTMP over TCP) ----

    /// A TCP connection accepted on the shard's RTMP listener; `socket` is
    /// a handle to write with. Returns its conn, or `None` when the shard
    /// is full (the caller drops the connection).
    pub fn accept_stream(
        &mut self,
        now: Instant,
        socket: TcpStream,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Option<ConnId> {
        let unadmitted = self.streams.values().filter(|s| !s.admitted).count();
        if self.endpoints.len() >= self.stream_settings.max_endpoints
            || unadmitted >= MAX_UNADMITTED_STREAMS
        {
            inc(&self.metrics.rtmp_rejected_total);
            return None;
        }
        let _ = socket.set_nonblocking(true);
        let conn = ConnId::new(self.stream_settings.node, rand::random());
        let n = self.next_stream;
        self.next_stream += 1;
        let random: [u8; 64] = rand::random();
        let endpoint = RtmpEndpoint::new(
            self.stream_settings.rtmp.clone(),
            conn,
            n,
            local,
            remote,
            now,
            &random,
        );
        let key = RouteKey::Stream(n);
        self.by_key.insert(key.clone(), conn);
        self.endpoints.insert(
            conn,
            Slot {
                endpoint: Box::new(endpoint),
                next_timeout: now,
                addrs: Vec::new(),
                key: Some(key),
                subscriptions: Vec::new(),
                queued: false,
                reported: EndpointStats::default(),
            },
        );
        self.streams.insert(
            conn,
            StreamConn {
                socket,
                pending: Vec::new(),
                requested: false,
                admitted: false,
            },
        );
        self.store_endpoint_count();
        inc(&self.metrics.rtmp_connections_total);
        self.metrics.rtmp_connections.store(
            self.streams.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        self.drive(now, conn);
        Some(conn)
    }

    /// Bytes read from a stream connection (empty: it closed). Returns
    /// whether the connection goes on.
    pub fn on_stream(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) -> bool {
        let Some(slot) = self.endpoints.get_mut(&conn) else {
            return false;
        };
        if let Err(e) = slot.endpoint.handle_input(now, Input::Stream(bytes)) {
            tracing::debug!("stream {conn}: {e}");
            inc(&self.metrics.rtmp_protocol_errors_total);
        }
        self.drive(now, conn);
        self.streams.contains_key(&conn)
    }

    /// Sends (or keeps) bytes toward a stream connection; closes it when it
    /// does not read.
    fn write_stream(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        let Some(s) = self.streams.get_mut(&conn) else {
            return;
        };
        s.pending.extend_from_slice(bytes);
        while !s.pending.is_empty() {
            match s.socket.write(&s.pending) {
                Ok(0) => break,
                Ok(n) => {
                    s.pending.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        if s.pending.len() > MAX_STREAM_BACKLOG {
            inc(&self.metrics.rtmp_write_overflows_total);
            tracing::info!("stream {conn}: does not read what it is sent, closing");
            s.pending.clear();
            if let Some(slot) = self.endpoints.get_mut(&conn) {
                let _ = slot
                    .endpoint
                    .handle_input(now, Input::Command(Command::Close));
            }
        }
    }

    /// The endpoints gauge (the node's admission counts it): stream
    /// connections only once admitted.
    fn store_endpoint_count(&self) {
        let unadmitted = self.streams.values().filter(|s| !s.admitted).count();
        self.metrics.endpoints.store(
            (self.endpoints.len() - unadmitted.min(self.endpoints.len())) as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
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
        if let Some(&conn) = self.by_addr.get(&source) {
            self.receive(now, conn, source, destination, data);
            return;
        }
        if let Some(&(conn, owner)) = self.routes.get(&source) {
            // A second address of a client whose endpoint another shard holds.
            let datagram = Datagram {
                at: now,
                source,
                destination,
                contents: data.to_vec(),
            };
            if self.push_ring(owner, RingMsg::Ingress { conn, datagram }) {
                inc(&self.metrics.ingress_forwards_total);
            }
            return;
        }
        let Some(ufrag) = stun_local_ufrag(data) else {
            inc(&self.metrics.bad_packets_total);
            return;
        };
        if let Some(&conn) = self.by_key.get(&RouteKey::IceUfrag(ufrag.to_string())) {
            // A new address of an endpoint we hold (another candidate pair).
            self.receive(now, conn, source, destination, data);
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

    /// A datagram of one of this shard's endpoints that arrived at another
    /// shard (forwarded by the control thread or over a ring).
    fn cross_shard_ingress(&mut self, now: Instant, conn: ConnId, datagram: &Datagram) {
        inc(&self.metrics.cross_shard_ingress_total);
        self.receive(
            now,
            conn,
            datagram.source,
            datagram.destination,
            &datagram.contents,
        );
    }

    fn receive(
        &mut self,
        now: Instant,
        conn: ConnId,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) {
        let Some(slot) = self.endpoints.get_mut(&conn) else {
            inc(&self.metrics.bad_packets_total);
            return;
        };
        let input = Input::Datagram {
            source,
            destination,
            contents: data,
        };
        match slot.endpoint.handle_input(now, input) {
            Ok(_) => {
                if !slot.addrs.contains(&source) {
                    slot.addrs.push(source);
                    self.by_addr.insert(source, conn);
                }
            }
            Err(_) => inc(&self.metrics.bad_packets_total),
        }
        self.drive(now, conn);
    }

    /// A datagram on a SIP call's own RTP socket (`local`).
    pub fn on_call_datagram(
        &mut self,
        now: Instant,
        conn: ConnId,
        source: SocketAddr,
        local: SocketAddr,
        data: &[u8],
    ) {
        inc(&self.metrics.rx_packets_total);
        add(&self.metrics.rx_bytes_total, data.len() as u64);
        let Some(slot) = self.endpoints.get_mut(&conn) else {
            return;
        };
        let input = Input::Datagram {
            source,
            destination: local,
            contents: data,
        };
        if slot.endpoint.handle_input(now, input).is_err() {
            inc(&self.metrics.bad_packets_total);
        }
        self.drive(now, conn);
    }

    /// Whether the shard still holds `conn`.
    pub fn holds(&self, conn: ConnId) -> bool {
        self.endpoints.contains_key(&conn)
    }

    /// An endpoint the control thread placed here (a SIP call): it
    /// publishes at once; the control thread points its slots.
    fn place(&mut self, now: Instant, conn: ConnId, endpoint: Box<dyn Endpoint>) {
        for t in endpoint.published() {
            self.publishers.insert(t.channel, conn);
        }
        self.take_endpoint(conn, endpoint, None, now);
        self.drive(now, conn);
    }

    /// Holds an endpoint from now on (adopted or placed) and tells the
    /// control thread.
    fn take_endpoint(
        &mut self,
        conn: ConnId,
        endpoint: Box<dyn Endpoint>,
        key: Option<RouteKey>,
        now: Instant,
    ) {
        self.endpoints.insert(
            conn,
            Slot {
                endpoint,
                next_timeout: now,
                addrs: Vec::new(),
                key,
                subscriptions: Vec::new(),
                queued: false,
                reported: EndpointStats::default(),
            },
        );
        self.store_endpoint_count();
        self.emit(ControlEvent::Adopted {
            conn,
            shard: self.id,
        });
    }

    // ---- time ----

    /// Gives every endpoint whose timeout is due its time input.
    pub fn on_tick(&mut self, now: Instant) {
        let due: Vec<ConnId> = self
            .endpoints
            .iter()
            .filter(|(_, s)| s.next_timeout <= now)
            .map(|(id, _)| *id)
            .collect();
        add(&self.metrics.endpoint_timeouts_total, due.len() as u64);
        for conn in due {
            if let Some(slot) = self.endpoints.get_mut(&conn) {
                let _ = slot.endpoint.handle_input(now, Input::Timeout);
            }
            self.drive(now, conn);
        }
        self.report_demand(now);
    }

    // ---- commands and rings ----

    pub fn on_command(&mut self, now: Instant, cmd: ShardCommand) {
        match cmd {
            ShardCommand::Adopt {
                conn,
                endpoint,
                first,
                subscriptions,
            } => {
                let key = endpoint.route_key();
                let published = endpoint.published();
                for t in &published {
                    self.publishers.insert(t.channel, conn);
                }
                if let Some(key) = &key {
                    self.by_key.insert(key.clone(), conn);
                }
                self.take_endpoint(conn, endpoint, key, now);
                for (slot, ch) in subscriptions {
                    self.subscribe(now, conn, slot, Some(ch));
                }
                self.receive(now, conn, first.source, first.destination, &first.contents);
                // Viewers that subscribed while this publisher was pending
                // asked for a keyframe nobody could send: ask now (the
                // endpoint sends it with the track's first packet).
                let video = published
                    .iter()
                    .filter(|t| t.kind == MediaKind::Video)
                    .map(|t| t.channel);
                for ch in video {
                    self.keyframe_local(now, ch, None);
                }
            }
            ShardCommand::Place { conn, endpoint, .. } => self.place(now, conn, endpoint),
            ShardCommand::Ingress { conn, datagram } => {
                self.cross_shard_ingress(now, conn, &datagram)
            }
            ShardCommand::Close { conn } => {
                if let Some(slot) = self.endpoints.get_mut(&conn) {
                    let _ = slot
                        .endpoint
                        .handle_input(now, Input::Command(Command::Close));
                }
                self.drive(now, conn);
            }
            ShardCommand::Route { conn, addr, owner } => self.add_route(conn, addr, owner),
            ShardCommand::Unroute { conn } => self.remove_routes(conn),
            ShardCommand::Subscribe {
                conn,
                slot,
                channel,
            } => self.subscribe(now, conn, slot, channel),
            ShardCommand::Prefer {
                conn,
                slot,
                preference,
            } => {
                if let Some(s) = self.endpoints.get_mut(&conn) {
                    let prefer = Command::Prefer { slot, preference };
                    let _ = s.endpoint.handle_input(now, Input::Command(prefer));
                }
            }
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
            ShardCommand::Signal { conn, body, reply } => {
                let result = match self.endpoints.get_mut(&conn) {
                    Some(slot) => slot.endpoint.signal(now, &body),
                    None => Err("no such connection".to_string()),
                };
                if let Some(slot) = self.endpoints.get_mut(&conn) {
                    let key = slot.endpoint.route_key();
                    if key != slot.key {
                        if let Some(old) = slot.key.take() {
                            self.by_key.remove(&old);
                        }
                        if let Some(new) = &key {
                            self.by_key.insert(new.clone(), conn);
                        }
                        slot.key = key.clone();
                        if let Some(RouteKey::IceUfrag(ufrag)) = key {
                            self.emit(ControlEvent::UfragChanged { conn, ufrag });
                        }
                    }
                }
                let _ = reply.send(result);
                self.drive(now, conn);
            }
            ShardCommand::Admit { conn, answer } => {
                let admitted = answer.is_ok();
                let Some(slot) = self.endpoints.get_mut(&conn) else {
                    return;
                };
                let _ = slot
                    .endpoint
                    .handle_input(now, Input::Command(Command::Admit(answer)));
                if admitted {
                    for t in slot.endpoint.published() {
                        self.publishers.insert(t.channel, conn);
                    }
                    if let Some(s) = self.streams.get_mut(&conn) {
                        s.admitted = true;
                    }
                    self.store_endpoint_count();
                }
                self.drive(now, conn);
            }
            ShardCommand::Rpc { conn, text } => {
                if let Some(slot) = self.endpoints.get_mut(&conn) {
                    let _ = slot
                        .endpoint
                        .handle_input(now, Input::Command(Command::Rpc(text)));
                }
                self.drive(now, conn);
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
                    RingMsg::Keyframe(channel, layer) => self.keyframe_local(now, channel, layer),
                    RingMsg::Export(packet) => self.export(now, &packet),
                    RingMsg::LayerDemand {
                        shard,
                        channel,
                        layers,
                    } => self.on_layer_demand(now, shard, channel, layers),
                    RingMsg::Ingress { conn, datagram } => {
                        self.cross_shard_ingress(now, conn, &datagram)
                    }
                    RingMsg::MoqIngress(datagram) => self.moq_forwarded(now, &datagram),
                }
            }
        }
    }

    // ---- fan-out ----

    /// Points one receive slot of `conn` at a channel (or none).
    fn subscribe(&mut self, now: Instant, conn: ConnId, rx: SlotId, channel: Option<ChannelId>) {
        let Some(slot) = self.endpoints.get_mut(&conn) else {
            return;
        };
        let old = slot
            .subscriptions
            .iter()
            .find(|(s, _)| *s == rx)
            .map(|(_, c)| *c);
        slot.subscriptions.retain(|(s, _)| *s != rx);
        let command = Command::Subscribe { slot: rx, channel };
        let _ = slot.endpoint.handle_input(now, Input::Command(command));
        // The connection leaves a channel's list when none of its slots
        // plays it any more.
        if let Some(old) = old {
            if !slot.subscriptions.iter().any(|(_, c)| *c == old) {
                if let Some(list) = self.subscribers.get_mut(&old) {
                    list.retain(|s| *s != conn);
                    if list.is_empty() {
                        self.subscribers.remove(&old);
                    }
                }
            }
        }
        if let Some(ch) = channel {
            let listed = slot.subscriptions.iter().any(|(_, c)| *c == ch);
            slot.subscriptions.push((rx, ch));
            if !listed {
                self.subscribers.entry(ch).or_default().push(conn);
            }
            // A new subscriber of video needs a keyframe to start decoding
            // (the publisher's endpoint ignores this for audio).
            self.request_keyframe(now, ch, None);
        }
        self.demand.look_soon();
    }

    /// Publishes one packet: to local viewers, and once per other shard that
    /// has viewers of the channel.
    pub(super) fn publish(&mut self, now: Instant, packet: MediaPacket) {
        inc(&self.metrics.media_packets_total);
        if let (MediaKind::Audio, Some(level)) = (packet.kind, packet.audio_level) {
            self.levels.add(now, packet.channel, level);
            if let Some(report) = self.levels.take_due(now) {
                self.emit(ControlEvent::AudioLevels(report));
            }
        }
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

    /// What this shard's viewers want of each channel they play, one bit
    /// per spatial layer ([`Endpoint::wanted_layers`]).
    pub(super) fn wanted_layers(&self) -> Vec<(ChannelId, u8)> {
        self.subscribers
            .iter()
            .map(|(channel, viewers)| {
                let layers = viewers
                    .iter()
                    .filter_map(|c| self.endpoints.get(c))
                    .fold(0, |m, s| m | s.endpoint.wanted_layers(*channel));
                (*channel, layers)
            })
            .collect()
    }

    pub(super) fn is_clustered(&self) -> bool {
        self.stream_settings.clustered
    }

    /// Pushes onto the ring toward shard `j`; a full ring drops and counts.
    pub(super) fn push_ring(&mut self, j: usize, msg: RingMsg) -> bool {
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

    fn add_route(&mut self, conn: ConnId, addr: SocketAddr, owner: usize) {
        if owner == self.id || owner >= self.links.to.len() || self.by_addr.contains_key(&addr) {
            return;
        }
        if let Some(&(old, _)) = self.routes.get(&addr) {
            if old == conn {
                self.routes.insert(addr, (conn, owner));
                return;
            }
            // The address now belongs to another conn (a reused port).
            self.unroute_addr(old, addr);
        }
        let per_session = self.routes_by_session.get(&conn).map_or(0, Vec::len);
        if self.routes.len() >= MAX_ROUTES || per_session >= MAX_ROUTES_PER_SESSION {
            inc(&self.metrics.route_drops_total);
            return;
        }
        self.routes.insert(addr, (conn, owner));
        self.routes_by_session.entry(conn).or_default().push(addr);
        self.store_routes();
    }

    fn unroute_addr(&mut self, conn: ConnId, addr: SocketAddr) {
        self.routes.remove(&addr);
        if let Some(list) = self.routes_by_session.get_mut(&conn) {
            list.retain(|a| *a != addr);
            if list.is_empty() {
                self.routes_by_session.remove(&conn);
            }
        }
        self.store_routes();
    }

    fn remove_routes(&mut self, conn: ConnId) {
        for addr in self.routes_by_session.remove(&conn).unwrap_or_default() {
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
    pub(super) fn emit(&mut self, event: ControlEvent) {
        if self.outbox.is_empty() {
            match self.control.try_send(event) {
                Ok(()) => {}
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
        for conn in &viewers {
            let Some(slot) = self.endpoints.get_mut(conn) else {
                continue;
            };
            if !matches!(
                slot.endpoint.handle_input(now, Input::Media(packet)),
                Ok(true)
            ) {
                // Not sent (held for a keyframe, dropped, not connected):
                // the rare path counts at once.
                report_stats(&self.metrics, slot);
            } else if !slot.queued {
                slot.queued = true;
                self.queued.push(*conn);
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
        let batch: Vec<ConnId> = self.queued.drain(..n).collect();
        for conn in batch {
            let Some(slot) = self.endpoints.get_mut(&conn) else {
                continue;
            };
            slot.queued = false;
            let _ = slot.endpoint.handle_input(now, Input::Flush);
            self.drive(now, conn);
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

    /// Returns a taken subscriber list, without conns that ended meanwhile
    /// and with any that subscribed meanwhile.
    fn put_back_subscribers(&mut self, channel: ChannelId, mut viewers: Vec<ConnId>) {
        viewers.retain(|s| self.endpoints.contains_key(s));
        if let Some(added) = self.subscribers.remove(&channel) {
            viewers.extend(added);
        }
        if !viewers.is_empty() {
            self.subscribers.insert(channel, viewers);
        }
    }

    pub(super) fn request_keyframe(&mut self, now: Instant, channel: ChannelId, layer: Option<u8>) {
        if self.publishers.contains_key(&channel) {
            self.keyframe_local(now, channel, layer);
            return;
        }
        if self.remote_keyframe(now, channel, layer) {
            return;
        }
        for j in 0..self.links.to.len() {
            if j != self.id {
                self.push_ring(j, RingMsg::Keyframe(channel, layer));
            }
        }
    }

    fn keyframe_local(&mut self, now: Instant, channel: ChannelId, layer: Option<u8>) {
        let Some(&conn) = self.publishers.get(&channel) else {
            // Published on another node: shard 0 asks the cluster.
            self.remote_keyframe(now, channel, layer);
            return;
        };
        let Some(slot) = self.endpoints.get_mut(&conn) else {
            return;
        };
        let command = Input::Command(Command::RequestKeyframe(channel, layer));
        if matches!(slot.endpoint.handle_input(now, command), Ok(true)) {
            self.drive(now, conn);
        }
    }

    // ---- endpoint output ----

    /// Drains one endpoint's output until its next timeout.
    fn drive(&mut self, now: Instant, conn: ConnId) {
        loop {
            let Some(slot) = self.endpoints.get_mut(&conn) else {
                return;
            };
            match slot.endpoint.poll_output(now) {
                Output::Transmit(t) if self.streams.contains_key(&conn) => {
                    self.write_stream(now, conn, &t.contents)
                }
                Output::Transmit(t) => self.out.push(t),
                Output::Timeout(at) => {
                    slot.next_timeout = at;
                    report_stats(&self.metrics, slot);
                    return;
                }
                Output::Event(event) => self.on_event(now, conn, event),
            }
        }
    }

    fn on_event(&mut self, now: Instant, conn: ConnId, event: Event) {
        match event {
            Event::Media(packet) => self.publish(now, packet),
            Event::KeyframeRequest(channel, layer) => self.request_keyframe(now, channel, layer),
            Event::SlotLive(slot) => self.emit(ControlEvent::SlotLive { conn, slot }),
            Event::Rpc(text) => {
                // Within the endpoint's size and rate limits; the control
                // thread answers it.
                inc(&self.metrics.rpc_requests_total);
                self.emit(ControlEvent::Rpc { conn, text });
            }
            Event::ActiveCodec(channel, codec) => {
                self.emit(ControlEvent::ActiveCodec {
                    conn,
                    channel,
                    codec,
                });
            }
            Event::TrackLayers(channel, layers) => {
                self.emit(ControlEvent::TrackLayers {
                    conn,
                    channel,
                    layers,
                });
            }
            Event::Connected => {}
            Event::Dtmf(digit) => self.emit(ControlEvent::Dtmf { conn, digit }),
            Event::PublishRequest { room, token } => {
                let transport = match self.endpoints.get(&conn) {
                    Some(s) => s.endpoint.transport(),
                    None => return,
                };
                if let Some(s) = self.streams.get_mut(&conn) {
                    s.requested = true;
                }
                if let Some(m) = self.moq.as_mut().filter(|m| m.conns.contains(&conn)) {
                    m.requested.insert(conn);
                }
                self.emit(ControlEvent::PublishRequest {
                    conn,
                    shard: self.id,
                    transport,
                    room,
                    token,
                });
            }
            Event::WatchRequest { room, token } => {
                let Some(s) = self.endpoints.get(&conn) else {
                    return;
                };
                let (transport, slots) = (s.endpoint.transport(), s.endpoint.slots());
                if let Some(m) = self.moq.as_mut() {
                    m.requested.insert(conn);
                }
                self.emit(ControlEvent::WatchRequest {
                    conn,
                    shard: self.id,
                    transport,
                    room,
                    token,
                    slots,
                });
            }
            Event::Closed(reason) => {
                if reason == corecast_media::CloseReason::ConsentExpired
                    && self.streams.contains_key(&conn)
                {
                    inc(&self.metrics.rtmp_timeouts_total);
                }
                // A stream connection that never asked to publish, or a
                // MoQ connection that never asked to watch, is unknown to
                // the control thread.
                let known =
                    self.streams.get(&conn).is_none_or(|s| s.requested) && self.moq_known(conn);
                self.remove(conn);
                if known {
                    self.emit(ControlEvent::Closed { conn, reason });
                }
            }
        }
    }

    fn remove(&mut self, conn: ConnId) {
        self.moq_removed(conn);
        // Flush what the endpoint still has to say (DTLS close_notify).
        let Some(mut slot) = self.endpoints.remove(&conn) else {
            return;
        };
        let now = slot.next_timeout;
        let mut stream = self.streams.remove(&conn);
        while let Output::Transmit(t) = slot.endpoint.poll_output(now) {
            match stream.as_mut() {
                // What explains a refusal goes out before the close.
                Some(s) => s.pending.extend_from_slice(&t.contents),
                None => self.out.push(t),
            }
        }
        // Its last counts are in the metrics before the user sees the
        // connection close. Its share of the gauges goes with it (the
        // counters stay): after that last report, which may still move them.
        report_stats(&self.metrics, &mut slot);
        let gone = LayerStats {
            switches_up: slot.reported.layers.switches_up,
            switches_down: slot.reported.layers.switches_down,
            pauses: slot.reported.layers.pauses,
            ..LayerStats::default()
        };
        report_layers(&self.metrics, &slot.reported.layers, &gone);
        if let Some(s) = stream {
            let mut sock = &s.socket;
            let _ = sock.write_all(&s.pending);
            // Wakes the shard's reader task of the connection, which ends.
            let _ = s.socket.shutdown(std::net::Shutdown::Both);
            self.metrics.rtmp_connections.store(
                self.streams.len() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        for addr in &slot.addrs {
            self.by_addr.remove(addr);
        }
        if let Some(key) = &slot.key {
            self.by_key.remove(key);
        }
        for (_, ch) in &slot.subscriptions {
            if let Some(list) = self.subscribers.get_mut(ch) {
                list.retain(|s| *s != conn);
                if list.is_empty() {
                    self.subscribers.remove(ch);
                }
            }
        }
        self.publishers.retain(|_, s| *s != conn);
        self.store_endpoint_count();
    }
}

/// Adds what an endpoint counted since the last report to the shard's
/// metrics: after each drive of the endpoint, when a packet was not sent,
/// and when it is removed.
fn report_stats(metrics: &ShardMetrics, slot: &mut Slot) {
    let now = slot.endpoint.stats();
    if now == slot.reported {
        // The common case after a drive: nothing counted, no atomics touched.
        return;
    }
    let was = std::mem::replace(&mut slot.reported, now);
    let m = metrics;
    for (counter, now, was) in [
        (&m.media_dropped_total, now.media_dropped, was.media_dropped),
        (
            &m.media_waiting_keyframe_total,
            now.waiting_keyframe,
            was.waiting_keyframe,
        ),
        (
            &m.keyframe_requests_total,
            now.keyframe_requests_sent,
            was.keyframe_requests_sent,
        ),
        (
            &m.keyframe_requests_limited_total,
            now.keyframe_requests_limited,
            was.keyframe_requests_limited,
        ),
        (&m.rpc_too_large_total, now.rpc_too_large, was.rpc_too_large),
        (
            &m.rpc_rate_limited_total,
            now.rpc_rate_limited,
            was.rpc_rate_limited,
        ),
        (&m.rpc_not_text_total, now.rpc_not_text, was.rpc_not_text),
    ] {
        if now != was {
            add(counter, now - was);
        }
    }
    if now.layers != was.layers {
        report_layers(m, &was.layers, &now.layers);
    }
    if slot.endpoint.transport() == TransportKind::Moq {
        let (now, was) = (now.frames_out, was.frames_out);
        for (counter, now, was) in [
            (&m.moq_groups_total, now.groups, was.groups),
            (&m.moq_frames_total, now.frames, was.frames),
            (&m.moq_bytes_total, now.bytes, was.bytes),
            (
                &m.moq_frames_dropped_total,
                now.frames_dropped,
                was.frames_dropped,
            ),
            (&m.moq_refused_total, now.refused, was.refused),
            (
                &m.moq_subscriptions_total,
                now.subscriptions,
                was.subscriptions,
            ),
        ] {
            if now != was {
                add(counter, now - was);
            }
        }
        return;
    }
    let (now, was) = (now.ingest, was.ingest);
    if now == was {
        return;
    }
    if slot.endpoint.transport() == TransportKind::Sip {
        for (counter, now, was) in [
            (&m.sip_rtp_bytes_total, now.bytes_in, was.bytes_in),
            (
                &m.sip_audio_frames_total,
                now.audio_frames,
                was.audio_frames,
            ),
            (
                &m.sip_audio_errors_total,
                now.audio_errors,
                was.audio_errors,
            ),
            (&m.sip_rtp_refused_total, now.ignored, was.ignored),
        ] {
            if now != was {
                add(counter, now - was);
            }
        }
        return;
    }
    if slot.endpoint.transport() != TransportKind::Rtmp {
        return;
    }
    for (counter, now, was) in [
        (&m.rtmp_bytes_total, now.bytes_in, was.bytes_in),
        (
            &m.rtmp_video_frames_total,
            now.video_frames,
            was.video_frames,
        ),
        (
            &m.rtmp_audio_frames_total,
            now.audio_frames,
            was.audio_frames,
        ),
        (&m.rtmp_b_frames_total, now.b_frames, was.b_frames),
        (
            &m.rtmp_transcode_microseconds_total,
            now.transcode_ns / 1000,
            was.transcode_ns / 1000,
        ),
        (
            &m.rtmp_audio_errors_total,
            now.audio_errors,
            was.audio_errors,
        ),
        (
            &m.rtmp_unsupported_frames_total,
            now.unsupported_frames,
            was.unsupported_frames,
        ),
        (&m.rtmp_ignored_total, now.ignored, was.ignored),
        (
            &m.rtmp_play_refused_total,
            now.play_refused,
            was.play_refused,
        ),
        (
            &m.rtmp_codec_refused_total,
            now.codec_refused,
            was.codec_refused,
        ),
    ] {
        if now != was {
            add(counter, now - was);
        }
    }
}

/// Moves the shard's adaptive-forwarding counters and gauges by one
/// endpoint's change from `was` to `now`.
fn report_layers(m: &ShardMetrics, was: &LayerStats, now: &LayerStats) {
    for (counter, now, was) in [
        (&m.layer_switches_up_total, now.switches_up, was.switches_up),
        (
            &m.layer_switches_down_total,
            now.switches_down,
            was.switches_down,
        ),
        (&m.video_pauses_total, now.pauses, was.pauses),
    ] {
        if now != was {
            add(counter, now - was);
        }
    }
    let layers = [
        &m.video_slots_layer0,
        &m.video_slots_layer1,
        &m.video_slots_layer2,
        &m.video_slots_layer3,
    ];
    for (gauge, (now, was)) in layers.iter().zip(now.on_layer.iter().zip(&was.on_layer)) {
        shift(gauge, u64::from(*was), u64::from(*now));
    }
    shift(
        &m.video_slots_paused,
        u64::from(was.paused),
        u64::from(now.paused),
    );
    shift(
        &m.estimated_legs,
        u64::from(was.estimate_bps > 0),
        u64::from(now.estimate_bps > 0),
    );
    shift(&m.estimate_bps_sum, was.estimate_bps, now.estimate_bps);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh;
    use corecast_media::{CloseReason, Codec, CodecInfo, InputError};
    use corecast_webrtc::{Client, EndpointConfig};
    use std::sync::atomic::Ordering;

    /// Shard 0 of a mesh, without sockets: the other shards' ends of the
    /// rings and the control channel stay with the test.
    struct Rig {
        shard: Shard,
        /// `others[j - 1]`: shard j's ends of the mesh.
        others: Vec<ShardLinks>,
        control: flume::Receiver<ControlEvent>,
        config: EndpointConfig,
        t0: Instant,
        next_port: u16,
    }

    fn rig(shards: usize, control_capacity: usize, claims_per_second: u32) -> Rig {
        let mut links = mesh::wire(shards);
        let mine = links.remove(0);
        let (tx, rx) = flume::bounded(control_capacity);
        Rig {
            shard: Shard::new(0, mine, tx, Arc::default(), None, claims_per_second),
            others: links,
            control: rx,
            config: EndpointConfig::new(vec!["127.0.0.1:9000".parse().unwrap()]),
            t0: Instant::now(),
            next_port: 5000,
        }
    }

    impl Rig {
        /// Adopts a viewer endpoint (its first datagram is empty: refused
        /// and counted, the endpoint stays).
        fn viewer(&mut self) -> ConnId {
            self.next_port += 1;
            let local: SocketAddr = format!("127.0.0.1:{}", self.next_port).parse().unwrap();
            let (_, offer) = Client::viewer(&self.config, self.t0, local).unwrap();
            let (endpoint, _) =
                corecast_webrtc::Endpoint::viewer(&self.config, self.t0, &offer, &[]).unwrap();
            let conn = ConnId::new(0, rand::random());
            self.shard.on_command(
                self.t0,
                ShardCommand::Adopt {
                    conn,
                    endpoint: Box::new(endpoint),
                    first: Datagram {
                        at: self.t0,
                        source: local,
                        destination: "127.0.0.1:9000".parse().unwrap(),
                        contents: Vec::new(),
                    },
                    subscriptions: Vec::new(),
                },
            );
            conn
        }

        fn subscribe(&mut self, conn: ConnId, kind: MediaKind, channel: Option<u64>) {
            self.shard.on_command(
                self.t0,
                ShardCommand::Subscribe {
                    conn,
                    // The test client's offer: audio, then video.
                    slot: match kind {
                        MediaKind::Audio => SlotId(0),
                        MediaKind::Video => SlotId(1),
                    },
                    channel: channel.map(ChannelId),
                },
            );
        }

        fn subscribers(&self, channel: u64) -> Vec<ConnId> {
            self.shard
                .subscribers
                .get(&ChannelId(channel))
                .cloned()
                .unwrap_or_default()
        }

        /// Media messages that reached shard `j` from shard 0.
        fn media_at(&mut self, j: usize) -> usize {
            let ring = self.others[j - 1].from[0].as_mut().unwrap();
            let mut n = 0;
            while let Ok(msg) = ring.pop() {
                if matches!(msg, RingMsg::Media(_)) {
                    n += 1;
                }
            }
            n
        }

        fn events(&self) -> Vec<String> {
            self.control
                .try_iter()
                .map(|e| match e {
                    ControlEvent::Adopted { conn, .. } => format!("adopted {conn}"),
                    ControlEvent::Closed { conn, .. } => format!("closed {conn}"),
                    ControlEvent::Claim { ufrag, .. } => format!("claim {ufrag}"),
                    other => format!("{other:?}"),
                })
                .collect()
        }
    }

    fn packet(channel: u64, at: Instant) -> MediaPacket {
        MediaPacket {
            channel: ChannelId(channel),
            kind: MediaKind::Video,
            codec: CodecInfo::new(Codec::Vp8, 90_000),
            seq: 1,
            rtp_time: 0,
            marker: true,
            arrival: at,
            wallclock: at,
            orientation: None,
            layer: Default::default(),
            audio_level: None,
            dependency: None,
            payload: Arc::from(&[0x10u8, 0][..]),
        }
    }

    fn binding_request(ufrag: &str) -> Vec<u8> {
        let user = format!("{ufrag}:client");
        let mut attrs = vec![0x00, 0x06, 0x00, user.len() as u8];
        attrs.extend_from_slice(user.as_bytes());
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut s = vec![0x00, 0x01, 0x00, attrs.len() as u8, 0x21, 0x12, 0xa4, 0x42];
        s.extend_from_slice(&[7; 12]);
        s.extend_from_slice(&attrs);
        s
    }

    #[test]
    fn subscriber_lists_follow_subscriptions() {
        let mut r = rig(2, 64, 0);
        let (a, b) = (r.viewer(), r.viewer());
        r.subscribe(a, MediaKind::Video, Some(1));
        r.subscribe(b, MediaKind::Video, Some(1));
        r.subscribe(a, MediaKind::Audio, Some(2));
        assert_eq!(r.subscribers(1), vec![a, b]);
        assert_eq!(r.subscribers(2), vec![a]);
        // Moving a's video moves it between lists; its audio stays.
        r.subscribe(a, MediaKind::Video, Some(3));
        assert_eq!(r.subscribers(1), vec![b]);
        assert_eq!(r.subscribers(3), vec![a]);
        assert_eq!(r.subscribers(2), vec![a]);
        // The last viewer of a channel leaves: no empty list stays behind.
        r.subscribe(b, MediaKind::Video, None);
        assert!(!r.shard.subscribers.contains_key(&ChannelId(1)));
        // Subscribing an unknown conn does nothing.
        r.subscribe(ConnId(12345), MediaKind::Video, Some(1));
        assert!(r.subscribers(1).is_empty());
    }

    #[test]
    fn fanout_masks_pick_the_rings() {
        let mut r = rig(3, 64, 0);
        let t = r.t0;
        let fanout = |r: &mut Rig, shards: u64| {
            r.shard.on_command(
                t,
                ShardCommand::Fanout {
                    channel: ChannelId(7),
                    shards,
                },
            )
        };
        // Without a mask the packet stays here.
        r.shard.publish(t, packet(7, t));
        assert_eq!((r.media_at(1), r.media_at(2)), (0, 0));
        // Every shard, this one included: once per other shard, never to itself.
        fanout(&mut r, 0b111);
        r.shard.publish(t, packet(7, t));
        assert_eq!((r.media_at(1), r.media_at(2)), (1, 1));
        fanout(&mut r, 0b100);
        r.shard.publish(t, packet(7, t));
        r.shard.publish(t, packet(8, t));
        assert_eq!((r.media_at(1), r.media_at(2)), (0, 1));
        fanout(&mut r, 0);
        assert!(!r.shard.fanout.contains_key(&ChannelId(7)));
        r.shard.publish(t, packet(7, t));
        assert_eq!((r.media_at(1), r.media_at(2)), (0, 0));
        assert_eq!(
            r.shard.metrics.ring_forwards_total.load(Ordering::Relaxed),
            3
        );
        assert_eq!(r.shard.metrics.ring_drops_total.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_closed_viewer_leaves_every_list_and_is_reported() {
        let mut r = rig(2, 64, 0);
        let (a, b) = (r.viewer(), r.viewer());
        r.subscribe(a, MediaKind::Video, Some(1));
        r.subscribe(a, MediaKind::Audio, Some(2));
        r.subscribe(b, MediaKind::Video, Some(1));
        assert_eq!(r.shard.metrics.endpoints.load(Ordering::Relaxed), 2);
        r.shard.on_command(r.t0, ShardCommand::Close { conn: a });
        assert_eq!(r.subscribers(1), vec![b]);
        assert!(!r.shard.subscribers.contains_key(&ChannelId(2)));
        assert!(!r.shard.endpoints.contains_key(&a));
        assert!(r.shard.by_addr.values().all(|s| *s != a));
        assert!(r.shard.by_key.values().all(|s| *s != a));
        assert_eq!(r.shard.metrics.endpoints.load(Ordering::Relaxed), 1);
        assert_eq!(
            r.events(),
            vec![
                format!("adopted {a}"),
                format!("adopted {b}"),
                format!("closed {a}")
            ]
        );
        // Media for the channel reaches b only (and nothing panics).
        r.shard.publish(r.t0, packet(1, r.t0));
    }

    #[test]
    fn a_taken_list_is_put_back_without_the_ended_and_with_the_new() {
        let mut r = rig(2, 64, 0);
        let (a, b, c) = (r.viewer(), r.viewer(), r.viewer());
        r.subscribe(a, MediaKind::Video, Some(1));
        r.subscribe(b, MediaKind::Video, Some(1));
        // As deliver_local does: the list is taken while endpoints run ...
        let taken = r.shard.subscribers.remove(&ChannelId(1)).unwrap();
        // ... meanwhile b ends and c subscribes ...
        r.shard.on_command(r.t0, ShardCommand::Close { conn: b });
        r.subscribe(c, MediaKind::Video, Some(1));
        // ... and the list that goes back has a and c.
        r.shard.put_back_subscribers(ChannelId(1), taken);
        assert_eq!(r.subscribers(1), vec![a, c]);
        // A list whose viewers all ended is not put back.
        let taken = r.shard.subscribers.remove(&ChannelId(1)).unwrap();
        r.shard.on_command(r.t0, ShardCommand::Close { conn: a });
        r.shard.on_command(r.t0, ShardCommand::Close { conn: c });
        r.shard.put_back_subscribers(ChannelId(1), taken);
        assert!(!r.shard.subscribers.contains_key(&ChannelId(1)));
    }

    #[test]
    fn lifecycle_events_wait_in_the_outbox_and_keep_their_order() {
        // A control queue of one event.
        let mut r = rig(2, 1, 0);
        let viewers: Vec<ConnId> = (0..3).map(|_| r.viewer()).collect();
        for v in &viewers {
            r.shard.on_command(r.t0, ShardCommand::Close { conn: *v });
        }
        let m = r.shard.metrics.clone();
        let waiting = m.control_outbox.load(Ordering::Relaxed);
        let mut got = Vec::new();
        for _ in 0..100 {
            got.extend(r.events());
            r.shard.flush_control();
        }
        let mut expected: Vec<String> = viewers.iter().map(|v| format!("adopted {v}")).collect();
        expected.extend(viewers.iter().map(|v| format!("closed {v}")));
        assert_eq!(got, expected, "every event arrives, in order");
        assert_eq!(waiting, 5, "5 of the 6 events waited in the outbox");
        assert_eq!(m.control_outbox.load(Ordering::Relaxed), 0);
        assert_eq!(m.control_queued_total.load(Ordering::Relaxed), 5);
        assert_eq!(m.control_retries_total.load(Ordering::Relaxed), 5);
        assert_eq!(m.control_outbox_drops_total.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn routed_addresses_go_to_their_shard_over_the_ring() {
        let mut r = rig(3, 64, 0);
        let t = r.t0;
        let local: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        let client: SocketAddr = "127.0.0.1:6000".parse().unwrap();
        let conn = ConnId(99);
        let route = |r: &mut Rig, port: u16, owner: usize| {
            r.shard.on_command(
                t,
                ShardCommand::Route {
                    conn,
                    addr: SocketAddr::new(client.ip(), port),
                    owner,
                },
            )
        };
        route(&mut r, 6000, 2);
        r.shard
            .on_datagram(t, client, local, &[0x17, 0xfe, 0xfd, 1, 2]);
        let ring = r.others[1].from[0].as_mut().unwrap();
        match ring.pop() {
            Ok(RingMsg::Ingress { conn: s, datagram }) => {
                assert_eq!(s, conn);
                assert_eq!(datagram.source, client);
                assert_eq!(datagram.contents, vec![0x17, 0xfe, 0xfd, 1, 2]);
            }
            _ => panic!("the datagram went to shard 2"),
        }
        let m = r.shard.metrics.clone();
        assert_eq!(m.ingress_forwards_total.load(Ordering::Relaxed), 1);
        assert_eq!(m.bad_packets_total.load(Ordering::Relaxed), 0);
        // A route to this shard itself or to no shard is refused.
        route(&mut r, 6001, 0);
        route(&mut r, 6002, 9);
        assert_eq!(m.routes.load(Ordering::Relaxed), 1);
        // At most MAX_ROUTES_PER_SESSION addresses per conn.
        for port in 6100..6100 + MAX_ROUTES_PER_SESSION as u16 {
            route(&mut r, port, 1);
        }
        assert_eq!(
            m.routes.load(Ordering::Relaxed),
            MAX_ROUTES_PER_SESSION as u64
        );
        assert_eq!(m.route_drops_total.load(Ordering::Relaxed), 1);
        // The conn ends: its routes go, its datagrams are bad again.
        r.shard.on_command(t, ShardCommand::Unroute { conn });
        assert_eq!(m.routes.load(Ordering::Relaxed), 0);
        assert!(r.shard.routes_by_session.is_empty());
        r.shard.on_datagram(t, client, local, &[0x17, 0xfe, 0xfd]);
        assert_eq!(m.bad_packets_total.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn stun_claims_are_limited_per_second() {
        let mut r = rig(2, 1024, 5);
        let t = r.t0;
        let local: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        let spoof = |r: &mut Rig, at: Instant, n: u16| {
            for i in 0..n {
                let from = SocketAddr::from(([10, 0, 0, 1], 1000 + i));
                r.shard
                    .on_datagram(at, from, local, &binding_request(&format!("u{i}")));
            }
        };
        spoof(&mut r, t, 20);
        assert_eq!(r.events().len(), 5, "a burst of 5");
        let m = r.shard.metrics.clone();
        assert_eq!(m.claims_limited_total.load(Ordering::Relaxed), 15);
        // 400 ms later: 2 more (5 per second).
        spoof(&mut r, t + Duration::from_millis(400), 20);
        assert_eq!(r.events().len(), 2);
        // A STUN request of an endpoint this shard holds is no claim: never limited.
        let v = r.viewer();
        let Some(RouteKey::IceUfrag(ufrag)) = r.shard.endpoints[&v].key.clone() else {
            panic!("a WebRTC endpoint is found by its ufrag")
        };
        let before = m.claims_limited_total.load(Ordering::Relaxed);
        let from = SocketAddr::from(([10, 0, 0, 2], 1));
        for _ in 0..10 {
            r.shard.on_datagram(
                t + Duration::from_millis(400),
                from,
                local,
                &binding_request(&ufrag),
            );
        }
        assert_eq!(m.claims_limited_total.load(Ordering::Relaxed), before);
    }

    /// An endpoint that forwards layer 1 until it has said it closed, and
    /// reports nothing forwarded after (a slot that moves while closing).
    #[derive(Debug, Default)]
    struct ClosingViewer {
        closing: bool,
        said_closed: bool,
    }

    impl Endpoint for ClosingViewer {
        fn transport(&self) -> TransportKind {
            TransportKind::Whep
        }
        fn route_key(&self) -> Option<RouteKey> {
            None
        }
        fn published(&self) -> Vec<corecast_media::PublishedTrack> {
            Vec::new()
        }
        fn slots(&self) -> Vec<corecast_media::Slot> {
            Vec::new()
        }
        fn handle_input(&mut self, _: Instant, input: Input<'_>) -> Result<bool, InputError> {
            if let Input::Command(Command::Close) = input {
                self.closing = true;
            }
            Ok(true)
        }
        fn poll_output(&mut self, now: Instant) -> Output {
            if self.closing && !self.said_closed {
                self.said_closed = true;
                return Output::Event(Event::Closed(CloseReason::Closed));
            }
            Output::Timeout(now + Duration::from_secs(1))
        }
        fn signal(&mut self, _: Instant, _: &str) -> Result<Option<String>, String> {
            Ok(None)
        }
        fn stats(&self) -> EndpointStats {
            let mut stats = EndpointStats::default();
            if !self.said_closed {
                stats.layers.on_layer[1] = 1;
            }
            stats
        }
        fn is_closed(&self) -> bool {
            self.said_closed
        }
    }

    #[test]
    fn a_removed_viewer_takes_its_share_of_the_layer_gauges() {
        let mut r = rig(1, 64, 0);
        let conn = ConnId::new(0, 7);
        r.shard.on_command(
            r.t0,
            ShardCommand::Adopt {
                conn,
                endpoint: Box::<ClosingViewer>::default(),
                first: Datagram {
                    at: r.t0,
                    source: "127.0.0.1:5999".parse().unwrap(),
                    destination: "127.0.0.1:9000".parse().unwrap(),
                    contents: Vec::new(),
                },
                subscriptions: Vec::new(),
            },
        );
        let gauge = &r.shard.metrics.video_slots_layer1;
        assert_eq!(gauge.load(Ordering::Relaxed), 1);
        // Its last report (after it said it closed) moves the gauge too:
        // the share it takes away is the one left after that report.
        r.shard.on_command(r.t0, ShardCommand::Close { conn });
        assert!(!r.shard.endpoints.contains_key(&conn));
        assert_eq!(
            r.shard.metrics.video_slots_layer1.load(Ordering::Relaxed),
            0
        );
    }
}
