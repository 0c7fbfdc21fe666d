//! The control plane's view of connections and rooms.
//!
//! A connection is pending (its endpoint held here) until a shard receives
//! its first STUN request and claims it; from then on only its shard is
//! known. Rooms, peers, tracks and subscriptions are in `rooms.rs`, the SDK's
//! requests in `rpc.rs`; this file keeps the connections, their places and
//! the commands to shards.
//!
//! Lifecycle commands to shards are never lost: a full command queue puts
//! them in the shard's outbox, retried on every send and on the control
//! thread's tick ([`Directory::tick`]), in order. A shard acknowledges each
//! adoption; a placed connection that no shard acknowledges within
//! [`ADOPT_DEADLINE`] is closed.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corecast_cluster::NodeLoad;
use corecast_media::{
    ChannelId, CloseReason, CodecInfo, ConnId, Endpoint, Slot, SlotId, TransportKind,
};

use super::rooms::{Room, Sub};
use crate::messages::{ClusterCommand, ControlEvent, ShardCommand};
use crate::metrics::{inc, ShardMetrics};

/// How long a shard may take to acknowledge an adoption before the
/// connection is closed.
pub const ADOPT_DEADLINE: Duration = Duration::from_secs(5);
/// Commands waiting for room in one shard's queue, at most. Reached only if
/// a shard stops draining its queue; beyond it commands are dropped and
/// counted (and reconciliation closes the connections they concerned).
pub const OUTBOX_CAP: usize = 65_536;
/// Recently closed connections kept for `/api/closed`.
pub const RECENTLY_CLOSED: usize = 128;

pub(super) enum Place {
    Pending {
        endpoint: Box<dyn Endpoint>,
        since: Instant,
    },
    /// Placed on `shard` at `since`; `acked` once the shard said so.
    Shard {
        shard: usize,
        since: Instant,
        acked: bool,
    },
}

/// One connection of this node.
pub(super) struct Conn {
    pub(super) room: String,
    /// Its peer id in the room (a WHIP or WHEP connection's own id).
    pub(super) peer: String,
    pub(super) transport: TransportKind,
    pub(super) ufrag: String,
    pub(super) place: Place,
    /// The codecs its slots can play.
    pub(super) receivable: Vec<CodecInfo>,
    /// Shards (bit per shard) that forward an address of this connection.
    pub(super) routed: u64,
    pub(super) slots: Vec<Slot>,
    /// What each slot plays (indexed by slot id).
    pub(super) subs: Vec<Option<Sub>>,
    /// An SDK connection sent `join`.
    pub(super) joined: bool,
}

impl Conn {
    fn new(
        room: &str,
        peer: &str,
        transport: TransportKind,
        ufrag: String,
        place: Place,
        slots: Vec<Slot>,
    ) -> Conn {
        Conn {
            room: room.to_string(),
            peer: peer.to_string(),
            transport,
            ufrag,
            place,
            receivable: slots
                .iter()
                .flat_map(|s| s.codecs.iter().copied())
                .collect(),
            routed: 0,
            subs: vec![None; slots.len()],
            slots,
            joined: false,
        }
    }

    pub(super) fn shard(&self) -> Option<usize> {
        match self.place {
            Place::Shard { shard, .. } => Some(shard),
            Place::Pending { .. } => None,
        }
    }
}

/// Counters of the control plane, exported on `/metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DirectoryStats {
    /// Commands put in an outbox because a shard's queue was full.
    pub commands_queued: u64,
    /// Commands delivered from an outbox on a retry.
    pub commands_retried: u64,
    /// Commands dropped because an outbox was full.
    pub outbox_drops: u64,
    /// STUN datagrams for another shard's endpoint dropped on a full queue.
    pub ingress_drops: u64,
    /// Placed connections closed because no shard acknowledged the adoption.
    pub adopt_unacknowledged: u64,
    /// Viewers closed because the publisher switched to a codec they cannot receive.
    pub viewers_closed_codec_changed: u64,
    /// Connections refused because too many were pending.
    pub refused_pending: u64,
    /// Connections refused because the node was at capacity.
    pub refused_capacity: u64,
}

/// Why a new connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `--max-pending` endpoints wait for their first STUN request.
    Pending,
    /// Connected and pending endpoints fill every shard's capacity.
    Capacity,
}

/// A connection that ended, as `/api/closed` shows it.
#[derive(Debug, Clone)]
pub struct ClosedConn {
    pub conn: ConnId,
    pub room: String,
    pub transport: TransportKind,
    pub reason: String,
    pub at: Instant,
}

/// A room with a WHIP publisher or WHEP viewers, as `/api/streams` shows it.
#[derive(Debug, serde::Serialize)]
pub struct StreamInfo {
    pub stream: String,
    pub live: bool,
    /// The node that holds the publisher, when it is another node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_node: Option<u32>,
    pub viewers: usize,
    pub codecs: Vec<String>,
}

/// Where a PATCH goes.
pub enum SignalTarget<'a> {
    Pending(&'a mut dyn Endpoint),
    /// The shard that holds the connection: send it a command with
    /// [`Directory::command`].
    Shard(usize),
}

/// Connections, rooms and the shards' command channels.
pub struct Directory {
    /// This node's id in connection ids.
    node: u16,
    shards: Vec<flume::Sender<ShardCommand>>,
    /// Per shard: commands its queue had no room for, oldest first.
    outbox: Vec<VecDeque<ShardCommand>>,
    pub(super) stats: DirectoryStats,
    closed: VecDeque<ClosedConn>,
    /// Placements waiting for the shard's acknowledgement, oldest first
    /// (entries of connections acknowledged or gone meanwhile are skipped).
    awaiting_ack: VecDeque<(Instant, ConnId)>,
    /// Connections in `Place::Pending`.
    pending: usize,
    pub(super) conns: HashMap<ConnId, Conn>,
    by_ufrag: HashMap<String, ConnId>,
    pub(super) rooms: HashMap<String, Room>,
    /// Local subscriptions per channel: which slots of which connections play it.
    pub(super) listeners: HashMap<ChannelId, Vec<(ConnId, SlotId)>>,
    /// Channels of tracks of this node's peers.
    pub(super) local_channels: HashSet<ChannelId>,
    /// Channels this node subscribes to in the cluster.
    pub(super) cluster_subscribed: HashSet<ChannelId>,
    /// SDK requests refused, by error code.
    pub(super) rpc_errors: BTreeMap<&'static str, u64>,
    /// In-band publish requests (RTMP) refused, by reason.
    publish_refused: BTreeMap<&'static str, u64>,
    /// Whether this node is part of a cluster (shard 0 drives it).
    pub(super) clustered: bool,
    /// Each room's active speakers (`speakers.rs`).
    pub(super) speakers: HashMap<String, super::speakers::RoomSpeakers>,
    /// The room, peer and track of audio channels with levels.
    pub(super) speaker_index: HashMap<ChannelId, (String, String, String)>,
    /// SDK connections whose audio slots follow their room's speakers.
    pub(super) followers: HashSet<ConnId>,
    /// Speakers a follower hears at once (`--top-audio`).
    pub(super) top_audio: usize,
    /// Times a room's set of active speakers changed.
    pub(super) speaker_changes: u64,
}

impl Directory {
    pub fn new(shards: Vec<flume::Sender<ShardCommand>>, clustered: bool, node: u16) -> Directory {
        Directory {
            node,
            outbox: shards.iter().map(|_| VecDeque::new()).collect(),
            shards,
            stats: DirectoryStats::default(),
            closed: VecDeque::new(),
            awaiting_ack: VecDeque::new(),
            pending: 0,
            conns: HashMap::new(),
            by_ufrag: HashMap::new(),
            rooms: HashMap::new(),
            listeners: HashMap::new(),
            local_channels: HashSet::new(),
            cluster_subscribed: HashSet::new(),
            rpc_errors: BTreeMap::new(),
            publish_refused: BTreeMap::new(),
            clustered,
            speakers: HashMap::new(),
            speaker_index: HashMap::new(),
            followers: HashSet::new(),
            top_audio: super::speakers::DEFAULT_TOP_AUDIO,
            speaker_changes: 0,
        }
    }

    /// A fresh connection id of this node.
    pub fn next_conn_id(&self) -> ConnId {
        loop {
            let id = ConnId::new(self.node, rand::random());
            if !self.conns.contains_key(&id) {
                return id;
            }
        }
    }

    pub(super) fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Sends this node's load to the cluster.
    pub fn report_load(&mut self, load: NodeLoad) {
        self.cluster(ClusterCommand::SetLoad(load));
    }

    /// Rooms with a local peer or viewer, for the load report.
    pub fn local_streams(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .rooms
            .iter()
            .filter(|(_, r)| !r.followers.is_empty() || r.peers.values().any(|p| p.conn.is_some()))
            .map(|(n, _)| n.clone())
            .collect();
        out.sort();
        out
    }

    pub(super) fn cluster(&mut self, cmd: ClusterCommand) {
        if self.clustered {
            self.send(0, ShardCommand::Cluster(cmd));
        }
    }

    pub fn shutdown(&mut self) {
        self.shards.clear();
        self.outbox.clear();
        self.conns.clear();
        self.awaiting_ack.clear();
        self.pending = 0;
    }

    pub fn stats(&self) -> DirectoryStats {
        self.stats
    }

    /// Commands waiting in the outboxes, per shard.
    pub fn outbox_len(&self) -> Vec<usize> {
        self.outbox.iter().map(VecDeque::len).collect()
    }

    /// Whether a new connection may be answered: fewer than `max_pending`
    /// pending endpoints, and connected (`placed`, as the shards count them)
    /// plus pending endpoints below `capacity`. Counts refusals.
    pub fn admit(&mut self, placed: u64, capacity: u64, max_pending: usize) -> Result<(), Refusal> {
        let pending = self.pending();
        if pending >= max_pending {
            self.stats.refused_pending += 1;
            return Err(Refusal::Pending);
        }
        if placed + pending as u64 >= capacity {
            self.stats.refused_capacity += 1;
            return Err(Refusal::Capacity);
        }
        Ok(())
    }

    /// Connections that ended lately, newest first.
    pub fn recently_closed(&self) -> impl Iterator<Item = &ClosedConn> {
        self.closed.iter().rev()
    }

    pub fn pending(&self) -> usize {
        self.pending
    }

    /// A connection's room and transport.
    pub fn conn_room(&self, conn: ConnId) -> Option<(&str, TransportKind)> {
        self.conns
            .get(&conn)
            .map(|c| (c.room.as_str(), c.transport))
    }

    /// A connection's peer id in its room.
    pub fn conn_peer(&self, conn: ConnId) -> Option<&str> {
        self.conns.get(&conn).map(|c| c.peer.as_str())
    }

    pub(super) fn insert(
        &mut self,
        conn: ConnId,
        room: &str,
        peer: &str,
        endpoint: Box<dyn Endpoint>,
        now: Instant,
    ) {
        self.pending += 1;
        let ufrag = match endpoint.route_key() {
            Some(corecast_media::RouteKey::IceUfrag(u)) => u,
            _ => String::new(),
        };
        self.by_ufrag.insert(ufrag.clone(), conn);
        let slots = endpoint.slots();
        let transport = endpoint.transport();
        let place = Place::Pending {
            endpoint,
            since: now,
        };
        let c = Conn::new(room, peer, transport, ufrag, place, slots);
        self.conns.insert(conn, c);
    }

    /// A connection a shard accepted itself (RTMP, MoQ): placed there from
    /// the start, with its receive slots (none for a publisher).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn insert_placed(
        &mut self,
        conn: ConnId,
        room: &str,
        peer: &str,
        transport: TransportKind,
        shard: usize,
        slots: Vec<Slot>,
        now: Instant,
    ) {
        let place = Place::Shard {
            shard,
            since: now,
            acked: true,
        };
        let c = Conn::new(room, peer, transport, String::new(), place, slots);
        self.conns.insert(conn, c);
    }

    /// A connection the control thread places on a shard itself (a SIP
    /// call), with its slots; the shard acknowledges it like an adoption.
    pub(super) fn insert_call(
        &mut self,
        conn: ConnId,
        room: &str,
        peer: &str,
        slots: Vec<Slot>,
        shard: usize,
        now: Instant,
    ) {
        let place = Place::Shard {
            shard,
            since: now,
            acked: false,
        };
        let c = Conn::new(room, peer, TransportKind::Sip, String::new(), place, slots);
        self.conns.insert(conn, c);
        self.awaiting_ack.push_back((now, conn));
    }

    /// The shard with the fewest connections placed on it.
    pub(super) fn least_loaded_shard(&self) -> usize {
        let mut counts = vec![0usize; self.shards.len().max(1)];
        for c in self.conns.values() {
            if let Some(s) = c.shard() {
                if let Some(n) = counts.get_mut(s) {
                    *n += 1;
                }
            }
        }
        counts
            .iter()
            .enumerate()
            .min_by_key(|(_, n)| **n)
            .map_or(0, |(i, _)| i)
    }

    /// Counts a refused in-band publish request.
    pub(super) fn count_publish_refused(&mut self, transport: TransportKind, reason: &'static str) {
        // `corecast_rtmp_refused_total`; a MoQ connection counts its own
        // refusals (`corecast_moq_refused_total`).
        if transport == TransportKind::Rtmp {
            *self.publish_refused.entry(reason).or_default() += 1;
        }
    }

    /// Ends a connection (DELETE). Returns whether it existed.
    pub fn remove(&mut self, now: Instant, conn: ConnId) -> bool {
        self.end(now, conn, "deleted")
    }

    /// Ends a connection here and on its shard, and remembers why.
    pub(super) fn end(&mut self, now: Instant, conn: ConnId, reason: &str) -> bool {
        let Some(shard) = self.conns.get(&conn).map(Conn::shard) else {
            return false;
        };
        if let Some(shard) = shard {
            self.send(shard, ShardCommand::Close { conn });
        }
        self.ended(now, conn, reason);
        true
    }

    /// What every end of a connection does: routes, its room, the record of
    /// recently closed connections.
    fn ended(&mut self, now: Instant, conn: ConnId, reason: &str) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let (room, peer, transport, routed) =
            (c.room.clone(), c.peer.clone(), c.transport, c.routed);
        let left = match reason {
            "left" => "left",
            "replaced" => "replaced",
            "consent_expired" => "timeout",
            _ => "closed",
        };
        self.conn_gone(now, conn, &room, &peer, left);
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        self.by_ufrag.remove(&c.ufrag);
        if matches!(c.place, Place::Pending { .. }) {
            self.pending = self.pending.saturating_sub(1);
        }
        for shard in 0..self.shards.len() {
            if routed & (1 << shard) != 0 {
                self.send(shard, ShardCommand::Unroute { conn });
            }
        }
        if self.closed.len() >= RECENTLY_CLOSED {
            self.closed.pop_front();
        }
        self.closed.push_back(ClosedConn {
            conn,
            room,
            transport,
            reason: reason.to_string(),
            at: now,
        });
    }

    /// Sends a command to a shard the way lifecycle commands go (in order,
    /// never dropped).
    pub fn command(&mut self, shard: usize, cmd: ShardCommand) {
        self.send(shard, cmd);
    }

    /// Sends a lifecycle command; never drops it: a full queue (or older
    /// commands still waiting) puts it in the shard's outbox, in order.
    pub(super) fn send(&mut self, shard: usize, cmd: ShardCommand) {
        let Some(tx) = self.shards.get(shard) else {
            return;
        };
        if self.outbox[shard].is_empty() {
            match tx.try_send(cmd) {
                Ok(()) => {}
                Err(flume::TrySendError::Full(cmd)) => self.queue(shard, cmd),
                // The shard is gone: shutdown.
                Err(flume::TrySendError::Disconnected(_)) => {}
            }
        } else {
            self.queue(shard, cmd);
            self.flush(shard);
        }
    }

    fn queue(&mut self, shard: usize, cmd: ShardCommand) {
        if self.outbox[shard].len() >= OUTBOX_CAP {
            self.stats.outbox_drops += 1;
            tracing::error!("shard {shard}: command outbox full, command dropped");
            return;
        }
        self.stats.commands_queued += 1;
        self.outbox[shard].push_back(cmd);
    }

    /// Delivers what the shard's queue has room for, oldest first.
    fn flush(&mut self, shard: usize) {
        let Some(tx) = self.shards.get(shard) else {
            return;
        };
        while let Some(cmd) = self.outbox[shard].pop_front() {
            match tx.try_send(cmd) {
                Ok(()) => self.stats.commands_retried += 1,
                Err(flume::TrySendError::Full(cmd)) => {
                    self.outbox[shard].push_front(cmd);
                    return;
                }
                Err(flume::TrySendError::Disconnected(_)) => {
                    self.outbox[shard].clear();
                    return;
                }
            }
        }
    }

    /// The control thread's periodic work: retries every outbox, and closes
    /// placed connections whose adoption no shard acknowledged in time.
    pub fn tick(&mut self, now: Instant) {
        for shard in 0..self.shards.len() {
            self.flush(shard);
        }
        self.tick_speakers(now);
        let mut late = Vec::new();
        while let Some(&(since, conn)) = self.awaiting_ack.front() {
            if now < since + ADOPT_DEADLINE {
                break;
            }
            self.awaiting_ack.pop_front();
            if let Some(Conn {
                place:
                    Place::Shard {
                        shard,
                        since: placed,
                        acked: false,
                    },
                ..
            }) = self.conns.get(&conn)
            {
                if *placed == since {
                    late.push((conn, *shard));
                }
            }
        }
        for (conn, shard) in late {
            tracing::warn!(
                "connection {conn}: shard {shard} did not acknowledge its adoption within {ADOPT_DEADLINE:?}: closed"
            );
            self.stats.adopt_unacknowledged += 1;
            self.end(now, conn, "not_adopted");
        }
    }

    /// A STUN datagram for a placed endpoint that reached another shard.
    /// Droppable (clients retransmit), so it never waits in an outbox.
    fn send_ingress(&mut self, shard: usize, cmd: ShardCommand) {
        let Some(tx) = self.shards.get(shard) else {
            return;
        };
        if tx.try_send(cmd).is_err() {
            self.stats.ingress_drops += 1;
        }
    }

    pub fn signal_target(&mut self, conn: ConnId) -> Option<SignalTarget<'_>> {
        match &mut self.conns.get_mut(&conn)?.place {
            Place::Pending { endpoint, .. } => Some(SignalTarget::Pending(endpoint.as_mut())),
            Place::Shard { shard, .. } => Some(SignalTarget::Shard(*shard)),
        }
    }

    /// Records a new server ufrag after an ICE restart.
    pub fn set_ufrag(&mut self, conn: ConnId, ufrag: String) {
        if let Some(c) = self.conns.get_mut(&conn) {
            self.by_ufrag.remove(&c.ufrag);
            self.by_ufrag.insert(ufrag.clone(), conn);
            c.ufrag = ufrag;
        }
    }

    pub fn on_event(&mut self, now: Instant, event: ControlEvent, metrics: &[Arc<ShardMetrics>]) {
        match event {
            ControlEvent::Claim {
                shard,
                ufrag,
                datagram,
            } => {
                let Some(&conn) = self.by_ufrag.get(&ufrag) else {
                    if let Some(m) = metrics.get(shard) {
                        inc(&m.bad_packets_total);
                    }
                    return;
                };
                let Some(c) = self.conns.get_mut(&conn) else {
                    return;
                };
                let placed = Place::Shard {
                    shard,
                    since: now,
                    acked: false,
                };
                match std::mem::replace(&mut c.place, placed) {
                    Place::Pending { endpoint, .. } => {
                        self.pending = self.pending.saturating_sub(1);
                        self.awaiting_ack.push_back((now, conn));
                        let subscriptions = c
                            .subs
                            .iter()
                            .enumerate()
                            .filter_map(|(i, s)| s.as_ref().map(|s| (SlotId(i as u16), s.channel)))
                            .collect();
                        self.send(
                            shard,
                            ShardCommand::Adopt {
                                conn,
                                endpoint,
                                first: datagram,
                                subscriptions,
                            },
                        );
                        self.conn_placed(conn);
                    }
                    old @ Place::Shard { shard: owner, .. } => {
                        c.place = old;
                        if owner != shard && shard < self.shards.len() {
                            // Another address of this client hashed to
                            // another shard: this datagram goes to the owner,
                            // and that shard forwards the address's next ones
                            // itself, over the ring.
                            let new_route = c.routed & (1 << shard) == 0;
                            c.routed |= 1 << shard;
                            let addr = datagram.source;
                            self.send_ingress(owner, ShardCommand::Ingress { conn, datagram });
                            if new_route {
                                tracing::debug!(
                                    "connection {conn}: {addr} routed from shard {shard} to {owner}"
                                );
                            }
                            self.send(shard, ShardCommand::Route { conn, addr, owner });
                        }
                    }
                }
            }
            ControlEvent::Adopted { conn, shard } => {
                if let Some(Conn {
                    place:
                        Place::Shard {
                            shard: owner,
                            acked,
                            ..
                        },
                    ..
                }) = self.conns.get_mut(&conn)
                {
                    if *owner == shard {
                        *acked = true;
                    }
                }
            }
            ControlEvent::Closed { conn, reason } => {
                tracing::info!("connection {conn} closed: {reason:?}");
                let reason = match reason {
                    CloseReason::Closed => "closed",
                    CloseReason::ConsentExpired => "consent_expired",
                    CloseReason::PeerClosed => "peer_closed",
                };
                self.ended(now, conn, reason);
            }
            ControlEvent::ActiveCodec {
                conn,
                channel,
                codec,
            } => self.on_active_codec(now, conn, channel, codec),
            ControlEvent::TrackLayers {
                conn,
                channel,
                layers,
            } => self.on_track_layers(conn, channel, layers),
            ControlEvent::RemotePeer { up, record } => self.on_remote_peer(now, up, record),
            // The SIP service's (`control::handle_events` passes it there).
            ControlEvent::RemoteRegistration { .. } => {}
            ControlEvent::ClusterView(_) => {}
            ControlEvent::UfragChanged { conn, ufrag } => self.set_ufrag(conn, ufrag),
            ControlEvent::Rpc { conn, text } => self.on_rpc(now, conn, &text),
            ControlEvent::SlotLive { conn, slot } => self.on_slot_live(conn, slot),
            ControlEvent::AudioLevels(levels) => self.on_audio_levels(now, levels),
            ControlEvent::Dtmf { conn, digit } => self.on_dtmf(conn, digit),
            // Authorized by the control thread, which holds the credentials
            // (see `control::stream_publish`).
            ControlEvent::PublishRequest { conn, shard, .. }
            | ControlEvent::WatchRequest { conn, shard, .. } => self.send(
                shard,
                ShardCommand::Admit {
                    conn,
                    answer: Err(corecast_media::Refusal::Unavailable(
                        "not authorized".to_string(),
                    )),
                },
            ),
        }
    }

    pub fn expire_pending(&mut self, now: Instant, timeout: Duration) {
        let expired: Vec<ConnId> = self
            .conns
            .iter()
            .filter(
                |(_, c)| matches!(c.place, Place::Pending { since, .. } if now >= since + timeout),
            )
            .map(|(id, _)| *id)
            .collect();
        for conn in expired {
            tracing::info!("connection {conn} never connected: removed");
            self.end(now, conn, "never_connected");
        }
    }

    /// Appends the control plane's counters in Prometheus text; `shards`
    /// for the RPC refusals the shards count themselves.
    pub fn render_metrics(&self, out: &mut String, shards: &[Arc<ShardMetrics>]) {
        let st = self.stats;
        for (name, help, value) in [
            (
                "corecast_directory_commands_queued_total",
                "Lifecycle commands to shards queued in the control thread's outbox because a shard's queue was full (retried, not lost).",
                st.commands_queued,
            ),
            (
                "corecast_directory_command_retries_total",
                "Lifecycle commands delivered from the outbox on a retry.",
                st.commands_retried,
            ),
            (
                "corecast_directory_outbox_drops_total",
                "Lifecycle commands dropped because a shard's outbox was full (never expected).",
                st.outbox_drops,
            ),
            (
                "corecast_directory_ingress_drops_total",
                "STUN datagrams for another shard's endpoint dropped because that shard's queue was full (clients retransmit).",
                st.ingress_drops,
            ),
            (
                "corecast_adopt_unacknowledged_total",
                "Placed connections closed because their shard did not acknowledge the adoption in time.",
                st.adopt_unacknowledged,
            ),
            (
                "corecast_active_speaker_changes_total",
                "Times a room's set of active speakers (the loudest, up to --top-audio) changed.",
                self.speaker_changes,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        }
        let name = "corecast_directory_outbox";
        let _ = writeln!(out, "# HELP {name} Lifecycle commands waiting in the control thread's outbox, per shard.\n# TYPE {name} gauge");
        for (i, q) in self.outbox.iter().enumerate() {
            let _ = writeln!(out, "{name}{{shard=\"{i}\"}} {}", q.len());
        }
        let name = "corecast_viewers_closed_total";
        let _ = writeln!(
            out,
            "# HELP {name} Viewers the node closed, by reason.\n# TYPE {name} counter"
        );
        let _ = writeln!(
            out,
            "{name}{{reason=\"codec_changed\"}} {}",
            st.viewers_closed_codec_changed
        );
        let name = "corecast_rooms_with_speakers";
        let speaking = self.speakers.values().filter(|s| s.speaking()).count();
        let _ = writeln!(
            out,
            "# HELP {name} Rooms with at least one active speaker.\n# TYPE {name} gauge\n{name} {speaking}"
        );
        let name = "corecast_sessions_refused_total";
        let _ = writeln!(
            out,
            "# HELP {name} WHIP/WHEP/SDK connections refused with 503, by reason.\n# TYPE {name} counter"
        );
        let _ = writeln!(out, "{name}{{reason=\"pending\"}} {}", st.refused_pending);
        let _ = writeln!(out, "{name}{{reason=\"capacity\"}} {}", st.refused_capacity);
        let name = "corecast_rpc_errors_total";
        let _ = writeln!(
            out,
            "# HELP {name} SDK requests refused, by error code.\n# TYPE {name} counter"
        );
        let sum = |f: fn(&ShardMetrics) -> &std::sync::atomic::AtomicU64| -> u64 {
            shards.iter().map(|m| f(m).load(Ordering::Relaxed)).sum()
        };
        let mut codes = self.rpc_errors.clone();
        *codes.entry("too_large").or_default() += sum(|m| &m.rpc_too_large_total);
        *codes.entry("rate_limited").or_default() += sum(|m| &m.rpc_rate_limited_total);
        *codes.entry("bad_request").or_default() += sum(|m| &m.rpc_not_text_total);
        for (code, n) in codes {
            let _ = writeln!(out, "{name}{{code=\"{code}\"}} {n}");
        }
        let name = "corecast_rtmp_refused_total";
        let _ = writeln!(
            out,
            "# HELP {name} RTMP connections refused or dropped, by reason.\n# TYPE {name} counter"
        );
        let mut reasons = self.publish_refused.clone();
        for (reason, n) in [
            ("bad_name", 0),
            ("denied", 0),
            ("unavailable", 0),
            ("play", sum(|m| &m.rtmp_play_refused_total)),
            ("codec", sum(|m| &m.rtmp_codec_refused_total)),
            ("protocol", sum(|m| &m.rtmp_protocol_errors_total)),
            ("timeout", sum(|m| &m.rtmp_timeouts_total)),
            ("capacity", sum(|m| &m.rtmp_rejected_total)),
            ("not_reading", sum(|m| &m.rtmp_write_overflows_total)),
        ] {
            *reasons.entry(reason).or_default() += n;
        }
        for (reason, n) in reasons {
            let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {n}");
        }
        let (mut peers, mut local) = (0, 0);
        for r in self.rooms.values() {
            peers += r.peers.len();
            local += r.peers.values().filter(|p| p.conn.is_some()).count();
        }
        for (name, help, value) in [
            (
                "corecast_rooms",
                "Rooms this node knows (with a peer or viewer here, or a peer elsewhere).",
                self.rooms.len(),
            ),
            (
                "corecast_room_peers",
                "Peers of those rooms, on any node.",
                peers,
            ),
            (
                "corecast_room_local_peers",
                "Peers of those rooms on this node.",
                local,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
    }

    /// Rooms with a WHIP publisher or WHEP viewers (the stream view).
    pub fn streams(&self) -> Vec<StreamInfo> {
        let mut out: Vec<StreamInfo> = self
            .rooms
            .iter()
            .filter_map(|(name, r)| {
                let whip = r
                    .peers
                    .values()
                    .filter(|p| super::rooms::stream_publisher(p.transport))
                    .min_by_key(|p| p.conn.is_none());
                if whip.is_none() && r.followers.is_empty() {
                    return None;
                }
                Some(StreamInfo {
                    stream: name.clone(),
                    live: whip.is_some(),
                    remote_node: whip.filter(|p| p.conn.is_none()).map(|p| p.node),
                    viewers: r.followers.len(),
                    codecs: whip
                        .map(|p| {
                            p.tracks
                                .iter()
                                .filter_map(|t| t.active)
                                .map(|c| c.to_string())
                                .collect()
                        })
                        .unwrap_or_default(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.stream.cmp(&b.stream));
        out
    }

    /// Every room with its peers, as `/api/rooms` shows it.
    pub fn rooms_json(&self) -> serde_json::Value {
        let mut names: Vec<&String> = self.rooms.keys().collect();
        names.sort();
        let rooms: Vec<serde_json::Value> = names
            .into_iter()
            .map(|name| {
                let r = &self.rooms[name];
                let peers: Vec<serde_json::Value> = r
                    .peers
                    .iter()
                    .map(|(peer, p)| {
                        let mut v = super::rooms::peer_json(peer, p);
                        v["transport"] = p.transport.name().into();
                        v["joined"] = p.joined.into();
                        match p.conn {
                            Some(c) => v["conn"] = c.to_string().into(),
                            None => v["node"] = p.node.into(),
                        }
                        v
                    })
                    .collect();
                serde_json::json!({
                    "room": name,
                    "peers": peers,
                    "whep_viewers": r.followers.len(),
                    "active_speakers": self.speakers_json(name),
                })
            })
            .collect();
        serde_json::json!({ "rooms": rooms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::Datagram;
    use corecast_media::Codec;
    use corecast_media::MediaKind;
    use corecast_webrtc::{Client, EndpointConfig, PublisherInfo};

    #[test]
    fn required_codecs_are_chosen_per_kind() {
        let f = Fixture::new();
        let mut d = Directory::new(Vec::new(), false, 1);
        let opus = CodecInfo::new(Codec::Opus, 48_000);
        let vp9 = CodecInfo::new(Codec::Vp9, 90_000);
        assert!(d.required_codecs("s").is_empty());
        let (p, _) = f.publisher(&mut d, "s", Codec::Vp9);
        assert_eq!(d.required_codecs("s"), vec![opus, vp9]);
        // Audio became active first: video is still the negotiated set.
        active(&mut d, f.t0, p, "s", MediaKind::Audio);
        assert_eq!(d.required_codecs("s"), vec![opus, vp9]);
        active(&mut d, f.t0, p, "s", MediaKind::Video);
        assert_eq!(d.required_codecs("s"), vec![opus, vp9]);
    }

    /// The WHIP publisher `conn` of `room` starts sending its first
    /// negotiated codec of `kind`.
    fn active(d: &mut Directory, now: Instant, conn: ConnId, room: &str, kind: MediaKind) {
        let t = d.rooms[room].peers[&conn.to_string()]
            .tracks
            .iter()
            .find(|t| t.kind == kind)
            .unwrap();
        let (channel, codec) = (t.channel, t.negotiated[0]);
        d.on_event(
            now,
            ControlEvent::ActiveCodec {
                conn,
                channel,
                codec,
            },
            &[],
        );
    }

    /// Endpoints made from the test client's offers; no sockets.
    struct Fixture {
        config: EndpointConfig,
        t0: Instant,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                config: EndpointConfig::new(vec!["127.0.0.1:9000".parse().unwrap()]),
                t0: Instant::now(),
            }
        }

        fn publisher(&self, d: &mut Directory, stream: &str, video: Codec) -> (ConnId, String) {
            let local = "127.0.0.1:5000".parse().unwrap();
            let (_, offer) =
                Client::with_video_codec(&self.config, self.t0, local, true, video).unwrap();
            let session = d.next_conn_id();
            let who = PublisherInfo {
                room: stream.to_string(),
                peer: session.to_string(),
            };
            let (ep, _) =
                corecast_webrtc::Endpoint::publisher(&self.config, self.t0, &offer, who).unwrap();
            let ufrag = ep.local_ufrag().to_string();
            d.add_publisher(stream, session, Box::new(ep), self.t0, 0);
            (session, ufrag)
        }

        fn viewer(&self, d: &mut Directory, stream: &str, video: Codec) -> (ConnId, String) {
            let local = "127.0.0.1:5001".parse().unwrap();
            let (_, offer) =
                Client::with_video_codec(&self.config, self.t0, local, false, video).unwrap();
            let required = d.required_codecs(stream);
            let (ep, _) =
                corecast_webrtc::Endpoint::viewer(&self.config, self.t0, &offer, &required)
                    .unwrap();
            let ufrag = ep.local_ufrag().to_string();
            (d.add_viewer(stream, Box::new(ep), self.t0), ufrag)
        }
    }

    fn claim(d: &mut Directory, now: Instant, shard: usize, ufrag: &str) {
        let datagram = Datagram {
            at: now,
            source: "127.0.0.1:5000".parse().unwrap(),
            destination: "127.0.0.1:9000".parse().unwrap(),
            contents: Vec::new(),
        };
        d.on_event(
            now,
            ControlEvent::Claim {
                shard,
                ufrag: ufrag.to_string(),
                datagram,
            },
            &[],
        );
    }

    /// What a shard received, in order, as short strings.
    fn describe(cmd: &ShardCommand) -> String {
        match cmd {
            ShardCommand::Adopt { conn, .. } => format!("adopt {conn}"),
            ShardCommand::Place { conn, .. } => format!("place {conn}"),
            ShardCommand::Close { conn } => format!("close {conn}"),
            ShardCommand::Subscribe { conn, channel, .. } => {
                format!("subscribe {conn} {}", channel.is_some())
            }
            ShardCommand::Fanout { channel, shards } => format!("fanout {} {shards}", channel.0),
            ShardCommand::Export { .. } => "export".into(),
            ShardCommand::Ingress { .. } => "ingress".into(),
            ShardCommand::Route { conn, .. } => format!("route {conn}"),
            ShardCommand::Unroute { conn } => format!("unroute {conn}"),
            ShardCommand::Cluster(_) => "cluster".into(),
            ShardCommand::Signal { .. } => "signal".into(),
            ShardCommand::Rpc { conn, .. } => format!("rpc {conn}"),
            ShardCommand::Admit { conn, .. } => format!("admit {conn}"),
            ShardCommand::Prefer { conn, .. } => format!("prefer {conn}"),
        }
    }

    #[test]
    fn lifecycle_commands_survive_full_shard_queues() {
        let f = Fixture::new();
        // Queues of one command: almost everything goes through the outboxes.
        let (tx0, rx0) = flume::bounded(1);
        let (tx1, rx1) = flume::bounded(1);
        let rx = [rx0, rx1];
        let mut d = Directory::new(vec![tx0, tx1], false, 1);
        let mut now = f.t0;
        let (publisher, pu) = f.publisher(&mut d, "s", Codec::Vp8);
        claim(&mut d, now, 0, &pu);
        let mut viewers = Vec::new();
        for i in 0..6 {
            let (v, u) = f.viewer(&mut d, "s", Codec::Vp8);
            claim(&mut d, now, i % 2, &u);
            viewers.push(v);
        }
        // Viewer 5 (on shard 1) leaves; a second address of viewer 0 (shard
        // 0) reaches shard 1.
        assert!(d.remove(now, viewers[5]));
        let u0 = d.conns[&viewers[0]].ufrag.clone();
        claim(&mut d, now, 1, &u0);
        assert_eq!(d.pending(), 0, "every session is placed");

        // The shards drain one command at a time; the control thread ticks
        // every 100 ms in between.
        let mut got: [Vec<String>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..10_000 {
            let mut any = false;
            for (i, r) in rx.iter().enumerate() {
                if let Ok(cmd) = r.try_recv() {
                    got[i].push(describe(&cmd));
                    any = true;
                }
            }
            now += Duration::from_millis(100);
            // Every adoption is acknowledged at once (no reconciliation here).
            for (i, list) in got.iter().enumerate() {
                for line in list.iter().filter(|l| l.starts_with("adopt ")) {
                    let session = ConnId::parse(&line[6..]).unwrap();
                    d.on_event(
                        now,
                        ControlEvent::Adopted {
                            conn: session,
                            shard: i,
                        },
                        &[],
                    );
                }
            }
            d.tick(now);
            if !any && d.outbox_len().iter().all(|n| *n == 0) {
                break;
            }
        }
        assert_eq!(d.outbox_len(), vec![0, 0]);
        let count = |i: usize, what: &str| got[i].iter().filter(|l| *l == what).count();
        assert_eq!(count(0, &format!("adopt {publisher}")), 1);
        for (n, v) in viewers.iter().enumerate() {
            assert_eq!(count(n % 2, &format!("adopt {v}")), 1, "viewer {n}");
        }
        let stats = d.stats();
        assert_eq!(stats.outbox_drops, 0);
        assert_eq!(stats.adopt_unacknowledged, 0);
        assert!(
            stats.commands_retried >= stats.commands_queued - 1,
            "{stats:?}"
        );
        assert!(stats.commands_queued > 10, "{stats:?}");
        // The close of viewer 5 comes after its adoption, on its shard.
        let pos = |i: usize, what: String| got[i].iter().position(|l| *l == what);
        assert!(pos(1, format!("close {}", viewers[5])) > pos(1, format!("adopt {}", viewers[5])));
        // Shard 1 learned viewer 0's second address; the others stay as they were.
        assert_eq!(count(1, &format!("route {}", viewers[0])), 1);
        // The last fan-out mask each shard heard is the final one: viewers
        // on both shards.
        for list in &got {
            let last = list
                .iter()
                .rev()
                .find(|l| l.starts_with("fanout "))
                .unwrap();
            assert!(last.ends_with(" 3"), "{last}");
        }
        // Viewer 0 ends: shard 0 closes it, shard 1 forgets its route.
        d.on_event(
            now,
            ControlEvent::Closed {
                conn: viewers[0],
                reason: CloseReason::PeerClosed,
            },
            &[],
        );
        let mut after: Vec<String> = Vec::new();
        for _ in 0..100 {
            after.extend(rx[1].try_iter().map(|c| describe(&c)));
            d.tick(now);
        }
        assert!(
            after.contains(&format!("unroute {}", viewers[0])),
            "{after:?}"
        );
    }

    #[test]
    fn an_unacknowledged_adoption_is_closed() {
        let f = Fixture::new();
        let (tx, rx) = flume::bounded(64);
        let mut d = Directory::new(vec![tx], false, 1);
        let (publisher, pu) = f.publisher(&mut d, "s", Codec::Vp8);
        let (viewer, vu) = f.viewer(&mut d, "s", Codec::Vp8);
        let t0 = f.t0;
        claim(&mut d, t0, 0, &pu);
        claim(&mut d, t0, 0, &vu);
        // The shard took both, but the viewer's acknowledgement never came.
        d.on_event(
            t0,
            ControlEvent::Adopted {
                conn: publisher,
                shard: 0,
            },
            &[],
        );
        while rx.try_recv().is_ok() {}
        d.tick(t0 + ADOPT_DEADLINE - Duration::from_millis(1));
        assert_eq!(d.stats().adopt_unacknowledged, 0);
        assert!(d.conn_room(viewer).is_some());
        d.tick(t0 + ADOPT_DEADLINE);
        assert_eq!(d.stats().adopt_unacknowledged, 1);
        assert!(d.conn_room(viewer).is_none(), "the viewer is closed");
        assert!(d.conn_room(publisher).is_some(), "the publisher stays");
        let sent: Vec<String> = rx.try_iter().map(|c| describe(&c)).collect();
        assert!(sent.contains(&format!("close {viewer}")), "{sent:?}");
        let last = d.recently_closed().next().unwrap();
        assert_eq!((last.conn, last.reason.as_str()), (viewer, "not_adopted"));
        let mut out = String::new();
        d.render_metrics(&mut out, &[]);
        assert!(
            out.contains("corecast_adopt_unacknowledged_total 1"),
            "{out}"
        );
    }

    #[test]
    fn pending_endpoints_are_limited_and_count_toward_capacity() {
        let f = Fixture::new();
        let mut d = Directory::new(Vec::new(), false, 1);
        assert_eq!(d.admit(0, 100, 2), Ok(()));
        f.publisher(&mut d, "a", Codec::Vp8);
        f.viewer(&mut d, "a", Codec::Vp8);
        assert_eq!(d.pending(), 2);
        assert_eq!(d.admit(0, 100, 2), Err(Refusal::Pending));
        assert_eq!(d.admit(0, 100, 3), Ok(()));
        // 97 connected + 2 pending + this one would exceed 100... at 98 it does.
        assert_eq!(d.admit(97, 100, 3), Ok(()));
        assert_eq!(d.admit(98, 100, 3), Err(Refusal::Capacity));
        let st = d.stats();
        assert_eq!((st.refused_pending, st.refused_capacity), (1, 1));
    }

    #[test]
    fn viewers_that_cannot_receive_the_new_codec_are_closed() {
        let f = Fixture::new();
        let (tx, rx) = flume::bounded(256);
        let mut d = Directory::new(vec![tx], false, 1);
        let now = f.t0;
        let active = |d: &mut Directory, conn: ConnId, room: &str, kind: MediaKind| {
            active(d, now, conn, room, kind)
        };
        // An H264 stream with an H264 viewer on a shard and one pending.
        let (p1, u1) = f.publisher(&mut d, "s", Codec::H264);
        claim(&mut d, now, 0, &u1);
        let (placed, vu) = f.viewer(&mut d, "s", Codec::H264);
        claim(&mut d, now, 0, &vu);
        let (pending, _) = f.viewer(&mut d, "s", Codec::H264);
        assert_eq!(d.pending(), 1);
        active(&mut d, p1, "s", MediaKind::Audio);
        active(&mut d, p1, "s", MediaKind::Video);
        assert_eq!(d.stats().viewers_closed_codec_changed, 0, "H264 fits");
        // A VP8 publisher replaces it: both viewers stay until its codec is
        // known (it may still send what they take) ...
        let (p2, u2) = f.publisher(&mut d, "s", Codec::Vp8);
        claim(&mut d, now, 0, &u2);
        assert!(d.conn_room(placed).is_some());
        // ... audio (Opus) still fits ...
        active(&mut d, p2, "s", MediaKind::Audio);
        assert!(d.conn_room(placed).is_some());
        // ... VP8 video does not: both are closed, the placed one on its shard.
        while rx.try_recv().is_ok() {}
        active(&mut d, p2, "s", MediaKind::Video);
        assert_eq!(d.stats().viewers_closed_codec_changed, 2);
        assert!(d.conn_room(placed).is_none());
        assert!(d.conn_room(pending).is_none());
        assert_eq!(
            d.pending(),
            0,
            "the closed pending viewer is no longer counted"
        );
        let sent: Vec<String> = rx.try_iter().map(|c| describe(&c)).collect();
        assert!(sent.contains(&format!("close {placed}")), "{sent:?}");
        let reasons: Vec<(ConnId, &str)> = d
            .recently_closed()
            .map(|c| (c.conn, c.reason.as_str()))
            .collect();
        assert!(reasons.contains(&(placed, "codec_changed")), "{reasons:?}");
        assert!(reasons.contains(&(pending, "codec_changed")));
        assert!(reasons.contains(&(p1, "replaced")));
        // A VP8 viewer of the VP8 stream keeps playing when another VP8
        // publisher takes over.
        let (vp8_viewer, vu8) = f.viewer(&mut d, "s", Codec::Vp8);
        claim(&mut d, now, 0, &vu8);
        let (p3, u3) = f.publisher(&mut d, "s", Codec::Vp8);
        claim(&mut d, now, 0, &u3);
        active(&mut d, p3, "s", MediaKind::Video);
        assert!(d.conn_room(vp8_viewer).is_some());
        assert_eq!(d.stats().viewers_closed_codec_changed, 2);
        let mut out = String::new();
        d.render_metrics(&mut out, &[]);
        assert!(
            out.contains("corecast_viewers_closed_total{reason=\"codec_changed\"} 2"),
            "{out}"
        );
    }
}
