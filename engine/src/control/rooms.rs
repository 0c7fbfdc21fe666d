//! Rooms: their peers (here and on other nodes), the peers' tracks, and the
//! subscriptions of this node's connections.
//!
//! Every transport lands here the same way. A WHIP publisher is a peer named
//! after its connection that publishes `audio` and `video`; an SDK connection
//! is a peer that joins with a name, publishes named tracks and subscribes
//! slot by slot; a WHEP viewer is no peer but a *follower* whose two slots
//! play the room's WHIP publisher. Peers on other nodes come from the
//! cluster's room map ([`PeerRecord`]) and look the same, with no local
//! connection.
//!
//! A published track and a subscription are separate objects: a [`Track`]
//! belongs to its peer, a [`Sub`] to the slot of the connection that plays
//! it, with its own state (`waiting`, `live`, `paused`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use corecast_cluster::{PeerRecord, TrackRecord};
use corecast_media::{ChannelId, CodecInfo, ConnId, Endpoint, MediaKind, SlotId, TransportKind};
use serde_json::{json, Value};

use super::directory::Directory;
use crate::messages::{ClusterCommand, ShardCommand};

/// One room on this node's view.
#[derive(Default)]
pub(super) struct Room {
    pub(super) peers: BTreeMap<String, Peer>,
    /// WHEP viewers: their slots play the room's WHIP publisher.
    pub(super) followers: BTreeSet<ConnId>,
}

/// A peer of a room, here or on another node.
pub(super) struct Peer {
    /// Its connection, when on this node.
    pub(super) conn: Option<ConnId>,
    /// The node that holds it (for a remote peer).
    pub(super) node: u32,
    pub(super) transport: TransportKind,
    pub(super) metadata: Value,
    pub(super) tracks: Vec<Track>,
    /// Listed in the room: an SDK peer once it joined, a WHIP peer at once.
    pub(super) joined: bool,
    /// When its connection was made (Unix ms): the later of two wins.
    pub(super) since_ms: u64,
    /// Channels this node exports to the cluster for it.
    pub(super) exported: Vec<ChannelId>,
}

/// A track a peer publishes (or declared and may publish).
#[derive(Debug, Clone)]
pub(super) struct Track {
    pub(super) name: String,
    pub(super) kind: MediaKind,
    pub(super) channel: ChannelId,
    pub(super) negotiated: Vec<CodecInfo>,
    pub(super) active: Option<CodecInfo>,
    pub(super) muted: bool,
    pub(super) published: bool,
    /// Simulcast layers it sends (1: a single stream).
    pub(super) layers: u8,
}

impl Track {
    /// The codecs a subscriber must play: the one in use once known, else
    /// those negotiated.
    pub(super) fn required(&self) -> Vec<CodecInfo> {
        match self.active {
            Some(c) => vec![c],
            None => self.negotiated.clone(),
        }
    }

    pub(super) fn json(&self) -> Value {
        json!({
            "name": self.name,
            "kind": kind_name(self.kind),
            "codec": self.active.map(|c| c.to_string()),
            "muted": self.muted,
            "layers": self.layers,
        })
    }
}

/// What one slot of a local connection plays.
#[derive(Debug, Clone)]
pub(super) struct Sub {
    pub(super) peer: String,
    pub(super) track: String,
    pub(super) channel: ChannelId,
    pub(super) state: SubState,
    /// Its first packet went out (a paused subscription resumes `live`,
    /// else `waiting`).
    pub(super) sent: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SubState {
    /// Subscribed; no media sent yet.
    Waiting,
    /// The first packet went out.
    Live,
    /// The publisher muted the track.
    Paused,
}

impl SubState {
    fn name(self) -> &'static str {
        match self {
            SubState::Waiting => "waiting",
            SubState::Live => "live",
            SubState::Paused => "paused",
        }
    }
}

pub(super) fn kind_name(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    }
}

/// A peer that publishes one stream as `audio` and `video` under its
/// connection's name and that WHEP (and MoQ) viewers follow: a WHIP, RTMP
/// or MoQ publisher (MoQ viewers are followers, never peers). A room has
/// one at a time per node: the newer replaces the older, whichever
/// transport either came in by.
pub(super) fn stream_publisher(t: TransportKind) -> bool {
    matches!(
        t,
        TransportKind::Whip | TransportKind::Rtmp | TransportKind::Moq
    )
}

fn transport_of(name: &str) -> TransportKind {
    match name {
        "whip" => TransportKind::Whip,
        "whep" => TransportKind::Whep,
        "rtmp" => TransportKind::Rtmp,
        "sip" => TransportKind::Sip,
        "moq" => TransportKind::Moq,
        _ => TransportKind::WebRtc,
    }
}

/// A peer as the SDK protocol shows it.
pub(super) fn peer_json(name: &str, p: &Peer) -> Value {
    json!({
        "peer": name,
        "metadata": p.metadata,
        "tracks": p.tracks.iter().filter(|t| t.published).map(Track::json).collect::<Vec<_>>(),
    })
}

pub(super) fn tracks_of(endpoint: &dyn Endpoint) -> Vec<Track> {
    endpoint
        .published()
        .into_iter()
        .map(|t| Track {
            name: t.name,
            kind: t.kind,
            channel: t.channel,
            negotiated: t.codecs,
            active: None,
            muted: false,
            published: true,
            layers: t.layers.max(1),
        })
        .collect()
}

impl Directory {
    // ---- peers of every transport ----

    /// A WHIP publisher: a peer named after its connection, publishing
    /// `audio` and `video`. The room's earlier WHIP publisher on this node
    /// is closed (`replaced`); WHEP viewers switch to the new one.
    pub fn add_publisher(
        &mut self,
        room: &str,
        conn: ConnId,
        endpoint: Box<dyn Endpoint>,
        now: Instant,
        since_ms: u64,
    ) {
        self.replace_stream_publishers(now, room);
        let peer = conn.to_string();
        let tracks = tracks_of(endpoint.as_ref());
        self.insert(conn, room, &peer, endpoint, now);
        self.add_local_peer(
            room,
            &peer,
            conn,
            TransportKind::Whip,
            Value::Null,
            tracks,
            since_ms,
        );
        self.peer_joined(room, &peer);
    }

    /// A publisher that a shard accepted itself and that asked to publish
    /// in band (RTMP): like a WHIP publisher, a peer named after its
    /// connection publishing `audio` (Opus) and `video`. Returns the peer
    /// name to answer the shard with.
    #[allow(clippy::too_many_arguments)]
    pub fn add_stream_publisher(
        &mut self,
        room: &str,
        conn: ConnId,
        shard: usize,
        transport: TransportKind,
        audio: Vec<CodecInfo>,
        video: Vec<CodecInfo>,
        now: Instant,
        since_ms: u64,
    ) -> String {
        self.replace_stream_publishers(now, room);
        let peer = conn.to_string();
        let track = |name: &str, kind: MediaKind, codecs: Vec<CodecInfo>| Track {
            name: name.to_string(),
            kind,
            channel: ChannelId::for_track(room, &peer, name),
            negotiated: codecs,
            active: None,
            muted: false,
            published: true,
            layers: 1,
        };
        let tracks = vec![
            track("audio", MediaKind::Audio, audio),
            track("video", MediaKind::Video, video),
        ];
        self.insert_placed(conn, room, &peer, transport, shard, Vec::new(), now);
        self.add_local_peer(room, &peer, conn, transport, Value::Null, tracks, since_ms);
        self.peer_joined(room, &peer);
        peer
    }

    /// A viewer that a shard accepted itself and that asked to watch in
    /// band (MoQ): follows the room's stream publisher like a WHEP viewer.
    pub fn add_stream_viewer(
        &mut self,
        room: &str,
        conn: ConnId,
        shard: usize,
        transport: TransportKind,
        slots: Vec<corecast_media::Slot>,
        now: Instant,
    ) {
        self.insert_placed(conn, room, &conn.to_string(), transport, shard, slots, now);
        self.rooms
            .entry(room.to_string())
            .or_default()
            .followers
            .insert(conn);
        self.follow(room, conn);
    }

    /// Closes the room's stream publishers on this node (`replaced`).
    fn replace_stream_publishers(&mut self, now: Instant, room: &str) {
        let old: Vec<ConnId> = self
            .rooms
            .get(room)
            .map(|r| {
                r.peers
                    .values()
                    .filter(|p| stream_publisher(p.transport))
                    .filter_map(|p| p.conn)
                    .collect()
            })
            .unwrap_or_default();
        for o in old {
            self.end(now, o, "replaced");
        }
    }

    /// A WHEP viewer: follows the room's WHIP publisher.
    pub fn add_viewer(&mut self, room: &str, endpoint: Box<dyn Endpoint>, now: Instant) -> ConnId {
        let conn = self.next_conn_id();
        self.insert(conn, room, &conn.to_string(), endpoint, now);
        self.rooms
            .entry(room.to_string())
            .or_default()
            .followers
            .insert(conn);
        self.follow(room, conn);
        conn
    }

    /// An SDK connection of `peer`: listed once it joins (RPC `join`). A
    /// connection of the same peer id here is replaced; one on another node
    /// is replaced by that node when it sees this node's record.
    #[allow(clippy::too_many_arguments)]
    pub fn add_peer(
        &mut self,
        room: &str,
        peer: &str,
        conn: ConnId,
        endpoint: Box<dyn Endpoint>,
        metadata: Value,
        now: Instant,
        since_ms: u64,
    ) {
        let existing = self.rooms.get(room).and_then(|r| r.peers.get(peer));
        match existing.map(|p| (p.conn, p.joined)) {
            Some((Some(old), _)) => self.replace(now, old),
            // A remote connection of this peer: this one takes over.
            Some((None, _)) => self.remove_peer_entry(now, room, peer, "replaced"),
            None => {}
        }
        let tracks = tracks_of(endpoint.as_ref());
        self.insert(conn, room, peer, endpoint, now);
        self.add_local_peer(
            room,
            peer,
            conn,
            TransportKind::WebRtc,
            metadata,
            tracks,
            since_ms,
        );
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn add_local_peer(
        &mut self,
        room: &str,
        peer: &str,
        conn: ConnId,
        transport: TransportKind,
        metadata: Value,
        tracks: Vec<Track>,
        since_ms: u64,
    ) {
        for t in &tracks {
            self.local_channels.insert(t.channel);
        }
        let joined = transport != TransportKind::WebRtc;
        self.rooms
            .entry(room.to_string())
            .or_default()
            .peers
            .insert(
                peer.to_string(),
                Peer {
                    conn: Some(conn),
                    node: 0,
                    transport,
                    metadata,
                    tracks,
                    joined,
                    since_ms,
                    exported: Vec::new(),
                },
            );
    }

    /// Tells an SDK connection it is replaced, then closes it.
    fn replace(&mut self, now: Instant, old: ConnId) {
        self.send_rpc(old, json!({"event": "closed", "reason": "replaced"}));
        self.end(now, old, "replaced");
    }

    /// A local peer is listed from now on: announced to the cluster and to
    /// the room's SDK connections; WHEP followers pick up a WHIP publisher.
    pub(super) fn peer_joined(&mut self, room: &str, peer: &str) {
        let Some(p) = self.rooms.get_mut(room).and_then(|r| r.peers.get_mut(peer)) else {
            return;
        };
        p.joined = true;
        let mut event = peer_json(peer, p);
        event["event"] = json!("peer_joined");
        let whip = stream_publisher(p.transport);
        self.announce(room, peer);
        self.peer_event(room, peer, event);
        if whip {
            self.refollow(room);
        }
    }

    /// What every end of a connection does to its room: a peer leaves
    /// (`reason` for the others), a follower stops following, and its own
    /// subscriptions go.
    pub(super) fn conn_gone(
        &mut self,
        now: Instant,
        conn: ConnId,
        room: &str,
        peer: &str,
        reason: &str,
    ) {
        let subs: Vec<SlotId> = self
            .conns
            .get(&conn)
            .map(|c| {
                c.subs
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.is_some())
                    .map(|(i, _)| SlotId(i as u16))
                    .collect()
            })
            .unwrap_or_default();
        for slot in subs {
            self.clear_sub(conn, slot, None);
        }
        if let Some(r) = self.rooms.get_mut(room) {
            r.followers.remove(&conn);
        }
        let mine = self
            .rooms
            .get(room)
            .and_then(|r| r.peers.get(peer))
            .is_some_and(|p| p.conn == Some(conn));
        if mine {
            self.remove_peer_entry(now, room, peer, reason);
        }
        self.drop_room_if_empty(room);
    }

    /// Removes a peer (local or remote) from its room: the others see
    /// `peer_left`, subscriptions to its tracks end, a local peer leaves the
    /// cluster's room map.
    fn remove_peer_entry(&mut self, _now: Instant, room: &str, peer: &str, reason: &str) {
        let Some(p) = self.rooms.get_mut(room).and_then(|r| r.peers.remove(peer)) else {
            return;
        };
        if p.conn.is_some() {
            for t in &p.tracks {
                self.local_channels.remove(&t.channel);
            }
            self.unannounce(room, peer, &p);
        }
        if p.joined {
            self.peer_event(
                room,
                peer,
                json!({"event": "peer_left", "peer": peer, "reason": reason}),
            );
        }
        for t in &p.tracks {
            self.end_listeners(t.channel, "peer_left");
        }
        if stream_publisher(p.transport) {
            self.refollow(room);
        }
    }

    fn drop_room_if_empty(&mut self, room: &str) {
        if self
            .rooms
            .get(room)
            .is_some_and(|r| r.peers.is_empty() && r.followers.is_empty())
        {
            self.rooms.remove(room);
        }
    }

    // ---- WHEP followers ----

    /// The peer WHEP viewers of a room play: its WHIP publisher here, else
    /// one on another node.
    fn whip_publisher(&self, room: &str) -> Option<(&String, &Peer)> {
        let r = self.rooms.get(room)?;
        let whip = || {
            r.peers
                .iter()
                .filter(|(_, p)| stream_publisher(p.transport) && p.joined)
        };
        whip()
            .find(|(_, p)| p.conn.is_some())
            .or_else(|| whip().next())
    }

    /// The codecs a new WHEP viewer of `room` must accept, per kind: what the
    /// WHIP publisher sends once known, else what it negotiated. Empty
    /// without a publisher (anything).
    pub fn required_codecs(&self, room: &str) -> Vec<CodecInfo> {
        let Some((_, p)) = self.whip_publisher(room) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for kind in [MediaKind::Audio, MediaKind::Video] {
            for t in p.tracks.iter().filter(|t| t.kind == kind && t.published) {
                for c in t.required() {
                    if !out.contains(&c) {
                        out.push(c);
                    }
                }
            }
        }
        out
    }

    /// How many simulcast layers the video of `room`'s WHIP publisher sends
    /// (1 without simulcast or without a publisher).
    /// The simulcast layers of the track published on `channel` (1 when
    /// no peer known here publishes it).
    fn channel_layers(&self, channel: ChannelId) -> u8 {
        self.rooms
            .values()
            .flat_map(|r| r.peers.values())
            .flat_map(|p| &p.tracks)
            .find(|t| t.channel == channel)
            .map_or(1, |t| t.layers)
    }

    pub fn stream_layers(&self, room: &str) -> u8 {
        self.whip_publisher(room)
            .and_then(|(_, p)| {
                p.tracks
                    .iter()
                    .filter(|t| t.kind == MediaKind::Video && t.published)
                    .map(|t| t.layers)
                    .max()
            })
            .unwrap_or(1)
    }

    /// Points a follower's slots at the WHIP publisher's tracks of their kind.
    fn follow(&mut self, room: &str, conn: ConnId) {
        let target: Option<(String, Vec<Track>)> = self
            .whip_publisher(room)
            .map(|(name, p)| (name.clone(), p.tracks.clone()));
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let slots: Vec<(SlotId, MediaKind)> = c.slots.iter().map(|s| (s.id, s.kind)).collect();
        for (slot, kind) in slots {
            let want = target.as_ref().and_then(|(peer, tracks)| {
                tracks
                    .iter()
                    .find(|t| t.kind == kind && t.published && t.name == kind.track_name())
                    .map(|t| (peer.clone(), t.clone()))
            });
            let have = self
                .conns
                .get(&conn)
                .and_then(|c| c.subs.get(usize::from(slot.0)).cloned().flatten())
                .map(|s| s.channel);
            if have == want.as_ref().map(|(_, t)| t.channel) {
                continue;
            }
            if have.is_some() {
                self.clear_sub(conn, slot, None);
            }
            if let Some((peer, t)) = want {
                self.set_sub(
                    conn,
                    slot,
                    Sub {
                        peer,
                        track: t.name,
                        channel: t.channel,
                        state: SubState::Waiting,
                        sent: false,
                    },
                );
            }
        }
    }

    pub(super) fn refollow(&mut self, room: &str) {
        let followers: Vec<ConnId> = self
            .rooms
            .get(room)
            .map(|r| r.followers.iter().copied().collect())
            .unwrap_or_default();
        for f in followers {
            self.follow(room, f);
        }
    }

    // ---- subscriptions ----

    /// Points a slot of a local connection at a track.
    pub(super) fn set_sub(&mut self, conn: ConnId, slot: SlotId, sub: Sub) {
        let channel = sub.channel;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(entry) = c.subs.get_mut(usize::from(slot.0)) else {
            return;
        };
        *entry = Some(sub);
        let shard = c.shard();
        self.listeners
            .entry(channel)
            .or_default()
            .push((conn, slot));
        if let Some(shard) = shard {
            self.send(
                shard,
                ShardCommand::Subscribe {
                    conn,
                    slot,
                    channel: Some(channel),
                },
            );
        }
        self.update_channel(channel);
    }

    /// Stops a slot; an SDK connection hears why (`reason`).
    pub(super) fn clear_sub(&mut self, conn: ConnId, slot: SlotId, reason: Option<&str>) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(sub) = c.subs.get_mut(usize::from(slot.0)).and_then(Option::take) else {
            return;
        };
        let (shard, label, sdk) = (
            c.shard(),
            c.slots.get(usize::from(slot.0)).map(|s| s.label.clone()),
            c.transport == TransportKind::WebRtc,
        );
        if let Some(list) = self.listeners.get_mut(&sub.channel) {
            list.retain(|l| *l != (conn, slot));
            if list.is_empty() {
                self.listeners.remove(&sub.channel);
            }
        }
        if let Some(shard) = shard {
            self.send(
                shard,
                ShardCommand::Subscribe {
                    conn,
                    slot,
                    channel: None,
                },
            );
        }
        self.update_channel(sub.channel);
        if let (Some(reason), Some(mid), true) = (reason, label, sdk) {
            self.send_rpc(
                conn,
                json!({"event": "subscription", "mid": mid, "peer": sub.peer, "track": sub.track, "state": "ended", "reason": reason}),
            );
        }
    }

    /// Ends every local subscription of a channel.
    pub(super) fn end_listeners(&mut self, channel: ChannelId, reason: &str) {
        let list = self.listeners.get(&channel).cloned().unwrap_or_default();
        for (conn, slot) in list {
            self.clear_sub(conn, slot, Some(reason));
        }
    }

    /// Tells an SDK connection the state of one of its subscriptions.
    pub(super) fn sub_event(&mut self, conn: ConnId, slot: SlotId) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if c.transport != TransportKind::WebRtc {
            return;
        }
        let (Some(Some(sub)), Some(s)) = (
            c.subs.get(usize::from(slot.0)),
            c.slots.get(usize::from(slot.0)),
        ) else {
            return;
        };
        let event = json!({"event": "subscription", "mid": s.label, "peer": sub.peer, "track": sub.track, "state": sub.state.name()});
        self.send_rpc(conn, event);
    }

    /// A slot sent its first packet: `waiting` becomes `live`.
    pub(super) fn on_slot_live(&mut self, conn: ConnId, slot: SlotId) {
        let Some(sub) = self
            .conns
            .get_mut(&conn)
            .and_then(|c| c.subs.get_mut(usize::from(slot.0)))
            .and_then(Option::as_mut)
        else {
            return;
        };
        sub.sent = true;
        if sub.state == SubState::Waiting {
            sub.state = SubState::Live;
            self.sub_event(conn, slot);
        }
    }

    /// Sets the state of every local subscription of a channel.
    pub(super) fn set_listener_state(&mut self, channel: ChannelId, state: SubState) {
        let list = self.listeners.get(&channel).cloned().unwrap_or_default();
        for (conn, slot) in list {
            let Some(sub) = self
                .conns
                .get_mut(&conn)
                .and_then(|c| c.subs.get_mut(usize::from(slot.0)))
                .and_then(Option::as_mut)
            else {
                continue;
            };
            // Resuming: `live` again if media went out before, else `waiting`.
            let state = match state {
                SubState::Live if !sub.sent => SubState::Waiting,
                other => other,
            };
            if sub.state != state {
                sub.state = state;
                self.sub_event(conn, slot);
            }
        }
    }

    /// Tells every shard which shards hold subscribers of a channel, and
    /// subscribes this node to it in the cluster while it is published
    /// elsewhere and played here.
    pub(super) fn update_channel(&mut self, channel: ChannelId) {
        let mut mask = 0u64;
        for (conn, _) in self
            .listeners
            .get(&channel)
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            if let Some(shard) = self.conns.get(conn).and_then(|c| c.shard()) {
                mask |= 1 << shard;
            }
        }
        for i in 0..self.shard_count() {
            self.send(
                i,
                ShardCommand::Fanout {
                    channel,
                    shards: mask,
                },
            );
        }
        if !self.clustered {
            return;
        }
        let want = mask != 0 && !self.local_channels.contains(&channel);
        let has = self.cluster_subscribed.contains(&channel);
        if want != has {
            if want {
                self.cluster_subscribed.insert(channel);
            } else {
                self.cluster_subscribed.remove(&channel);
            }
            let layers = match want {
                true => self.channel_layers(channel),
                false => 1,
            };
            self.cluster(ClusterCommand::Subscribe {
                channel,
                on: want,
                layers,
            });
        }
    }

    /// Re-sends the fan-out of every channel a connection's slots play
    /// (it was placed on a shard).
    pub(super) fn conn_placed(&mut self, conn: ConnId) {
        let channels: Vec<ChannelId> = self
            .conns
            .get(&conn)
            .map(|c| c.subs.iter().flatten().map(|s| s.channel).collect())
            .unwrap_or_default();
        for ch in channels {
            self.update_channel(ch);
        }
    }

    // ---- events to SDK connections ----

    /// Sends one message to a local connection's RPC stream.
    pub(super) fn send_rpc(&mut self, conn: ConnId, message: Value) {
        let Some(shard) = self.conns.get(&conn).and_then(|c| c.shard()) else {
            return;
        };
        self.send(
            shard,
            ShardCommand::Rpc {
                conn,
                text: message.to_string(),
            },
        );
    }

    /// Sends an event to every joined SDK connection of the room but `peer`'s.
    pub(super) fn peer_event(&mut self, room: &str, peer: &str, event: Value) {
        let targets: Vec<ConnId> = self
            .rooms
            .get(room)
            .map(|r| {
                r.peers
                    .iter()
                    .filter(|(name, p)| {
                        name.as_str() != peer && p.joined && p.transport == TransportKind::WebRtc
                    })
                    .filter_map(|(_, p)| p.conn)
                    .collect()
            })
            .unwrap_or_default();
        for conn in targets {
            self.send_rpc(conn, event.clone());
        }
    }

    // ---- the cluster's room map ----

    /// Sets a local, listed peer's entry in the cluster's room map and
    /// exports its published tracks' channels.
    pub(super) fn announce(&mut self, room: &str, peer: &str) {
        if !self.clustered {
            return;
        }
        let Some(p) = self.rooms.get_mut(room).and_then(|r| r.peers.get_mut(peer)) else {
            return;
        };
        if p.conn.is_none() || !p.joined {
            return;
        }
        let want: Vec<ChannelId> = p
            .tracks
            .iter()
            .filter(|t| t.published)
            .map(|t| t.channel)
            .collect();
        let old = std::mem::replace(&mut p.exported, want.clone());
        let record = PeerRecord {
            room: room.to_string(),
            peer: peer.to_string(),
            node: 0,
            session: p.conn.map_or(0, |c| c.0),
            transport: p.transport.name().to_string(),
            metadata: p.metadata.to_string(),
            since_ms: p.since_ms,
            refresh: 0,
            tracks: p
                .tracks
                .iter()
                .filter(|t| t.published)
                .map(|t| TrackRecord {
                    name: t.name.clone(),
                    kind: t.kind,
                    channel: t.channel.0,
                    codecs: t.required(),
                    muted: t.muted,
                    layers: t.layers,
                })
                .collect(),
        };
        for ch in old.iter().filter(|c| !want.contains(c)) {
            self.export(*ch, false);
        }
        for ch in want.iter().filter(|c| !old.contains(c)) {
            self.export(*ch, true);
        }
        self.cluster(ClusterCommand::SetPeer(record));
    }

    fn unannounce(&mut self, room: &str, peer: &str, p: &Peer) {
        if !self.clustered || !p.joined {
            return;
        }
        for ch in &p.exported {
            self.export(*ch, false);
        }
        self.cluster(ClusterCommand::DelPeer {
            room: room.to_string(),
            peer: peer.to_string(),
        });
    }

    fn export(&mut self, channel: ChannelId, on: bool) {
        self.cluster(ClusterCommand::Publish { channel, on });
        for i in 0..self.shard_count() {
            self.send(i, ShardCommand::Export { channel, on });
        }
    }

    /// A peer on another node came, changed or went.
    pub(super) fn on_remote_peer(&mut self, now: Instant, up: bool, record: PeerRecord) {
        let room = record.room.clone();
        let name = record.peer.clone();
        let existing = self.rooms.get(&room).and_then(|r| r.peers.get(&name));
        if !up {
            if existing.is_some_and(|p| p.conn.is_none() && p.node == record.node) {
                tracing::info!("room {room}: peer {name} on node {} left", record.node);
                self.remove_peer_entry(now, &room, &name, "left");
                self.drop_room_if_empty(&room);
            }
            return;
        }
        if let Some(p) = existing {
            if let Some(local) = p.conn {
                // The same peer id here and there: the later connection stays.
                if record.since_ms <= p.since_ms {
                    return;
                }
                tracing::info!(
                    "room {room}: peer {name} connected again on node {}: {local} replaced",
                    record.node
                );
                self.replace(now, local);
            }
        }
        let tracks: Vec<Track> = record
            .tracks
            .iter()
            .map(|t| Track {
                name: t.name.clone(),
                kind: t.kind,
                channel: t.channel_id(),
                negotiated: t.codecs.clone(),
                active: (t.codecs.len() == 1).then(|| t.codecs[0]),
                muted: t.muted,
                published: true,
                layers: t.layers.max(1),
            })
            .collect();
        let metadata: Value = serde_json::from_str(&record.metadata).unwrap_or(Value::Null);
        let fresh = Peer {
            conn: None,
            node: record.node,
            transport: transport_of(&record.transport),
            metadata,
            tracks,
            joined: true,
            since_ms: record.since_ms,
            exported: Vec::new(),
        };
        let old = self
            .rooms
            .entry(room.clone())
            .or_default()
            .peers
            .insert(name.clone(), fresh);
        let whip = record.transport == "whip";
        match old {
            None => {
                tracing::info!("room {room}: peer {name} on node {}", record.node);
                let p = &self.rooms[&room].peers[&name];
                let mut event = peer_json(&name, p);
                event["event"] = json!("peer_joined");
                self.peer_event(&room, &name, event);
            }
            Some(old) => self.diff_remote(&room, &name, &old),
        }
        if whip {
            self.refollow(&room);
        }
    }

    /// Events for what changed in a remote peer's record.
    fn diff_remote(&mut self, room: &str, name: &str, old: &Peer) {
        let Some(new) = self.rooms.get(room).and_then(|r| r.peers.get(name)) else {
            return;
        };
        let mut events = Vec::new();
        if new.metadata != old.metadata {
            events.push(json!({"event": "peer_updated", "peer": name, "metadata": new.metadata}));
        }
        let mut ended = Vec::new();
        let mut muted = Vec::new();
        for t in &new.tracks {
            match old.tracks.iter().find(|o| o.name == t.name) {
                None => {
                    let mut e = t.json();
                    e["event"] = json!("track_published");
                    e["peer"] = json!(name);
                    events.push(e);
                }
                Some(o) if o.muted != t.muted || o.active != t.active => {
                    let mut e = t.json();
                    e["event"] = json!("track_updated");
                    e["peer"] = json!(name);
                    events.push(e);
                    if o.muted != t.muted {
                        muted.push((t.channel, t.muted));
                    }
                }
                Some(_) => {}
            }
        }
        for o in &old.tracks {
            if !new.tracks.iter().any(|t| t.name == o.name) {
                events.push(json!({"event": "track_unpublished", "peer": name, "track": o.name}));
                ended.push(o.channel);
            }
        }
        for e in events {
            self.peer_event(room, name, e);
        }
        for ch in ended {
            self.end_listeners(ch, "unpublished");
        }
        for (ch, m) in muted {
            let state = if m { SubState::Paused } else { SubState::Live };
            self.set_listener_state(ch, state);
        }
    }

    /// A local publisher's track started sending a codec.
    /// The room and name of the peer whose connection is `conn`, the peer,
    /// and the index of its track on `channel` (`None` when `conn` is no
    /// longer that peer's connection).
    fn conn_track(
        &mut self,
        conn: ConnId,
        channel: ChannelId,
    ) -> Option<(String, String, &mut Peer, usize)> {
        let c = self.conns.get(&conn)?;
        let (room, peer) = (c.room.clone(), c.peer.clone());
        let p = self.rooms.get_mut(&room)?.peers.get_mut(&peer)?;
        if p.conn != Some(conn) {
            return None;
        }
        let i = p.tracks.iter().position(|t| t.channel == channel)?;
        Some((room, peer, p, i))
    }

    pub(super) fn on_active_codec(
        &mut self,
        now: Instant,
        conn: ConnId,
        channel: ChannelId,
        codec: CodecInfo,
    ) {
        let Some((room, peer, p, i)) = self.conn_track(conn, channel) else {
            return;
        };
        let t = &mut p.tracks[i];
        if t.active == Some(codec) {
            return;
        }
        t.active = Some(codec);
        let (published, joined, whip) = (t.published, p.joined, stream_publisher(p.transport));
        let mut event = t.json();
        event["event"] = json!("track_updated");
        event["peer"] = json!(peer);
        // Other nodes' subscribers must accept the codec in use now.
        self.announce(&room, &peer);
        if published && joined {
            self.peer_event(&room, &peer, event);
        }
        if whip {
            self.close_unfit_viewers(now, &room, codec);
        }
    }

    /// A publisher's track carries `layers` SVC spatial layers (seen in its
    /// payloads): WHEP viewers that come now get an adaptive leg, and other
    /// nodes learn it with the peer's record.
    pub(super) fn on_track_layers(&mut self, conn: ConnId, channel: ChannelId, layers: u8) {
        let Some((room, peer, p, i)) = self.conn_track(conn, channel) else {
            return;
        };
        let t = &mut p.tracks[i];
        if t.layers >= layers {
            return;
        }
        t.layers = layers;
        self.announce(&room, &peer);
    }

    /// Closes the WHEP viewers of `room` that cannot receive `codec` (the
    /// publisher switched to it): they would get nothing. Their players
    /// reconnect and negotiate the new codec. Viewers without a slot of the
    /// codec's kind are left alone.
    fn close_unfit_viewers(&mut self, now: Instant, room: &str, codec: CodecInfo) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let mut unfit: Vec<ConnId> = r
            .followers
            .iter()
            .filter(|v| {
                self.conns.get(v).is_some_and(|c| {
                    let mut same_kind = c.receivable.iter().filter(|x| x.kind() == codec.kind());
                    let mut any = false;
                    let fits = same_kind.any(|x| {
                        any = true;
                        x.plays(&codec)
                    });
                    any && !fits
                })
            })
            .copied()
            .collect();
        unfit.sort();
        for viewer in unfit {
            tracing::info!(
                "connection {viewer} closed: the publisher of {room} switched to {codec}, which this viewer did not negotiate (codec_changed)"
            );
            self.stats.viewers_closed_codec_changed += 1;
            self.end(now, viewer, "codec_changed");
        }
    }
}
