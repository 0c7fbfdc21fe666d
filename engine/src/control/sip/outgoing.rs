//! Calls we place: `POST /api/sip/calls` `{to, room, peer}`.
//!
//! `to` is a SIP URI with an IP address (`sip:alice@192.0.2.7:5062`), an
//! address-of-record registered here (`alice@example.com`) or a user name
//! registered here (`alice`). A registered user is called at the contact
//! of its latest binding, and the INVITE goes where its REGISTER came from
//! (a phone behind NAT is reachable there). The call gets its id (a
//! connection id) at once; it becomes peer `peer` (default: the id) of
//! `room` when answered. The room's SDK connections get `sip_call` events
//! as it goes: `calling`, `ringing`, `answered`, `ended` with a reason.

use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::time::Instant;

use corecast_media::ConnId;
use corecast_sip::dialog::{CallHandle, EndReason};
use corecast_sip::sdp::{LocalMedia, NegotiatedMedia};
use corecast_sip::transaction::Transport;
use serde_json::json;

use super::super::http::valid_stream;
use super::{uri_addr, Active, CallInfo, Service, SipCommand};

/// The body of `POST /api/sip/calls`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallRequest {
    /// Whom to call: a SIP URI, an address-of-record or a user registered
    /// here.
    pub to: String,
    /// The room the call joins when answered.
    pub room: String,
    /// Its peer name there (default: the call's id).
    pub peer: Option<String>,
}

/// What became of a call request.
#[derive(Debug)]
pub enum CallAnswer {
    /// Placed from here.
    Placed(CallInfo),
    /// The callee is registered on another node: place it from there.
    OnNode(u32),
}

/// Where a call goes.
enum Target {
    /// From here: the Request-URI, the To header, where to send.
    Here(String, String, SocketAddr),
    /// The callee's binding is on this node.
    Node(u32),
}

/// A call we placed, not answered yet.
pub struct Outgoing {
    pub id: ConnId,
    pub room: String,
    pub peer: String,
    /// The URI called.
    pub remote: String,
    /// Where our INVITE went.
    pub destination: SocketAddr,
    /// Its RTP and RTCP sockets (offered in our SDP), until the call is
    /// placed.
    pub socket: Option<(StdUdpSocket, StdUdpSocket)>,
    pub ringing: bool,
    /// When the INVITE went out (an unanswered call is cancelled after the
    /// ring timeout, 60 s: a 100 Trying stops the transaction's own timer B).
    pub started: Instant,
    /// When we sent CANCEL (the callee must answer the INVITE 487 within
    /// 64 x T1, or the call is given up).
    pub cancelled_at: Option<Instant>,
}

/// How long a cancelled INVITE may wait for its final response (64 x T1,
/// RFC 3261 §9.1).
const CANCEL_WAIT: std::time::Duration = std::time::Duration::from_secs(32);

impl Outgoing {
    pub fn info(&self) -> CallInfo {
        CallInfo {
            id: self.id.to_string(),
            room: self.room.clone(),
            peer: self.peer.clone(),
            direction: "out",
            state: if self.ringing { "ringing" } else { "calling" },
            remote: self.remote.clone(),
        }
    }
}

type Refusal = (u16, String);

impl Service {
    pub(super) fn command(&mut self, now: Instant, command: SipCommand) {
        match command {
            SipCommand::Call {
                request,
                forwarded,
                reply,
            } => {
                let _ = reply.send(self.call_out(now, request, forwarded));
            }
            SipCommand::RemoteRegistration { up, record } => {
                self.registrations.on_remote(up, record)
            }
            SipCommand::AuthAnswer { user, ha1 } => self.on_auth_answer(now, user, ha1),
            SipCommand::InviteAnswer { call, answer } => self.on_invite_answer(now, call, answer),
            SipCommand::HangUp { id, reply } => {
                let _ = reply.send(self.hang_up_id(now, id));
            }
        }
        self.pump(now);
    }

    fn call_out(
        &mut self,
        now: Instant,
        req: CallRequest,
        forwarded: bool,
    ) -> Result<CallAnswer, Refusal> {
        let bad = |why: &str| (400, why.to_string());
        if !valid_stream(&req.room) {
            return Err(bad("room: 1-128 characters of A-Z a-z 0-9 - _ . ~"));
        }
        if let Some(peer) = &req.peer {
            if !valid_stream(peer) {
                return Err(bad("peer: 1-128 characters of A-Z a-z 0-9 - _ . ~"));
            }
        }
        if self
            .control
            .cluster
            .as_ref()
            .is_some_and(|c| c.role == corecast_cluster::NodeRole::Gateway)
        {
            return Err((
                503,
                "this node is a gateway: place calls on a media node".into(),
            ));
        }
        let (target, to_header, destination) = match self.resolve(now, &req.to, forwarded)? {
            Target::Here(target, to, destination) => (target, to, destination),
            Target::Node(node) => return Ok(CallAnswer::OnNode(node)),
        };
        super::super::http::admit(&self.control).map_err(|(_, why)| (503, why))?;
        let id = {
            let d = self
                .control
                .directory
                .lock()
                .map_err(|_| (500, "control state poisoned".to_string()))?;
            if let Some(peer) = &req.peer {
                let taken = d
                    .rooms
                    .get(&req.room)
                    .is_some_and(|r| r.peers.contains_key(peer))
                    || self
                        .outgoing
                        .values()
                        .any(|o| o.room == req.room && o.peer == *peer);
                if taken {
                    return Err((409, format!("room {} has a peer {peer}", req.room)));
                }
            }
            d.next_conn_id()
        };
        let socket = self.bind_rtp().ok_or_else(|| {
            self.stats.no_rtp_port += 1;
            (503, "no free RTP port (--rtp-ports)".to_string())
        })?;
        let local = socket
            .0
            .local_addr()
            .map_err(|e| (500, format!("RTP socket: {e}")))?;
        let from = format!("<sip:{}@{}>", req.room, self.advertised);
        let invite = self
            .calls
            .prepare_invite(
                &target,
                &to_header,
                &from,
                LocalMedia {
                    address: local.ip(),
                    rtp_port: local.port(),
                },
            )
            .map_err(|e| (400, format!("cannot call {}: {e}", req.to)))?;
        let sent = self.txs.send_request(
            now,
            invite.request.clone(),
            destination,
            Transport::Unreliable,
        );
        let call = match sent {
            Ok(tx) => self
                .calls
                .invite_sent(invite, Ok(tx))
                .ok_or_else(|| (503, "too many calls".to_string()))?,
            Err(e) => return Err((503, format!("the INVITE could not be sent: {e}"))),
        };
        let peer = req.peer.unwrap_or_else(|| id.to_string());
        let out = Outgoing {
            id,
            room: req.room,
            peer,
            remote: target,
            destination,
            socket: Some(socket),
            ringing: false,
            started: now,
            cancelled_at: None,
        };
        let info = out.info();
        tracing::info!(
            "sip {id}: calling {} at {destination} for room {}",
            out.remote,
            out.room
        );
        self.room_event(&out.room, &out.id.to_string(), &out.peer, "calling", None);
        self.outgoing.insert(call, out);
        Ok(CallAnswer::Placed(info))
    }

    /// Where a call to `to` goes: from here (Request-URI, To, the address
    /// to send to), or from the node that holds its registration.
    fn resolve(&self, now: Instant, to: &str, forwarded: bool) -> Result<Target, Refusal> {
        if to.starts_with("sip:") || to.starts_with("sips:") {
            let addr = uri_addr(to).ok_or((
                400,
                "a SIP URI to call must have an IP address (names are not resolved)".to_string(),
            ))?;
            return Ok(Target::Here(to.to_string(), format!("<{to}>"), addr));
        }
        let aor = if to.contains('@') {
            Some(to.to_ascii_lowercase())
        } else {
            self.registrations.aors_of_user(to).into_iter().next()
        };
        let here = aor.as_ref().and_then(|aor| {
            let (contact, source) = self.registrations.contacts(aor).into_iter().last()?;
            Some((aor.clone(), contact, source))
        });
        if let Some((aor, contact, source)) = here {
            let contact = contact.trim_matches(|c| c == '<' || c == '>').to_string();
            return Ok(Target::Here(contact, format!("<sip:{aor}>"), source));
        }
        if !forwarded {
            if let Some(node) = self.registrations.remote_node(to, now) {
                return Ok(Target::Node(node));
            }
        }
        Err((404, format!("{to} is not registered")))
    }

    fn hang_up_id(&mut self, now: Instant, id: ConnId) -> Result<(), Refusal> {
        if let Some(call) = self
            .outgoing
            .iter()
            .find(|(_, o)| o.id == id)
            .map(|(c, _)| *c)
        {
            self.hang_up_call(now, call);
            return Ok(());
        }
        if self.active.values().any(|a| a.conn == id) {
            if let Ok(mut d) = self.control.directory.lock() {
                d.remove(now, id);
            }
            // The sweep sends the BYE.
            return Ok(());
        }
        Err((404, "no such call".to_string()))
    }

    pub(super) fn ringing(&mut self, call: CallHandle) {
        let Some(o) = self.outgoing.get_mut(&call) else {
            return;
        };
        if o.ringing {
            return;
        }
        o.ringing = true;
        let (room, id, peer) = (o.room.clone(), o.id.to_string(), o.peer.clone());
        self.room_event(&room, &id, &peer, "ringing", None);
    }

    pub(super) fn answered(&mut self, now: Instant, call: CallHandle, media: NegotiatedMedia) {
        let Some(mut o) = self.outgoing.remove(&call) else {
            return;
        };
        let Some(socket) = o.socket.take() else {
            return;
        };
        self.room_event(&o.room, &o.id.to_string(), &o.peer, "answered", None);
        self.place(
            now,
            call,
            Some(o.id),
            &o.room,
            Some(o.peer),
            &o.remote,
            o.destination,
            true,
            socket,
            media,
        );
    }

    /// The callee answered with media we cannot use: the next sweep sends
    /// BYE (the call is listed without an endpoint).
    pub(super) fn answer_unusable(&mut self, _now: Instant, call: CallHandle) {
        let Some(o) = self.outgoing.remove(&call) else {
            return;
        };
        let id = o.id.to_string();
        self.room_event(&o.room, &id, &o.peer, "ended", Some("sip_unusable_answer"));
        self.active.insert(
            call,
            Active {
                conn: o.id,
                room: o.room,
                peer: o.peer,
                remote: o.remote,
                source: o.destination,
                outgoing: true,
                end_told: true,
                transport: Transport::Unreliable,
            },
        );
    }

    /// Cancels the calls we placed that rang too long, and gives up those
    /// whose CANCEL got no final response to the INVITE.
    pub(super) fn ring_timeouts(&mut self, now: Instant) {
        let late: Vec<CallHandle> = self
            .outgoing
            .iter()
            .filter(|(_, o)| {
                o.cancelled_at.is_none()
                    && now.saturating_duration_since(o.started) >= self.ring_timeout
            })
            .map(|(c, _)| *c)
            .collect();
        for call in late {
            if let Some(o) = self.outgoing.get(&call) {
                tracing::info!("sip {}: {} did not answer, cancelling", o.id, o.remote);
            }
            self.hang_up_call(now, call);
        }
        let stuck: Vec<CallHandle> = self
            .outgoing
            .iter()
            .filter(|(_, o)| o.cancelled_at.is_some_and(|at| now >= at + CANCEL_WAIT))
            .map(|(c, _)| *c)
            .collect();
        for call in stuck {
            self.calls.abandon(call, now);
        }
    }

    /// A call we placed ended before it was answered.
    pub(super) fn unanswered(&mut self, call: CallHandle, why: &str, reason: EndReason) {
        let Some(o) = self.outgoing.remove(&call) else {
            return;
        };
        let detail = match reason {
            EndReason::Refused(status) => format!("{why} {status}"),
            _ => why.to_string(),
        };
        tracing::info!("sip {}: call to {} ended: {detail}", o.id, o.remote);
        self.room_event(&o.room, &o.id.to_string(), &o.peer, "ended", Some(&detail));
    }

    /// A `sip_call` event to the room's SDK connections.
    pub(super) fn room_event(
        &mut self,
        room: &str,
        id: &str,
        peer: &str,
        state: &str,
        reason: Option<&str>,
    ) {
        let mut event = json!({"event": "sip_call", "id": id, "peer": peer, "state": state});
        if let Some(reason) = reason {
            event["reason"] = reason.into();
        }
        self.hook_event(&event, room);
        if let Ok(mut d) = self.control.directory.lock() {
            d.peer_event(room, "", event);
        }
    }
}
