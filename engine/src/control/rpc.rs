//! The SDK's requests (docs/sdk-protocol.md, section 3), answered on the
//! control thread, which holds the rooms.
//!
//! A request arrives as text from the connection's shard (already within
//! the size and rate limits); its answer, and the events it causes, go back
//! as [`crate::messages::ShardCommand::Rpc`]. Bad input is answered with an
//! error code and counted in [`Directory::rpc_errors`], never a panic.

use std::time::Instant;

use corecast_media::{ConnId, MediaKind, Preference, SlotId, TransportKind};
use serde_json::{json, Map, Value};

use super::directory::Directory;
use super::rooms::{kind_name, peer_json, Peer, Sub, SubState};
use crate::messages::ShardCommand;

/// The protocol version this server speaks.
pub const PROTOCOL: u64 = 1;
/// Largest metadata, as JSON text.
pub const MAX_METADATA: usize = 4096;

/// A refused request: its code (a bounded metrics label) and the words.
pub(super) struct RpcError {
    pub(super) code: &'static str,
    pub(super) message: String,
}

fn err(code: &'static str, message: impl Into<String>) -> RpcError {
    RpcError {
        code,
        message: message.into(),
    }
}

/// What a handler returns: the answer's fields, and messages for the
/// requester that must follow the answer.
type Handled = Result<(Map<String, Value>, Vec<Value>), RpcError>;

fn ok() -> Handled {
    Ok((Map::new(), Vec::new()))
}

/// The optional `max_layer` and `priority` of a request.
fn preference(req: &Value) -> Result<Preference, RpcError> {
    let priority = match req.get("priority") {
        None | Some(Value::Null) => 1,
        Some(v) => v
            .as_u64()
            .filter(|p| (1..=u64::from(Preference::MAX_PRIORITY)).contains(p))
            .ok_or_else(|| {
                err(
                    "bad_request",
                    format!("priority must be from 1 to {}", Preference::MAX_PRIORITY),
                )
            })? as u8,
    };
    Ok(Preference {
        max_spatial: max_layer(req)?,
        priority,
    })
}

/// The optional `max_layer` of a request: a spatial layer from 0 to 3, or
/// null/absent for none.
fn max_layer(req: &Value) -> Result<Option<u8>, RpcError> {
    match req.get("max_layer") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|l| *l < corecast_media::MAX_SPATIAL as u64)
            .map(|l| Some(l as u8))
            .ok_or_else(|| {
                err(
                    "bad_request",
                    format!(
                        "max_layer must be a spatial layer from 0 to {}",
                        corecast_media::MAX_SPATIAL - 1
                    ),
                )
            }),
    }
}

fn field<'a>(req: &'a Value, name: &str) -> Result<&'a str, RpcError> {
    req.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| err("bad_request", format!("'{name}' (a string) is missing")))
}

/// Whether metadata is small enough to pass around.
pub fn metadata_fits(metadata: &Value) -> bool {
    metadata.to_string().len() <= MAX_METADATA
}

impl Directory {
    /// One request of an SDK connection.
    pub(super) fn on_rpc(&mut self, now: Instant, conn: ConnId, text: &str) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if c.transport != TransportKind::WebRtc {
            return;
        }
        let joined = c.joined;
        let req: Value = match serde_json::from_str(text) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                self.count_rpc_error("bad_request");
                self.send_rpc(
                    conn,
                    json!({"event": "error", "code": "bad_request", "message": "a message is one JSON object"}),
                );
                return;
            }
        };
        let id = req.get("id").cloned().unwrap_or(Value::Null);
        let name = req.get("request").and_then(Value::as_str).unwrap_or("");
        let result = match name {
            "join" => self.rpc_join(conn, &req),
            "leave" => ok(),
            _ if !joined && is_request(name) => Err(err("not_joined", "send join first")),
            "publish" => self.rpc_publish(conn, &req, true),
            "unpublish" => self.rpc_publish(conn, &req, false),
            "subscribe" => self.rpc_subscribe(conn, &req),
            "unsubscribe" => self.rpc_unsubscribe(conn, &req),
            "prefer" => self.rpc_prefer(conn, &req),
            "follow_speakers" => {
                let on = match req.get("on") {
                    None => Ok(true),
                    Some(v) => v
                        .as_bool()
                        .ok_or_else(|| err("bad_request", "'on' must be true or false")),
                };
                on.map(|on| {
                    let mids = self.follow_speakers(now, conn, on);
                    let mut fields = Map::new();
                    fields.insert("mids".into(), json!(mids));
                    (fields, Vec::new())
                })
            }
            "mute" => self.rpc_mute(conn, &req, true),
            "unmute" => self.rpc_mute(conn, &req, false),
            "update" => self.rpc_update(conn, &req),
            "" => Err(err("bad_request", "'request' (a string) is missing")),
            other => Err(err("unknown_request", format!("unknown request '{other}'"))),
        };
        match result {
            Ok((mut fields, follow)) => {
                fields.insert("id".into(), id);
                fields.insert("ok".into(), Value::Bool(true));
                self.send_rpc(conn, Value::Object(fields));
                for m in follow {
                    self.send_rpc(conn, m);
                }
                if name == "leave" {
                    self.end(now, conn, "left");
                }
                // The slots' subscription events come after the answer.
                if name == "follow_speakers" {
                    self.assign_current_speakers(now, conn);
                }
            }
            Err(e) => {
                self.count_rpc_error(e.code);
                self.send_rpc(
                    conn,
                    json!({"id": id, "ok": false, "error": {"code": e.code, "message": e.message}}),
                );
            }
        }
    }

    pub(super) fn count_rpc_error(&mut self, code: &'static str) {
        *self.rpc_errors.entry(code).or_default() += 1;
    }

    /// The room and peer of a connection.
    fn whoami(&self, conn: ConnId) -> Option<(String, String)> {
        self.conns
            .get(&conn)
            .map(|c| (c.room.clone(), c.peer.clone()))
    }

    /// A connection's own peer entry in its room.
    fn peer_mut(&mut self, room: &str, peer: &str) -> Result<&mut Peer, RpcError> {
        self.rooms
            .get_mut(room)
            .and_then(|r| r.peers.get_mut(peer))
            .ok_or_else(|| err("bad_request", "not in the room"))
    }

    fn rpc_join(&mut self, conn: ConnId, req: &Value) -> Handled {
        let version = req.get("protocol").and_then(Value::as_u64);
        if version != Some(PROTOCOL) {
            return Err(err(
                "unsupported_protocol",
                format!("this server speaks protocol {PROTOCOL}"),
            ));
        }
        let Some((room, peer)) = self.whoami(conn) else {
            return Err(err("bad_request", "no such connection"));
        };
        let c = self
            .conns
            .get_mut(&conn)
            .ok_or_else(|| err("bad_request", "gone"))?;
        if c.joined {
            return Err(err("already_joined", "this connection joined already"));
        }
        c.joined = true;
        let slots: Vec<Value> = c
            .slots
            .iter()
            .map(|s| json!({"mid": s.label, "kind": kind_name(s.kind)}))
            .collect();
        let peers: Vec<Value> = self
            .rooms
            .get(&room)
            .map(|r| {
                r.peers
                    .iter()
                    .filter(|(name, p)| p.joined && name.as_str() != peer)
                    .map(|(name, p)| peer_json(name, p))
                    .collect()
            })
            .unwrap_or_default();
        self.peer_joined(&room, &peer);
        tracing::info!("room {room}: {peer} joined ({conn})");
        let mut fields = Map::new();
        fields.insert("room".into(), json!(room));
        fields.insert("peer".into(), json!(peer));
        fields.insert("conn".into(), json!(conn.to_string()));
        fields.insert("peers".into(), Value::Array(peers));
        fields.insert("slots".into(), Value::Array(slots));
        Ok((fields, Vec::new()))
    }

    fn rpc_publish(&mut self, conn: ConnId, req: &Value, on: bool) -> Handled {
        let track = field(req, "track")?;
        let (room, peer) = self
            .whoami(conn)
            .ok_or_else(|| err("bad_request", "gone"))?;
        let p = self.peer_mut(&room, &peer)?;
        let t = p
            .tracks
            .iter_mut()
            .find(|t| t.name == track)
            .ok_or_else(|| {
                err(
                    "unknown_track",
                    format!("no track '{track}' was declared at connect"),
                )
            })?;
        if t.published == on {
            return ok();
        }
        t.published = on;
        let event = if on {
            let mut e = t.json();
            e["event"] = json!("track_published");
            e["peer"] = json!(peer);
            e
        } else {
            json!({"event": "track_unpublished", "peer": peer, "track": track})
        };
        let channel = t.channel;
        self.announce(&room, &peer);
        self.peer_event(&room, &peer, event);
        if !on {
            self.end_listeners(channel, "unpublished");
        }
        ok()
    }

    fn rpc_subscribe(&mut self, conn: ConnId, req: &Value) -> Handled {
        let target = field(req, "peer")?;
        let track = field(req, "track")?;
        let mid = req.get("mid").and_then(Value::as_str);
        let preference = preference(req)?;
        let (room, me) = self
            .whoami(conn)
            .ok_or_else(|| err("bad_request", "gone"))?;
        if target == me {
            return Err(err("bad_request", "a peer does not subscribe to itself"));
        }
        let p = self
            .rooms
            .get(&room)
            .and_then(|r| r.peers.get(target))
            .filter(|p| p.joined)
            .ok_or_else(|| err("unknown_peer", format!("no peer '{target}' in room {room}")))?;
        let t = p
            .tracks
            .iter()
            .find(|t| t.name == track && t.published)
            .cloned()
            .ok_or_else(|| {
                err(
                    "unknown_track",
                    format!("{target} publishes no track '{track}'"),
                )
            })?;
        let c = self
            .conns
            .get(&conn)
            .ok_or_else(|| err("bad_request", "gone"))?;
        // Subscribing again to what a slot plays answers with that slot.
        if let Some(i) = c
            .subs
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.channel == t.channel))
        {
            let slot = &c.slots[i];
            let mut fields = Map::new();
            fields.insert("mid".into(), json!(slot.label));
            fields.insert("kind".into(), json!(kind_name(slot.kind)));
            return Ok((fields, Vec::new()));
        }
        let slot =
            match mid {
                Some(mid) => c.slots.iter().find(|s| s.label == mid).ok_or_else(|| {
                    err("bad_request", format!("no receive slot with mid '{mid}'"))
                })?,
                None => c
                    .slots
                    .iter()
                    .find(|s| s.kind == t.kind && c.subs[usize::from(s.id.0)].is_none())
                    .ok_or_else(|| {
                        err(
                            "no_free_slot",
                            format!(
                            "every {} slot plays something; unsubscribe one or connect with more",
                            kind_name(t.kind)
                        ),
                        )
                    })?,
            };
        if slot.kind != t.kind {
            return Err(err(
                "bad_request",
                format!("slot {} is for {}", slot.label, kind_name(slot.kind)),
            ));
        }
        let required = t.required();
        if !required.is_empty()
            && !slot
                .codecs
                .iter()
                .any(|c| required.iter().any(|r| c.plays(r)))
        {
            return Err(err(
                "no_common_codec",
                format!("slot {} did not negotiate the track's codec", slot.label),
            ));
        }
        let (id, label, kind): (SlotId, String, _) = (slot.id, slot.label.clone(), slot.kind);
        let mut follow = Vec::new();
        if let Some(old) = &c.subs[usize::from(id.0)] {
            follow.push(json!({"event": "subscription", "mid": label, "peer": old.peer, "track": old.track, "state": "ended", "reason": "replaced"}));
            self.clear_sub(conn, id, None);
        }
        let state = if t.muted {
            SubState::Paused
        } else {
            SubState::Waiting
        };
        self.set_sub(
            conn,
            id,
            Sub {
                peer: target.to_string(),
                track: track.to_string(),
                channel: t.channel,
                state,
                sent: false,
            },
        );
        if t.kind == MediaKind::Video {
            self.prefer(conn, id, preference);
        }
        let mut fields = Map::new();
        fields.insert("mid".into(), json!(label));
        fields.insert("kind".into(), json!(kind_name(kind)));
        follow.push(json!({"event": "subscription", "mid": label, "peer": target, "track": track, "state": if t.muted { "paused" } else { "waiting" }}));
        Ok((fields, follow))
    }

    /// `prefer`: the top spatial layer a video slot gets (`max_layer`,
    /// absent or null for the best its link carries) and its `priority`.
    fn rpc_prefer(&mut self, conn: ConnId, req: &Value) -> Handled {
        let mid = field(req, "mid")?;
        let preference = preference(req)?;
        let c = self
            .conns
            .get(&conn)
            .ok_or_else(|| err("bad_request", "gone"))?;
        let slot = c
            .slots
            .iter()
            .find(|s| s.label == mid)
            .ok_or_else(|| err("bad_request", format!("no receive slot with mid '{mid}'")))?;
        if slot.kind != MediaKind::Video {
            return Err(err("bad_request", format!("slot {mid} is not video")));
        }
        let id = slot.id;
        self.prefer(conn, id, preference);
        Ok((Map::new(), Vec::new()))
    }

    /// Tells the shard of `conn` a slot's preference.
    fn prefer(&mut self, conn: ConnId, slot: SlotId, preference: Preference) {
        if let Some(shard) = self.conns.get(&conn).and_then(|c| c.shard()) {
            let cmd = ShardCommand::Prefer {
                conn,
                slot,
                preference,
            };
            self.send(shard, cmd);
        }
    }

    fn rpc_unsubscribe(&mut self, conn: ConnId, req: &Value) -> Handled {
        let mid = field(req, "mid")?;
        let c = self
            .conns
            .get(&conn)
            .ok_or_else(|| err("bad_request", "gone"))?;
        let slot = c
            .slots
            .iter()
            .find(|s| s.label == mid)
            .map(|s| s.id)
            .ok_or_else(|| err("bad_request", format!("no receive slot with mid '{mid}'")))?;
        let Some(sub) = c.subs[usize::from(slot.0)].clone() else {
            return ok();
        };
        self.clear_sub(conn, slot, None);
        let ended = json!({"event": "subscription", "mid": mid, "peer": sub.peer, "track": sub.track, "state": "ended", "reason": "unsubscribed"});
        Ok((Map::new(), vec![ended]))
    }

    fn rpc_mute(&mut self, conn: ConnId, req: &Value, muted: bool) -> Handled {
        let track = field(req, "track")?;
        let (room, peer) = self
            .whoami(conn)
            .ok_or_else(|| err("bad_request", "gone"))?;
        let p = self.peer_mut(&room, &peer)?;
        let t = p
            .tracks
            .iter_mut()
            .find(|t| t.name == track)
            .ok_or_else(|| err("unknown_track", format!("no track '{track}'")))?;
        if t.muted == muted {
            return ok();
        }
        t.muted = muted;
        let (channel, published) = (t.channel, t.published);
        let mut event = t.json();
        event["event"] = json!("track_updated");
        event["peer"] = json!(peer);
        self.announce(&room, &peer);
        if published {
            self.peer_event(&room, &peer, event);
        }
        let state = if muted {
            SubState::Paused
        } else {
            SubState::Live
        };
        self.set_listener_state(channel, state);
        ok()
    }

    fn rpc_update(&mut self, conn: ConnId, req: &Value) -> Handled {
        let metadata = req
            .get("metadata")
            .cloned()
            .ok_or_else(|| err("bad_request", "'metadata' is missing"))?;
        if !metadata_fits(&metadata) {
            return Err(err(
                "bad_request",
                format!("metadata is over {MAX_METADATA} bytes"),
            ));
        }
        let (room, peer) = self
            .whoami(conn)
            .ok_or_else(|| err("bad_request", "gone"))?;
        let p = self.peer_mut(&room, &peer)?;
        p.metadata = metadata.clone();
        self.announce(&room, &peer);
        self.peer_event(
            &room,
            &peer,
            json!({"event": "peer_updated", "peer": peer, "metadata": metadata}),
        );
        ok()
    }
}

fn is_request(name: &str) -> bool {
    matches!(
        name,
        "publish"
            | "unpublish"
            | "subscribe"
            | "unsubscribe"
            | "prefer"
            | "follow_speakers"
            | "mute"
            | "unmute"
            | "update"
    )
}

#[cfg(test)]
mod tests {
    //! The room state machine on the control thread, driven by events as
    //! the shards send them, in simulated time; no sockets.

    use std::time::{Duration, Instant};

    use corecast_media::{ConnId, Endpoint as _, MediaKind, Preference, RouteKey, SlotId};
    use corecast_webrtc::{Endpoint, EndpointConfig, PublisherInfo, RoomClient};
    use serde_json::{json, Value};

    use super::super::directory::Directory;
    use crate::messages::{ControlEvent, Datagram, ShardCommand};

    struct Room {
        d: Directory,
        shard: flume::Receiver<ShardCommand>,
        config: EndpointConfig,
        now: Instant,
    }

    impl Room {
        fn new() -> Room {
            let (tx, shard) = flume::unbounded();
            Room {
                d: Directory::new(vec![tx], false, 7),
                shard,
                config: EndpointConfig::new(vec!["127.0.0.1:9000".parse().unwrap()]),
                now: Instant::now(),
            }
        }

        /// A placed, joined SDK connection publishing audio and video.
        fn join(&mut self, peer: &str) -> ConnId {
            let local = "127.0.0.1:5000".parse().unwrap();
            let publish = [("audio", MediaKind::Audio), ("video", MediaKind::Video)];
            let (client, offer) =
                RoomClient::new(&self.config, self.now, local, &publish, 2, 2).unwrap();
            let body: Value =
                serde_json::from_str(&client.connect_body("r", peer, &offer, json!({}))).unwrap();
            let names = body["publish"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p["mid"].as_str().unwrap().into(),
                        p["name"].as_str().unwrap().into(),
                    )
                })
                .collect();
            let who = PublisherInfo {
                room: "r".into(),
                peer: peer.into(),
            };
            let (ep, _) = Endpoint::peer(&self.config, self.now, &offer, who, names).unwrap();
            let Some(RouteKey::IceUfrag(ufrag)) = ep.route_key() else {
                unreachable!()
            };
            let conn = self.d.next_conn_id();
            assert_eq!(conn.node(), 7, "connection ids carry the node");
            self.d.add_peer(
                "r",
                peer,
                conn,
                Box::new(ep),
                json!({"name": peer}),
                self.now,
                0,
            );
            let datagram = Datagram {
                at: self.now,
                source: local,
                destination: "127.0.0.1:9000".parse().unwrap(),
                contents: Vec::new(),
            };
            self.event(ControlEvent::Claim {
                shard: 0,
                ufrag,
                datagram,
            });
            self.rpc(conn, json!({"id": 1, "request": "join", "protocol": 1}));
            conn
        }

        fn event(&mut self, e: ControlEvent) {
            self.now += Duration::from_millis(10);
            self.d.on_event(self.now, e, &[]);
        }

        fn rpc(&mut self, conn: ConnId, request: Value) {
            self.event(ControlEvent::Rpc {
                conn,
                text: request.to_string(),
            });
        }

        /// RPC messages to `conn` since the last call, and whether the shard
        /// was told to point one of its slots at a channel.
        fn take(&mut self, conn: ConnId) -> (Vec<Value>, Vec<(SlotId, bool)>) {
            let (rpc, subs, _) = self.take_all(conn);
            (rpc, subs)
        }

        /// [`Room::take`] and the layer preferences the shard was told.
        #[allow(clippy::type_complexity)]
        fn take_all(
            &mut self,
            conn: ConnId,
        ) -> (Vec<Value>, Vec<(SlotId, bool)>, Vec<(SlotId, Preference)>) {
            let (mut rpc, mut subs, mut prefs) = (Vec::new(), Vec::new(), Vec::new());
            for cmd in self.shard.try_iter() {
                match cmd {
                    ShardCommand::Rpc { conn: c, text } if c == conn => {
                        rpc.push(serde_json::from_str(&text).unwrap())
                    }
                    ShardCommand::Subscribe {
                        conn: c,
                        slot,
                        channel,
                    } if c == conn => subs.push((slot, channel.is_some())),
                    ShardCommand::Prefer {
                        conn: c,
                        slot,
                        preference,
                    } if c == conn => prefs.push((slot, preference)),
                    _ => {}
                }
            }
            (rpc, subs, prefs)
        }
    }

    fn states(msgs: &[Value]) -> Vec<String> {
        msgs.iter()
            .filter(|m| m["event"] == "subscription")
            .map(|m| m["state"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn a_subscription_goes_waiting_live_paused_live_ended() {
        let mut r = Room::new();
        let alice = r.join("alice");
        let bob = r.join("bob");
        let (msgs, _) = r.take(alice);
        assert!(
            msgs.iter()
                .any(|m| m["event"] == "peer_joined" && m["peer"] == "bob"),
            "{msgs:?}"
        );
        r.rpc(
            bob,
            json!({"id": 2, "request": "subscribe", "peer": "alice", "track": "video"}),
        );
        let (msgs, subs) = r.take(bob);
        assert_eq!(msgs[0]["id"], 2, "the answer comes first: {msgs:?}");
        let mid = msgs[0]["mid"].as_str().unwrap().to_string();
        assert_eq!(states(&msgs), ["waiting"]);
        let slot = subs[0].0;
        assert_eq!(
            subs,
            vec![(slot, true)],
            "the shard plays the channel in the slot"
        );
        // The slot's first packet went out.
        r.event(ControlEvent::SlotLive { conn: bob, slot });
        assert_eq!(states(&r.take(bob).0), ["live"]);
        // Alice mutes and unmutes: paused, live again.
        r.rpc(alice, json!({"id": 3, "request": "mute", "track": "video"}));
        let (msgs, _) = r.take(bob);
        assert_eq!(states(&msgs), ["paused"]);
        assert!(msgs
            .iter()
            .any(|m| m["event"] == "track_updated" && m["muted"] == true));
        r.rpc(
            alice,
            json!({"id": 4, "request": "unmute", "track": "video"}),
        );
        assert_eq!(states(&r.take(bob).0), ["live"]);
        // Alice leaves: bob hears peer_left, then the subscription ends, and
        // the shard stops the slot.
        r.rpc(alice, json!({"id": 5, "request": "leave"}));
        let (msgs, subs) = r.take(bob);
        let names: Vec<&str> = msgs.iter().filter_map(|m| m["event"].as_str()).collect();
        assert_eq!(names, ["peer_left", "subscription"], "{msgs:?}");
        assert_eq!(msgs[0]["reason"], "left");
        assert_eq!(msgs[1]["state"], "ended");
        assert_eq!(msgs[1]["reason"], "peer_left");
        assert_eq!(msgs[1]["mid"], mid.as_str());
        assert_eq!(subs, vec![(slot, false)]);
        // Nothing of alice is left in the room.
        let rooms = r.d.rooms_json();
        assert_eq!(
            rooms["rooms"][0]["peers"].as_array().unwrap().len(),
            1,
            "{rooms}"
        );
    }

    #[test]
    fn a_subscription_carries_a_layer_preference_and_prefer_changes_it() {
        let mut r = Room::new();
        r.join("alice");
        let bob = r.join("bob");
        r.take(bob);
        r.rpc(
            bob,
            json!({"id": 2, "request": "subscribe", "peer": "alice", "track": "video", "max_layer": 1, "priority": 3}),
        );
        let (msgs, subs, prefs) = r.take_all(bob);
        assert_eq!(msgs[0]["ok"], true, "{msgs:?}");
        let slot = subs[0].0;
        let want = Preference {
            max_spatial: Some(1),
            priority: 3,
        };
        assert_eq!(prefs, vec![(slot, want)]);
        let mid = msgs[0]["mid"].clone();
        r.rpc(
            bob,
            json!({"id": 3, "request": "prefer", "mid": mid, "max_layer": null}),
        );
        let (msgs, _, prefs) = r.take_all(bob);
        assert_eq!(msgs[0]["ok"], true, "{msgs:?}");
        assert_eq!(prefs, vec![(slot, Preference::default())]);
        for (bad, why) in [
            (
                json!({"id": 4, "request": "prefer", "mid": mid, "max_layer": 4}),
                "max_layer",
            ),
            (
                json!({"id": 5, "request": "prefer", "mid": mid, "max_layer": "x"}),
                "max_layer",
            ),
            (
                json!({"id": 6, "request": "prefer", "mid": "nope"}),
                "no receive slot",
            ),
            (
                json!({"id": 7, "request": "prefer", "mid": mid, "priority": 0}),
                "priority",
            ),
            (
                json!({"id": 8, "request": "prefer", "mid": mid, "priority": 11}),
                "priority",
            ),
        ] {
            r.rpc(bob, bad);
            let (msgs, _, prefs) = r.take_all(bob);
            assert_eq!(msgs[0]["error"]["code"], "bad_request", "{msgs:?}");
            assert!(
                msgs[0]["error"]["message"].as_str().unwrap().contains(why),
                "{msgs:?}"
            );
            assert!(prefs.is_empty());
        }
    }

    #[test]
    fn slots_run_out_and_free_up() {
        let mut r = Room::new();
        let viewer = r.join("viewer");
        let publishers: Vec<ConnId> = ["p1", "p2", "p3"].iter().map(|p| r.join(p)).collect();
        let _ = publishers;
        r.take(viewer);
        for (id, p) in [(2, "p1"), (3, "p2"), (4, "p3")] {
            r.rpc(
                viewer,
                json!({"id": id, "request": "subscribe", "peer": p, "track": "video"}),
            );
        }
        let (msgs, _) = r.take(viewer);
        let answer = |id: u64| msgs.iter().find(|m| m["id"] == id).unwrap().clone();
        assert_eq!(answer(2)["ok"], true);
        assert_eq!(answer(3)["ok"], true);
        assert_eq!(
            answer(4)["error"]["code"],
            "no_free_slot",
            "two video slots"
        );
        // Subscribing again to what a slot plays answers with that slot.
        let mid = answer(2)["mid"].clone();
        r.rpc(
            viewer,
            json!({"id": 5, "request": "subscribe", "peer": "p1", "track": "video"}),
        );
        let (msgs, subs) = r.take(viewer);
        assert_eq!(msgs[0]["mid"], mid);
        assert!(subs.is_empty(), "nothing changes on the shard");
        // A slot freed plays the third.
        r.rpc(
            viewer,
            json!({"id": 6, "request": "unsubscribe", "mid": mid}),
        );
        r.rpc(
            viewer,
            json!({"id": 7, "request": "subscribe", "peer": "p3", "track": "video"}),
        );
        let (msgs, _) = r.take(viewer);
        assert_eq!(msgs.iter().find(|m| m["id"] == 7).unwrap()["mid"], mid);
        // One's own tracks and the wrong kind of slot are refused.
        r.rpc(
            viewer,
            json!({"id": 8, "request": "subscribe", "peer": "viewer", "track": "video"}),
        );
        let audio_mid = r.d.conns[&viewer]
            .slots
            .iter()
            .find(|s| s.kind == MediaKind::Audio)
            .unwrap()
            .label
            .clone();
        r.rpc(
            viewer,
            json!({"id": 9, "request": "subscribe", "peer": "p2", "track": "audio", "mid": mid}),
        );
        r.rpc(
            viewer,
            json!({"id": 10, "request": "subscribe", "peer": "p2", "track": "audio", "mid": audio_mid}),
        );
        let (msgs, _) = r.take(viewer);
        let answer = |id: u64| msgs.iter().find(|m| m["id"] == id).unwrap().clone();
        assert_eq!(answer(8)["error"]["code"], "bad_request");
        assert_eq!(answer(9)["error"]["code"], "bad_request", "a video slot");
        assert_eq!(answer(10)["mid"], audio_mid.as_str());
    }
}
