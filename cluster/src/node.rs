//! [`Cluster`]: one node's view of the cluster, sans-IO.
//!
//! It wraps one atm0s-sdn [`SdnWorker`] (controller and data plane, features
//! pub-sub, dht_kv, neighbours and router) and the presence table, behind
//! one UDP port whose datagrams are sealed with the cluster secret.
//! Feed it datagrams and time, call its commands, then drain
//! [`Cluster::poll_output`] until it returns a timeout.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atm0s_sdn::features::dht_kv::{self, Key, Map, MapControl, MapEvent};
use atm0s_sdn::features::neighbours;
use atm0s_sdn::features::pubsub::{self, ChannelControl, ChannelEvent, Feedback};
use atm0s_sdn::features::{FeaturesControl, FeaturesEvent};
use atm0s_sdn::sans_io_runtime::Buffer;
use atm0s_sdn::secure::{HandshakeBuilderXDA, StaticKeyAuthorization};
use atm0s_sdn::{
    ConnId, ControllerPlaneCfg, DataPlaneCfg, DataWorkerHistory, NetInput, NetOutput,
    NodeAddrBuilder, Protocol, SdnExtIn, SdnExtOut, SdnWorker, SdnWorkerCfg, SdnWorkerInput,
    SdnWorkerOutput,
};
use atm0s_sdn_network::data_plane::NetPair;
use corecast_media::ChannelId;
use rand08::SeedableRng;

use crate::envelope::{Kind, Reject, Sealer};
use crate::presence::{Change, NodeInfo, NodeLoad, NodeRole, Presence};
use crate::records::{PeerRecord, ROOMS_MAP};
use crate::registrations::{RegistrationRecord, REGISTRATIONS_MAP};

/// How often atm0s-sdn gets a tick (its retries run on ticks).
const TICK: Duration = Duration::from_millis(100);
/// How often a node sets its room entries again, with a new `refresh`.
///
/// atm0s-sdn's `dht_kv` keeps a key on one relay node; when that node leaves
/// the cluster, consumers move to a new relay, which never held a key
/// deleted in between, so no consumer hears of the deletion. Refreshed
/// entries let every node drop those it stopped hearing about.
pub const REFRESH: Duration = Duration::from_secs(5);
/// An entry not set again for this long is gone (its holder refreshes it
/// every [`REFRESH`]).
pub const STALE: Duration = Duration::from_secs(16);
/// Feedback kind of a keyframe request on a track channel, of every layer;
/// the next kinds ask for one spatial layer (`KEYFRAME_FEEDBACK + 1 + layer`).
const KEYFRAME_FEEDBACK: u8 = 1;
/// Spatial layers a keyframe request can name.
const KEYFRAME_LAYERS: u8 = 4;

type Worker = SdnWorker<(), (), (), (), ()>;

/// How a node joins the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub node_id: u32,
    pub zone: String,
    pub role: NodeRole,
    /// Shared by every node; datagrams sealed with another are dropped.
    pub secret: String,
    /// The bound address of the cluster socket.
    pub local: SocketAddr,
    /// Nodes to ask first (any live node of the cluster will do).
    pub seeds: Vec<SocketAddr>,
    /// Base URL of this node's HTTP API, for gateways' redirects.
    pub http_url: String,
    /// Random per start: tells a restarted node from its former self.
    pub session: u64,
    /// Wall-clock milliseconds since the Unix epoch at `start`.
    pub epoch_ms: u64,
    pub start: Instant,
}

/// A datagram to send from the cluster socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub to: SocketAddr,
    pub data: Vec<u8>,
}

/// What happened in the cluster that the node must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent {
    /// A packet of a subscribed channel, published on another node.
    Media {
        channel: ChannelId,
        data: Vec<u8>,
    },
    /// A viewer on another node needs a keyframe of a channel published
    /// here: of one spatial layer, or of every layer with `None`.
    Keyframe(ChannelId, Option<u8>),
    /// A peer of a room on another (live) node appeared or changed.
    PeerUp(PeerRecord),
    /// That peer left, or its node went down.
    PeerDown(PeerRecord),
    /// A SIP binding held by another node was set (new or refreshed).
    RegistrationUp(RegistrationRecord),
    /// That binding went (unregistered, expired, or its entry deleted).
    RegistrationDown(RegistrationRecord),
    NodeUp(u32),
    NodeDown(u32),
}

/// What [`Cluster::poll_output`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterOutput {
    Transmit(Transmit),
    Event(ClusterEvent),
    /// Nothing more now; call [`Cluster::handle_timeout`] at this time.
    Timeout(Instant),
}

/// Counters of the cluster port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ClusterStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    /// Datagrams that are not cluster frames.
    pub rejected_garbage: u64,
    /// Frames sealed with another secret (or tampered with).
    pub rejected_secret: u64,
    pub media_in: u64,
    pub media_out: u64,
}

/// This node's part in one channel.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ChannelState {
    pub publishing: bool,
    pub subscribed: bool,
    /// The node the subscription's packets come from (atm0s-sdn's route).
    pub source: Option<u32>,
    pub packets_in: u64,
    pub packets_out: u64,
}

/// One node as [`Cluster::view`] shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MemberView {
    pub node: u32,
    pub zone: String,
    pub role: NodeRole,
    pub http_url: String,
    pub addr: SocketAddr,
    pub alive: bool,
    /// Whether atm0s-sdn holds a connection to it.
    pub connected: bool,
    pub silent_ms: u64,
    pub load: NodeLoad,
}

/// A snapshot for the API and the gateway.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClusterView {
    pub node: u32,
    pub zone: String,
    pub role: NodeRole,
    pub http_url: String,
    pub load: NodeLoad,
    pub members: Vec<MemberView>,
    pub channels: BTreeMap<String, ChannelState>,
    pub stats: ClusterStats,
}

/// One node's cluster state machine.
pub struct Cluster {
    config: ClusterConfig,
    sealer: Sealer,
    worker: Worker,
    presence: Presence,
    load: NodeLoad,
    next_tick: Instant,
    out: VecDeque<ClusterOutput>,
    /// Room entries heard of, by key, live or not, and when last set.
    records: BTreeMap<u64, PeerRecord>,
    /// Other nodes' SIP bindings, by key.
    registrations: BTreeMap<u64, RegistrationRecord>,
    heard: BTreeMap<u64, Instant>,
    /// This node's own entries, set again every [`REFRESH`].
    local: BTreeMap<u64, PeerRecord>,
    next_refresh: Instant,
    channels: BTreeMap<ChannelId, ChannelState>,
    /// atm0s-sdn connections per node.
    connected: BTreeMap<u32, Vec<ConnId>>,
    stats: ClusterStats,
}

impl Cluster {
    pub fn new(config: ClusterConfig) -> Cluster {
        let authorization = Arc::new(StaticKeyAuthorization::new(&config.secret));
        let history = Arc::new(DataWorkerHistory::default());
        let worker = SdnWorker::new(SdnWorkerCfg {
            node_id: config.node_id,
            tick_ms: TICK.as_millis() as u64,
            controller: Some(ControllerPlaneCfg {
                session: config.session,
                bind_addrs: vec![config.local],
                services: vec![],
                authorization,
                handshake_builder: Arc::new(HandshakeBuilderXDA),
                random: Box::new(rand08::rngs::StdRng::seed_from_u64(config.session)),
                history: history.clone(),
            }),
            data: DataPlaneCfg {
                worker_id: 0,
                services: vec![],
                history,
            },
        });
        let mut cluster = Cluster {
            sealer: Sealer::new(&config.secret),
            presence: Presence::new(config.node_id, config.seeds.clone(), config.start),
            next_tick: config.start,
            worker,
            load: NodeLoad::default(),
            out: VecDeque::new(),
            records: BTreeMap::new(),
            registrations: BTreeMap::new(),
            heard: BTreeMap::new(),
            local: BTreeMap::new(),
            next_refresh: config.start + REFRESH,
            channels: BTreeMap::new(),
            connected: BTreeMap::new(),
            stats: ClusterStats::default(),
            config,
        };
        let now = cluster.config.start;
        cluster.control(now, FeaturesControl::Neighbours(neighbours::Control::Sub));
        if cluster.config.role.serves_media() || cluster.config.role == NodeRole::Gateway {
            cluster.control(
                now,
                FeaturesControl::DhtKv(dht_kv::Control::MapCmd(Map(ROOMS_MAP), MapControl::Sub)),
            );
        }
        if cluster.config.role.serves_media() {
            let map = Map(REGISTRATIONS_MAP);
            cluster.control(
                now,
                FeaturesControl::DhtKv(dht_kv::Control::MapCmd(map, MapControl::Sub)),
            );
        }
        cluster
    }

    pub fn node_id(&self) -> u32 {
        self.config.node_id
    }

    pub fn stats(&self) -> ClusterStats {
        self.stats
    }

    /// Whether another node is alive (this node always is).
    pub fn is_alive(&self, node: u32) -> bool {
        self.presence.is_alive(node)
    }

    /// Whether any other node is alive: without one, publishing is wasted.
    pub fn has_peers(&self) -> bool {
        self.presence.members().any(|m| m.alive)
    }

    fn now_ms(&self, now: Instant) -> u64 {
        self.config.epoch_ms + now.saturating_duration_since(self.config.start).as_millis() as u64
    }

    fn control(&mut self, now: Instant, control: FeaturesControl) {
        let now_ms = self.now_ms(now);
        self.worker.on_event(
            now_ms,
            SdnWorkerInput::ExtWorker(SdnExtIn::FeaturesControl((), control)),
        );
        self.drain_worker(now);
    }

    fn pubsub(&mut self, now: Instant, channel: ChannelId, control: ChannelControl) {
        self.control(
            now,
            FeaturesControl::PubSub(pubsub::Control(pubsub::ChannelId(channel.0), control)),
        );
    }

    // ---- inputs ----

    /// A datagram arrived at the cluster socket.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.stats.rx_packets += 1;
        match self.sealer.open(data) {
            Err(Reject::Garbage) => self.stats.rejected_garbage += 1,
            Err(Reject::BadSecret) => self.stats.rejected_secret += 1,
            Ok((Kind::Sdn, body)) => {
                let pair = NetPair::new(self.config.local, from);
                let now_ms = self.now_ms(now);
                self.worker.on_event(
                    now_ms,
                    SdnWorkerInput::Net(NetInput::UdpPacket(pair, Buffer::from(body.to_vec()))),
                );
                self.drain_worker(now);
            }
            Ok((Kind::Presence, body)) => match crate::bin::decode::<NodeInfo>(body) {
                Some(info) => {
                    if let Some(change) = self.presence.on_message(now, from, info) {
                        self.apply(now, change);
                    }
                }
                None => self.stats.rejected_garbage += 1,
            },
        }
    }

    /// Sets this node's entries again, and forgets the entries of others
    /// that were not set again within [`STALE`].
    fn refresh(&mut self, now: Instant) {
        if now < self.next_refresh {
            return;
        }
        self.next_refresh = now + REFRESH;
        let mine: Vec<PeerRecord> = self
            .local
            .values_mut()
            .map(|r| {
                r.refresh += 1;
                r.clone()
            })
            .collect();
        for r in &mine {
            self.store(now, r);
        }
        let stale: Vec<u64> = self
            .heard
            .iter()
            .filter(|(_, at)| now >= **at + STALE)
            .map(|(k, _)| *k)
            .collect();
        for key in stale {
            self.heard.remove(&key);
            if let Some(record) = self.records.remove(&key) {
                tracing::info!(
                    "cluster: room entry {}/{} of node {} not refreshed for {STALE:?}: gone",
                    record.room,
                    record.peer,
                    record.node
                );
                if self.is_live(&record) {
                    self.event(ClusterEvent::PeerDown(record));
                }
            }
        }
    }

    /// Time passed; call at the time of the last [`ClusterOutput::Timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        self.refresh(now);
        if now >= self.next_tick {
            self.next_tick = now + TICK;
            let now_ms = self.now_ms(now);
            self.worker.on_tick(now_ms);
            self.drain_worker(now);
        }
        let (changes, targets) = self.presence.on_tick(now);
        for change in changes {
            self.apply(now, change);
        }
        if !targets.is_empty() {
            // A live node without an atm0s-sdn connection: its first attempt
            // failed (a restarted node meets its former self's connection
            // until that times out), so try again.
            let unconnected: Vec<(u32, SocketAddr)> = self
                .presence
                .members()
                .filter(|m| m.alive && !self.is_connected(m.info.node))
                .map(|m| (m.info.node, m.addr))
                .collect();
            for (node, addr) in unconnected {
                self.connect(now, node, addr);
            }
            let info = NodeInfo {
                node: self.config.node_id,
                session: self.config.session,
                zone: self.config.zone.clone(),
                role: self.config.role,
                http_url: self.config.http_url.clone(),
                load: self.load.clone(),
                known: self.presence.known(),
            };
            let body = crate::bin::encode(&info);
            let mut frame = Vec::new();
            self.sealer.seal(Kind::Presence, &body, &mut frame);
            for to in targets {
                self.transmit(to, frame.clone());
            }
        }
    }

    // ---- commands ----

    /// This node's load, sent with its next presence.
    pub fn set_load(&mut self, load: NodeLoad) {
        self.load = load;
    }

    /// Starts publishing a channel (a local publisher's track).
    pub fn publish_start(&mut self, now: Instant, channel: ChannelId) {
        self.channels.entry(channel).or_default().publishing = true;
        self.pubsub(now, channel, ChannelControl::PubStart);
    }

    pub fn publish_stop(&mut self, now: Instant, channel: ChannelId) {
        if let Some(c) = self.channels.get_mut(&channel) {
            c.publishing = false;
            if !c.subscribed {
                self.channels.remove(&channel);
            }
        }
        self.pubsub(now, channel, ChannelControl::PubStop);
    }

    /// Sends one packet on a published channel, once per next hop of its
    /// relay tree (none when no other node subscribes).
    pub fn publish(&mut self, now: Instant, channel: ChannelId, data: Vec<u8>) {
        self.stats.media_out += 1;
        if let Some(c) = self.channels.get_mut(&channel) {
            c.packets_out += 1;
        }
        self.pubsub(now, channel, ChannelControl::PubData(data));
    }

    /// Subscribes this node to a channel published elsewhere.
    pub fn subscribe(&mut self, now: Instant, channel: ChannelId) {
        self.channels.entry(channel).or_default().subscribed = true;
        self.pubsub(now, channel, ChannelControl::SubAuto);
    }

    pub fn unsubscribe(&mut self, now: Instant, channel: ChannelId) {
        if let Some(c) = self.channels.get_mut(&channel) {
            c.subscribed = false;
            c.source = None;
            if !c.publishing {
                self.channels.remove(&channel);
            }
        }
        self.pubsub(now, channel, ChannelControl::UnsubAuto);
    }

    /// Asks the publisher of a subscribed channel for a keyframe (of one
    /// spatial layer, or of every layer with `None`).
    pub fn request_keyframe(&mut self, now: Instant, channel: ChannelId, layer: Option<u8>) {
        let kind = match layer {
            Some(l) if l < KEYFRAME_LAYERS => KEYFRAME_FEEDBACK + 1 + l,
            _ => KEYFRAME_FEEDBACK,
        };
        let fb = Feedback::simple(kind, 1, 200, 1000);
        self.pubsub(now, channel, ChannelControl::FeedbackAuto(fb));
    }

    /// Sets this node's entry of a room peer in the key-value store (and
    /// again every [`REFRESH`] until it is deleted).
    pub fn set_peer(&mut self, now: Instant, mut record: PeerRecord) {
        record.node = self.config.node_id;
        record.session = self.config.session;
        self.local.insert(record.key(), record.clone());
        self.store(now, &record);
    }

    fn store(&mut self, now: Instant, record: &PeerRecord) {
        let cmd = MapControl::Set(Key(record.key()), record.encode());
        self.control(
            now,
            FeaturesControl::DhtKv(dht_kv::Control::MapCmd(Map(ROOMS_MAP), cmd)),
        );
    }

    /// Deletes this node's entry of a room peer.
    pub fn del_peer(&mut self, now: Instant, room: &str, peer: &str) {
        let key = crate::records::peer_key(room, peer);
        self.local.remove(&key);
        let cmd = MapControl::Del(Key(key));
        self.control(
            now,
            FeaturesControl::DhtKv(dht_kv::Control::MapCmd(Map(ROOMS_MAP), cmd)),
        );
    }

    /// Sets this node's entry of a SIP binding (new or refreshed).
    pub fn set_registration(&mut self, now: Instant, mut record: RegistrationRecord) {
        record.node = self.config.node_id;
        let cmd = MapControl::Set(Key(record.key()), record.encode());
        let map = Map(REGISTRATIONS_MAP);
        self.control(
            now,
            FeaturesControl::DhtKv(dht_kv::Control::MapCmd(map, cmd)),
        );
    }

    /// Deletes this node's entry of a SIP binding.
    pub fn del_registration(&mut self, now: Instant, aor: &str, contact: &str) {
        let key = crate::registrations::registration_key(aor, contact);
        let map = Map(REGISTRATIONS_MAP);
        let cmd = MapControl::Del(Key(key));
        self.control(
            now,
            FeaturesControl::DhtKv(dht_kv::Control::MapCmd(map, cmd)),
        );
    }

    // ---- output ----

    pub fn poll_output(&mut self) -> ClusterOutput {
        if let Some(out) = self.out.pop_front() {
            return out;
        }
        ClusterOutput::Timeout(self.next_tick.min(self.presence.next_send()))
    }

    /// The state of the cluster as this node sees it.
    pub fn view(&self, now: Instant) -> ClusterView {
        let members = self
            .presence
            .members()
            .map(|m| MemberView {
                node: m.info.node,
                zone: m.info.zone.clone(),
                role: m.info.role,
                http_url: m.info.http_url.clone(),
                addr: m.addr,
                alive: m.alive,
                connected: self.is_connected(m.info.node),
                silent_ms: now.saturating_duration_since(m.last_seen).as_millis() as u64,
                load: m.info.load.clone(),
            })
            .collect();
        ClusterView {
            node: self.config.node_id,
            zone: self.config.zone.clone(),
            role: self.config.role,
            http_url: self.config.http_url.clone(),
            load: self.load.clone(),
            members,
            channels: self
                .channels
                .iter()
                .map(|(c, s)| (c.to_string(), s.clone()))
                .collect(),
            stats: self.stats,
        }
    }

    // ---- internals ----

    fn transmit(&mut self, to: SocketAddr, data: Vec<u8>) {
        self.stats.tx_packets += 1;
        self.out
            .push_back(ClusterOutput::Transmit(Transmit { to, data }));
    }

    fn event(&mut self, event: ClusterEvent) {
        self.out.push_back(ClusterOutput::Event(event));
    }

    fn apply(&mut self, now: Instant, change: Change) {
        match change {
            Change::Up { node, addr } => {
                self.connect(now, node, addr);
                self.event(ClusterEvent::NodeUp(node));
                let ups: Vec<PeerRecord> = self
                    .records
                    .values()
                    .filter(|r| r.node == node && self.is_live(r))
                    .cloned()
                    .collect();
                for r in ups {
                    self.event(ClusterEvent::PeerUp(r));
                }
            }
            Change::Down { node } => {
                // No DisconnectFrom here: atm0s-sdn 0.2.8 keeps a connection
                // it was asked to close in Disconnecting until the peer
                // answers, which a dead peer never does, and that entry then
                // refuses the restarted node. An unanswered connection times
                // out by itself (10 s without pong).
                self.event(ClusterEvent::NodeDown(node));
                let downs: Vec<PeerRecord> = self
                    .records
                    .values()
                    .filter(|r| {
                        r.node == node
                            && self.presence.member(node).map(|m| m.info.session) == Some(r.session)
                    })
                    .cloned()
                    .collect();
                for r in downs {
                    self.event(ClusterEvent::PeerDown(r));
                }
                // Its SIP bindings are unreachable: calls to those users
                // find no node until it registers them again.
                let gone: Vec<u64> = self
                    .registrations
                    .iter()
                    .filter(|(_, r)| r.node == node)
                    .map(|(k, _)| *k)
                    .collect();
                for key in gone {
                    if let Some(r) = self.registrations.remove(&key) {
                        self.event(ClusterEvent::RegistrationDown(r));
                    }
                }
            }
        }
    }

    fn is_connected(&self, node: u32) -> bool {
        self.connected.get(&node).is_some_and(|c| !c.is_empty())
    }

    /// Asks atm0s-sdn to connect to a node (a no-op while a connection on
    /// that address exists or is being made).
    fn connect(&mut self, now: Instant, node: u32, addr: SocketAddr) {
        let mut b = NodeAddrBuilder::new(node);
        match addr.ip() {
            std::net::IpAddr::V4(ip) => b.add_protocol(Protocol::Ip4(ip)),
            std::net::IpAddr::V6(ip) => b.add_protocol(Protocol::Ip6(ip)),
        }
        b.add_protocol(Protocol::Udp(addr.port()));
        self.control(
            now,
            FeaturesControl::Neighbours(neighbours::Control::ConnectTo(b.addr(), false)),
        );
    }

    /// Whether a record speaks for a live node's current session.
    fn is_live(&self, record: &PeerRecord) -> bool {
        self.presence
            .member(record.node)
            .is_some_and(|m| m.alive && m.info.session == record.session)
    }

    fn drain_worker(&mut self, now: Instant) {
        let now_ms = self.now_ms(now);
        while let Some(out) = self.worker.pop_output2(now_ms) {
            match out {
                SdnWorkerOutput::Net(NetOutput::UdpPacket(pair, buf)) => {
                    let mut frame = Vec::new();
                    self.sealer.seal(Kind::Sdn, &buf, &mut frame);
                    self.transmit(pair.remote, frame);
                }
                SdnWorkerOutput::Net(NetOutput::UdpPackets(pairs, buf)) => {
                    let mut frame = Vec::new();
                    self.sealer.seal(Kind::Sdn, &buf, &mut frame);
                    for pair in pairs {
                        self.transmit(pair.remote, frame.clone());
                    }
                }
                SdnWorkerOutput::Bus(event) => {
                    self.worker.on_event(now_ms, SdnWorkerInput::Bus(event));
                }
                SdnWorkerOutput::Ext(ext) | SdnWorkerOutput::ExtWorker(ext) => {
                    self.on_ext(now, ext)
                }
                SdnWorkerOutput::Continue | SdnWorkerOutput::OnResourceEmpty => {}
            }
        }
    }

    fn on_ext(&mut self, now: Instant, ext: SdnExtOut<(), ()>) {
        let SdnExtOut::FeaturesEvent((), event) = ext else {
            return;
        };
        match event {
            FeaturesEvent::PubSub(pubsub::Event(channel, event)) => {
                let channel = ChannelId(channel.0);
                match event {
                    ChannelEvent::SourceData(_, data) => {
                        let Some(state) = self.channels.get_mut(&channel) else {
                            return;
                        };
                        if !state.subscribed {
                            return;
                        }
                        state.packets_in += 1;
                        self.stats.media_in += 1;
                        self.event(ClusterEvent::Media { channel, data });
                    }
                    ChannelEvent::RouteChanged(node) => {
                        if let Some(state) = self.channels.get_mut(&channel) {
                            state.source = Some(node);
                        }
                    }
                    ChannelEvent::FeedbackData(fb) => {
                        let publishing = self.channels.get(&channel).is_some_and(|c| c.publishing);
                        let layers = KEYFRAME_FEEDBACK..=KEYFRAME_FEEDBACK + KEYFRAME_LAYERS;
                        if layers.contains(&fb.kind) && publishing {
                            let layer = fb.kind.checked_sub(KEYFRAME_FEEDBACK + 1);
                            self.event(ClusterEvent::Keyframe(channel, layer));
                        }
                    }
                }
            }
            FeaturesEvent::DhtKv(dht_kv::Event::MapEvent(Map(ROOMS_MAP), event)) => {
                self.on_rooms_event(now, event)
            }
            FeaturesEvent::DhtKv(dht_kv::Event::MapEvent(Map(REGISTRATIONS_MAP), event)) => {
                self.on_registrations_event(event)
            }
            FeaturesEvent::Neighbours(neighbours::Event::Connected(node, conn)) => {
                let conns = self.connected.entry(node).or_default();
                if !conns.contains(&conn) {
                    conns.push(conn);
                }
            }
            FeaturesEvent::Neighbours(neighbours::Event::Disconnected(node, conn)) => {
                if let Some(conns) = self.connected.get_mut(&node) {
                    conns.retain(|c| *c != conn);
                }
            }
            _ => {}
        }
    }

    fn on_registrations_event(&mut self, event: MapEvent) {
        match event {
            MapEvent::OnSet(Key(key), node, data) => {
                if node == self.config.node_id {
                    return;
                }
                let Some(record) = RegistrationRecord::decode(&data) else {
                    return;
                };
                // Only the node that holds a binding may speak for it.
                if record.node != node || record.key() != key {
                    return;
                }
                self.registrations.insert(key, record.clone());
                self.event(ClusterEvent::RegistrationUp(record));
            }
            MapEvent::OnDel(Key(key), _) => {
                if let Some(record) = self.registrations.remove(&key) {
                    self.event(ClusterEvent::RegistrationDown(record));
                }
            }
            MapEvent::OnRelaySelected(_) => {}
        }
    }

    fn on_rooms_event(&mut self, now: Instant, event: MapEvent) {
        match event {
            MapEvent::OnSet(Key(key), node, data) => {
                if node == self.config.node_id {
                    return;
                }
                let Some(record) = PeerRecord::decode(&data) else {
                    return;
                };
                // Only the node that holds a peer may speak for it.
                if record.node != node || record.key() != key {
                    return;
                }
                // A record of a node not heard from yet is kept and
                // announced when the node comes up. A refresh alone
                // changes nothing.
                self.heard.insert(key, now);
                let live = self.is_live(&record);
                let same = self.records.get(&key).is_some_and(|r| r.same_as(&record));
                self.records.insert(key, record.clone());
                if live && !same {
                    self.event(ClusterEvent::PeerUp(record));
                }
            }
            MapEvent::OnDel(Key(key), _) => {
                self.heard.remove(&key);
                if let Some(record) = self.records.remove(&key) {
                    if self.is_live(&record) {
                        self.event(ClusterEvent::PeerDown(record));
                    }
                }
            }
            MapEvent::OnRelaySelected(_) => {}
        }
    }
}
