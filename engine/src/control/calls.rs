//! SIP calls as peers of their rooms: placed on a shard by the control
//! thread (the signalling is in `sip.rs`), listed like any peer, their
//! audio slots following the room's speakers, their key presses told to
//! the room.

use std::time::Instant;

use corecast_media::{ConnId, Endpoint};
use serde_json::{json, Value};

use super::directory::Directory;
use super::rooms::tracks_of;
use crate::messages::ShardCommand;

impl Directory {
    /// A call answered into `room` as peer `peer` (its connection's id),
    /// with its endpoint and RTP and RTCP sockets, placed on `shard`: listed in the
    /// room at once, publishing `audio`, hearing the room's loudest
    /// speakers but itself.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn add_call(
        &mut self,
        now: Instant,
        room: &str,
        peer: &str,
        conn: ConnId,
        shard: usize,
        endpoint: Box<dyn Endpoint>,
        sockets: [std::net::UdpSocket; 2],
        metadata: Value,
        since_ms: u64,
    ) {
        let tracks = tracks_of(endpoint.as_ref());
        self.insert_call(conn, room, peer, endpoint.slots(), shard, now);
        self.send(
            shard,
            ShardCommand::Place {
                conn,
                endpoint,
                sockets,
            },
        );
        self.add_local_peer(
            room,
            peer,
            conn,
            corecast_media::TransportKind::Sip,
            metadata,
            tracks,
            since_ms,
        );
        self.peer_joined(room, peer);
        self.followers.insert(conn);
        self.assign_current_speakers(now, conn);
    }

    /// A key a phone pressed: an event to the room's SDK connections.
    pub(super) fn on_dtmf(&mut self, conn: ConnId, digit: char) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let (room, peer) = (c.room.clone(), c.peer.clone());
        tracing::info!("sip {conn}: key {digit}");
        let event = json!({"event": "dtmf", "peer": peer, "digit": digit.to_string()});
        self.peer_event(&room, &peer, event);
    }
}
