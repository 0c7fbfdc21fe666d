//! The check of the fuzz target `rpc`: SDK requests, as an SDK connection's
//! data channel delivers them, answered by the control thread's rooms. The
//! libFuzzer target in `fuzz_targets/` and its seeded twin in
//! `tests/hostile_rpc.rs` both call it.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use corecast::control::Directory;
use corecast::messages::{ConnId, ControlEvent, Datagram, ShardCommand};
use corecast_media::{Endpoint as _, MediaKind, RouteKey};
use corecast_webrtc::{Endpoint, EndpointConfig, PublisherInfo, RoomClient};
use serde_json::{json, Value};

/// A room with two SDK connections on one shard: `me`, whose requests are
/// the input, and `other`, joined, publishing `audio` and `video`.
pub struct RpcRig {
    config: EndpointConfig,
    offer: String,
    names: Vec<(String, String)>,
    directory: Directory,
    shard: flume::Receiver<ShardCommand>,
    me: ConnId,
    now: Instant,
    pub answered: usize,
}

impl RpcRig {
    pub fn new() -> RpcRig {
        let config = EndpointConfig::new(vec!["127.0.0.1:9000".parse().unwrap()]);
        let now = Instant::now();
        let local = "127.0.0.1:5000".parse().unwrap();
        let publish = [("audio", MediaKind::Audio), ("video", MediaKind::Video)];
        let (client, offer) = RoomClient::new(&config, now, local, &publish, 2, 2).unwrap();
        let body: Value =
            serde_json::from_str(&client.connect_body("r", "x", &offer, json!({}))).unwrap();
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
        let (tx, shard) = flume::unbounded();
        let mut rig = RpcRig {
            config,
            offer,
            names,
            directory: Directory::new(vec![tx], false, 1),
            shard,
            me: ConnId(0),
            now,
            answered: 0,
        };
        let other = rig.connect("other");
        rig.send(other, r#"{"id":1,"request":"join","protocol":1}"#);
        rig.me = rig.connect("me");
        rig.send(rig.me, r#"{"id":1,"request":"join","protocol":1}"#);
        rig.drain();
        rig
    }

    /// A placed SDK connection of `peer`.
    fn connect(&mut self, peer: &str) -> ConnId {
        let who = PublisherInfo {
            room: "r".into(),
            peer: peer.into(),
        };
        let (endpoint, _) =
            Endpoint::peer(&self.config, self.now, &self.offer, who, self.names.clone()).unwrap();
        let Some(RouteKey::IceUfrag(ufrag)) = endpoint.route_key() else {
            unreachable!("a WebRTC endpoint has a ufrag")
        };
        let conn = self.directory.next_conn_id();
        let d = &mut self.directory;
        d.add_peer("r", peer, conn, Box::new(endpoint), json!({}), self.now, 0);
        let datagram = Datagram {
            at: self.now,
            source: "127.0.0.1:5000".parse().unwrap(),
            destination: "127.0.0.1:9000".parse().unwrap(),
            contents: Vec::new(),
        };
        let claim = ControlEvent::Claim {
            shard: 0,
            ufrag,
            datagram,
        };
        d.on_event(self.now, claim, &[]);
        d.on_event(self.now, ControlEvent::Adopted { conn, shard: 0 }, &[]);
        conn
    }

    fn send(&mut self, conn: ConnId, text: &str) {
        let event = ControlEvent::Rpc {
            conn,
            text: text.to_string(),
        };
        self.directory.on_event(self.now, event, &[]);
    }

    /// What the directory told `me`'s shard: every RPC message is a JSON
    /// object, an answer or an event.
    fn drain(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        for cmd in self.shard.try_iter() {
            if let ShardCommand::Rpc { conn, text } = cmd {
                let v: Value = serde_json::from_str(&text).expect("the server sends JSON");
                assert!(v.is_object(), "{text}");
                assert!(v.get("id").is_some() || v.get("event").is_some(), "{text}");
                if conn == self.me {
                    out.push(v);
                }
            }
        }
        out
    }

    /// One input: text from `me`'s data channel (the endpoint passes only
    /// UTF-8). Exactly one reply comes first: the answer (with the
    /// request's id) or, for what is not a JSON object, an error event.
    pub fn rpc(&mut self, data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        self.now += Duration::from_millis(1);
        self.send(self.me, text);
        let replies = self.drain();
        let object = serde_json::from_str::<Value>(text).is_ok_and(|v| v.is_object());
        let leave = replies
            .first()
            .is_some_and(|r| r["ok"] == true && text.contains("leave"));
        match replies.first() {
            Some(first) if object => {
                assert!(first.get("ok").is_some(), "answered first: {first}");
                self.answered += 1;
            }
            Some(first) => assert_eq!(first["code"], "bad_request", "{first}"),
            None => panic!("no reply to {text:?}"),
        }
        if leave || self.directory.conn_room(self.me).is_none() {
            // It left: a new connection takes its place.
            self.me = self.connect("me");
            self.send(self.me, r#"{"id":1,"request":"join","protocol":1}"#);
            self.drain();
        }
    }
}

impl Default for RpcRig {
    fn default() -> RpcRig {
        RpcRig::new()
    }
}
