//! SIP signalling: one UDP socket (`--sip-port`) on the control thread,
//! driving `corecast-sip`'s transaction layer and call table.
//!
//! Signalling is control-plane traffic (a few messages per call); the
//! call's media runs on a shard: each answered call gets its own RTP socket
//! from `--rtp-ports`, bound here and handed with the call's endpoint to
//! the shard with the fewest connections ([`Directory::add_call`]).
//!
//! - An INVITE to `sip:ROOM@host` joins room ROOM as a peer named after
//!   its connection, publishing `audio`, when the node's auth lets a
//!   publisher without a token in (a node with `--token` or
//!   `--auth-secret` refuses it 403: phones carry no room tokens).
//! - The dialog's end (BYE, CANCEL, no ACK) closes the endpoint; the
//!   endpoint's end (no RTP, `DELETE /api/...`, the room replaced it) ends
//!   the dialog with our BYE.
//! - A re-INVITE (hold, another address) reaches the endpoint as
//!   signalling ([`corecast_sip::call::media_signal`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use corecast_media::{ChannelId, ConnId};
use corecast_sip::call::{media_signal, CallConfig, CallSetup, SipEndpoint};
use corecast_sip::dialog::{self, CallHandle, Calls, EndReason};
use corecast_sip::message::{Framing, Message, Method};
use corecast_sip::sdp::{LocalMedia, NegotiatedMedia};
use corecast_sip::transaction::{self, Received, Transactions, Transport};
use serde_json::json;

use super::auth::{Access, Action};
use super::http::{unix_ms, valid_stream};
use super::Control;
use crate::messages::ShardCommand;

mod api;
mod hooks;
mod outgoing;
mod register;
mod tcp;

pub(super) use api::{hang_up, list_calls, list_registrations, place_call, render_metrics};

/// How often calls whose endpoint ended are hung up.
const SWEEP: Duration = Duration::from_millis(250);

/// What the SIP service is started with.
pub struct SipSetup {
    pub socket: StdUdpSocket,
    /// The TCP listener on the same port.
    pub tcp: Option<std::net::TcpListener>,
    /// Our address in Via and Contact (the first `--ice-ip`, the SIP port).
    pub advertised: SocketAddr,
    /// The address calls' RTP sockets bind and SDP names.
    pub media_ip: IpAddr,
    pub rtp_ports: (u16, u16),
    /// How long a call we place may ring before we cancel it.
    pub ring_timeout: Duration,
    /// The application's hook, base URL.
    pub hook: Option<String>,
    /// Who may register (`[[sip.users]]`).
    pub users: Vec<crate::config::SipUser>,
    /// This node's id (in registrations' session ids).
    pub node: u32,
    /// The cluster secret, when clustered: digest nonces any node checks.
    pub shared_secret: Option<String>,
}

/// Counters of the SIP service, for `/metrics` and `/api/sip/calls`.
#[derive(Debug, Default, Clone)]
pub struct SipStats {
    pub on: bool,
    pub transactions: transaction::Counters,
    pub transactions_held: usize,
    pub calls: dialog::Counters,
    /// Datagrams that are not SIP messages (or over the size limit).
    pub parse_errors: u64,
    /// TCP connections held now, and those closed for bad input.
    pub tcp_connections: usize,
    pub tcp_bad_input: u64,
    /// Calls answered into a room.
    pub calls_answered: u64,
    /// INVITEs refused, by status.
    pub calls_refused: u64,
    /// Calls refused because no RTP port was free.
    pub no_rtp_port: u64,
    /// The calls now, as `/api/sip/calls` lists them.
    pub active: Vec<CallInfo>,
    pub registrar: corecast_sip::registrar::RegistrarCounters,
    /// Requests refused because their source failed too often.
    pub blocked_requests: u64,
    /// The bindings, as `/api/sip/registrations` shows them.
    pub registrations: Vec<serde_json::Value>,
}

/// A call as `/api/sip/calls` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CallInfo {
    /// Its connection id (the call's id in the API).
    pub id: String,
    pub room: String,
    /// Its peer name in the room.
    pub peer: String,
    /// `in` (a phone called) or `out` (`POST /api/sip/calls`).
    pub direction: &'static str,
    /// `calling`, `ringing` (out only), `connected`.
    pub state: &'static str,
    /// The other side's URI.
    pub remote: String,
}

/// A call in a room (answered, or ours and answered).
struct Active {
    conn: ConnId,
    room: String,
    peer: String,
    /// The other side's URI.
    remote: String,
    /// Where its INVITE came from, or where ours went (our BYE goes there
    /// when the Contact does not resolve).
    source: SocketAddr,
    outgoing: bool,
    /// The room was told the call ended already (an unusable answer).
    end_told: bool,
    /// How its signalling travels (a call in over TCP: on its connection).
    transport: Transport,
}

/// What the HTTP API asks of the SIP service.
pub enum SipCommand {
    /// `POST /api/sip/calls` (`forwarded`: by another node, which found
    /// the callee registered here; never forwarded again).
    Call {
        request: outgoing::CallRequest,
        forwarded: bool,
        reply: tokio::sync::oneshot::Sender<Result<outgoing::CallAnswer, (u16, String)>>,
    },
    /// The hook's answer about a user (`Ok(None)`: no such user; `Err`:
    /// the hook could not be asked).
    AuthAnswer {
        user: String,
        ha1: Result<Option<String>, String>,
    },
    /// The hook's decision about a call in.
    InviteAnswer {
        call: CallHandle,
        answer: Result<serde_json::Value, String>,
    },
    /// A binding of another node, from the cluster's key-value store.
    RemoteRegistration {
        up: bool,
        record: corecast_cluster::RegistrationRecord,
    },
    /// `DELETE /api/sip/calls/{id}`.
    HangUp {
        id: ConnId,
        reply: tokio::sync::oneshot::Sender<Result<(), (u16, String)>>,
    },
}

struct Service {
    control: Arc<Control>,
    socket: tokio::net::UdpSocket,
    setup_media_ip: IpAddr,
    rtp_ports: (u16, u16),
    next_port: u16,
    txs: Transactions,
    calls: Calls,
    active: HashMap<CallHandle, Active>,
    /// Calls we placed that are not answered yet.
    outgoing: HashMap<CallHandle, outgoing::Outgoing>,
    /// Our address in Via and Contact.
    advertised: SocketAddr,
    ring_timeout: Duration,
    /// The application's hook, base URL.
    hook: Option<String>,
    /// Calls in waiting for the hook's decision.
    invites: HashMap<CallHandle, hooks::PendingInvite>,
    /// REGISTERs waiting for the hook's answer about their user.
    waiting_auth: HashMap<String, Vec<(transaction::TxId, Message, SocketAddr)>>,
    /// The source of the message being handled, and its transport.
    last_source: Option<SocketAddr>,
    last_transport: Transport,
    /// TCP connections, by peer: where to write.
    tcp: HashMap<SocketAddr, tokio::sync::mpsc::Sender<axum::body::Bytes>>,
    registrations: register::Registrations,
    stats: SipStats,
}

/// How often the counters and lists behind `/metrics` and `/api/sip` are
/// refreshed.
const PUBLISH: Duration = Duration::from_millis(100);

/// Runs the SIP service on the control thread's runtime.
pub async fn run(
    control: Arc<Control>,
    setup: SipSetup,
    mut commands: tokio::sync::mpsc::Receiver<SipCommand>,
) {
    if let Err(e) = setup.socket.set_nonblocking(true) {
        tracing::error!("sip socket: {e}");
        return;
    }
    let socket = match tokio::net::UdpSocket::from_std(setup.socket) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("sip socket: {e}");
            return;
        }
    };
    let contact = format!("sip:corecast@{}", setup.advertised);
    let mut service = Service {
        control,
        socket,
        setup_media_ip: setup.media_ip,
        rtp_ports: setup.rtp_ports,
        next_port: setup.rtp_ports.0,
        txs: Transactions::new(transaction::Config::default()),
        calls: Calls::new(
            dialog::Config::new(contact, setup.advertised.to_string()),
            rand::random(),
        ),
        active: HashMap::new(),
        outgoing: HashMap::new(),
        advertised: setup.advertised,
        ring_timeout: setup.ring_timeout,
        hook: setup.hook.clone(),
        invites: HashMap::new(),
        waiting_auth: HashMap::new(),
        last_source: None,
        last_transport: Transport::Unreliable,
        tcp: HashMap::new(),
        registrations: register::Registrations::new(
            setup.node,
            &setup.users,
            setup.shared_secret.as_deref().map(str::as_bytes),
            setup.hook.is_some(),
            Instant::now(),
        ),
        stats: SipStats {
            on: true,
            ..SipStats::default()
        },
    };
    let (net_tx, mut net) = tokio::sync::mpsc::channel(1024);
    if let Some(listener) = setup.tcp {
        tcp::spawn_listener(listener, net_tx);
    }
    let mut buf = vec![0u8; 65_536];
    let mut next_sweep = Instant::now() + SWEEP;
    let mut next_publish = Instant::now() + PUBLISH;
    service.publish_stats(Instant::now());
    loop {
        let now = Instant::now();
        let wake = service
            .txs
            .next_timeout()
            .map_or(next_sweep, |t| t.min(next_sweep))
            .max(now);
        tokio::select! {
            got = service.socket.recv_from(&mut buf) => {
                if let Ok((n, from)) = got {
                    service.datagram(Instant::now(), from, &buf[..n]);
                }
            }
            Some(command) = commands.recv() => service.command(Instant::now(), command),
            Some(event) = net.recv() => service.net_event(Instant::now(), event),
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
        }
        let now = Instant::now();
        service.txs.handle_timeout(now);
        if now >= next_sweep {
            next_sweep = now + SWEEP;
            service.sweep(now);
            service.ring_timeouts(now);
            service.registrations.handle_timeout(now);
        }
        service.pump(now);
        service.flush_cluster();
        // At once when calls or registrations come or go (the API lists
        // them), else at
        // PUBLISH intervals.
        let calls = service.active.len() + service.outgoing.len();
        let bindings = service.registrations.counters().registrations;
        if now >= next_publish
            || calls != service.stats.active.len()
            || bindings != service.stats.registrar.registrations
        {
            next_publish = now + PUBLISH;
            service.publish_stats(now);
        }
    }
}

impl Service {
    fn datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.message(now, from, data, Transport::Unreliable);
    }

    /// What the TCP connections say.
    fn net_event(&mut self, now: Instant, event: tcp::NetEvent) {
        match event {
            tcp::NetEvent::Open { peer, writer } => {
                self.tcp.insert(peer, writer);
            }
            tcp::NetEvent::Message { peer, data } => {
                self.message(now, peer, &data, Transport::Reliable)
            }
            tcp::NetEvent::Closed { peer, bad_input } => {
                self.tcp.remove(&peer);
                if bad_input {
                    self.stats.tcp_bad_input += 1;
                    tracing::debug!("sip tcp: closed {peer}: a message that does not frame");
                }
            }
        }
        self.stats.tcp_connections = self.tcp.len();
    }

    /// One message from `from` over `transport`.
    fn message(&mut self, now: Instant, from: SocketAddr, data: &[u8], transport: Transport) {
        // Keep-alive CRLFs (RFC 5626) are not messages.
        if data.iter().all(|b| b.is_ascii_whitespace()) {
            return;
        }
        let framing = match transport {
            Transport::Unreliable => Framing::Datagram,
            Transport::Reliable => Framing::Stream,
        };
        let message = match Message::parse(data, framing) {
            Ok(m) => m,
            Err(e) => {
                self.stats.parse_errors += 1;
                tracing::debug!("sip from {from}: {e}");
                return;
            }
        };
        let received = self.txs.receive(now, message, from, transport);
        if let Received::Refused(why) = &received {
            tracing::debug!("sip from {from}: refused {why:?}");
        }
        if let Received::Request { id, request } = &received {
            if request.method() == Some(&Method::Register) {
                self.register(now, *id, request.clone(), from);
                self.pump(now);
                return;
            }
        }
        // A new call's Incoming comes out of this receive's pump.
        self.last_source = Some(from);
        self.last_transport = transport;
        self.calls.receive(now, received);
        self.pump(now);
        self.last_source = None;
        self.last_transport = Transport::Unreliable;
    }

    /// Moves what the transaction layer and the calls have to say until
    /// both are quiet.
    fn pump(&mut self, now: Instant) {
        loop {
            let mut busy = false;
            while let Some(out) = self.txs.poll_output() {
                busy = true;
                match out {
                    transaction::Output::Send {
                        id,
                        to,
                        data,
                        transport: Transport::Reliable,
                    } => {
                        let sent = self.tcp.get(&to).is_some_and(|w| w.try_send(data).is_ok());
                        if !sent {
                            if let Some(id) = id {
                                self.txs.transport_failed(id);
                            }
                        }
                    }
                    transaction::Output::Send { id, to, data, .. } => {
                        if self.socket.try_send_to(&data, to).is_err() {
                            if let Some(id) = id {
                                self.txs.transport_failed(id);
                            }
                        }
                    }
                    transaction::Output::Timeout { id, .. } => self.calls.timeout(now, id),
                    transaction::Output::TransportError { id, .. } => {
                        self.calls.transport_error(now, id)
                    }
                }
            }
            while let Some(out) = self.calls.poll_output() {
                busy = true;
                match out {
                    dialog::Output::Respond { tx, response } => {
                        if let Err(e) = self.txs.respond(now, tx, response) {
                            tracing::debug!("sip: response not sent: {e}");
                        }
                    }
                    dialog::Output::Event(event) => self.event(now, event),
                    // Where our INVITE went (a phone behind NAT is reached
                    // where it registered from, not at its Contact).
                    dialog::Output::SendAck {
                        call,
                        request,
                        next_hop,
                    } => {
                        let to = self
                            .active
                            .get(&call)
                            .map(|a| a.source)
                            .or_else(|| self.outgoing.get(&call).map(|o| o.destination))
                            .or_else(|| uri_addr(&next_hop));
                        match to {
                            Some(to) => {
                                self.txs.send_stateless(&request, to, Transport::Unreliable)
                            }
                            None => tracing::debug!("sip: ACK to {next_hop}: no address"),
                        }
                    }
                }
            }
            if !busy {
                return;
            }
        }
    }

    fn event(&mut self, now: Instant, event: dialog::Event) {
        match event {
            dialog::Event::Incoming {
                call,
                from,
                to,
                request_uri,
                offer,
            } => {
                let source = self.last_source;
                // A source that failed too often (wrong passwords, calls to
                // rooms that do not exist) is refused at once.
                if let Some(src) = source {
                    if !self.registrations.allow(src.ip(), now) {
                        self.stats.calls_refused += 1;
                        let _ = self.calls.reject(call, 403, now);
                        return;
                    }
                }
                if self.hook.is_some() {
                    self.ask_hook_invite(call, &from.uri, &to.uri, &request_uri, offer, source);
                    return;
                }
                if let Err(status) = self.answer(now, call, &from.uri, &request_uri, offer, source)
                {
                    if let (Some(src), 403 | 404) = (source, status) {
                        self.registrations.failed(src.ip(), now);
                    }
                    self.stats.calls_refused += 1;
                    let _ = self.calls.reject(call, status, now);
                }
            }
            dialog::Event::Established { call, media } => {
                if self.outgoing.contains_key(&call) {
                    self.answered(now, call, media);
                } else if let Some(a) = self.active.get(&call) {
                    tracing::info!("sip {}: call with {} established", a.conn, a.remote);
                }
            }
            dialog::Event::Ringing { call } => self.ringing(call),
            dialog::Event::AnswerUnusable { call } => self.answer_unusable(now, call),
            dialog::Event::MediaChanged { call, media } => self.media_changed(call, &media),
            dialog::Event::Ended { call, reason, .. } => {
                let why = match reason {
                    EndReason::RemoteBye => "sip_bye",
                    EndReason::LocalBye => "sip_local_bye",
                    EndReason::Cancelled => "sip_cancelled",
                    EndReason::NoAck => "sip_no_ack",
                    EndReason::Rejected(_) => "sip_rejected",
                    EndReason::Unanswered => "sip_unanswered",
                    EndReason::TransportError => "sip_transport_error",
                    EndReason::Refused(_) => "sip_refused",
                };
                self.invites.remove(&call);
                if self.outgoing.contains_key(&call) {
                    self.unanswered(call, why, reason);
                    return;
                }
                let Some(a) = self.active.remove(&call) else {
                    return;
                };
                tracing::info!("sip {}: call in {} ended ({why})", a.conn, a.room);
                if a.outgoing && !a.end_told {
                    self.room_event(&a.room, &a.conn.to_string(), &a.peer, "ended", Some(why));
                }
                if let Ok(mut d) = self.control.directory.lock() {
                    d.end(now, a.conn, why);
                }
            }
        }
    }

    /// Answers a new call into its room, or says which status refuses it.
    fn answer(
        &mut self,
        now: Instant,
        call: CallHandle,
        from: &str,
        request_uri: &str,
        offer: Result<NegotiatedMedia, corecast_sip::sdp::SdpError>,
        source: Option<SocketAddr>,
    ) -> Result<(), u16> {
        offer.map_err(|e| e.status())?;
        let room = room_of(request_uri).ok_or(404u16)?;
        self.answer_into(now, call, &room, None, from, source, false)
    }

    /// Answers a call into `room` as `peer` (default: its connection id).
    /// Without `by_hook`, the node's auth must let a publisher without a
    /// token into the room (a hook's decision is the application's).
    #[allow(clippy::too_many_arguments)]
    fn answer_into(
        &mut self,
        now: Instant,
        call: CallHandle,
        room: &str,
        peer: Option<String>,
        from: &str,
        source: Option<SocketAddr>,
        by_hook: bool,
    ) -> Result<(), u16> {
        let room = room.to_string();
        if !valid_stream(&room) || peer.as_deref().is_some_and(|p| !valid_stream(p)) {
            return Err(404);
        }
        if self
            .control
            .cluster
            .as_ref()
            .is_some_and(|c| c.role == corecast_cluster::NodeRole::Gateway)
        {
            return Err(503);
        }
        let access = Access {
            room: &room,
            action: Action::Publish,
            transport: "sip",
        };
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if !by_hook && self.control.auth.check(None, &access, now_unix).is_err() {
            return Err(403);
        }
        // The node's endpoint limit counts calls like any connection.
        super::http::admit(&self.control).map_err(|_| 503u16)?;
        if let Some(peer) = &peer {
            let taken = self.control.directory.lock().is_ok_and(|d| {
                d.rooms
                    .get(&room)
                    .is_some_and(|r| r.peers.contains_key(peer))
            });
            if taken {
                tracing::info!("sip: room {room} has a peer {peer} already: call refused");
                return Err(403);
            }
        }
        let socket = self.bind_rtp().ok_or_else(|| {
            self.stats.no_rtp_port += 1;
            503u16
        })?;
        let local = socket.0.local_addr().map_err(|_| 500u16)?;
        let media = self
            .calls
            .accept(
                call,
                LocalMedia {
                    address: local.ip(),
                    rtp_port: local.port(),
                },
                now,
            )
            .map_err(|_| 500u16)?;
        let source = source.unwrap_or(local);
        self.place(
            now, call, None, &room, peer, from, source, false, socket, media,
        );
        Ok(())
    }

    /// A call whose media is agreed becomes a peer of `room` (named
    /// `peer`, or after its connection): its endpoint and RTP socket go to
    /// the shard with the fewest connections.
    #[allow(clippy::too_many_arguments)]
    fn place(
        &mut self,
        now: Instant,
        call: CallHandle,
        conn: Option<ConnId>,
        room: &str,
        peer: Option<String>,
        remote: &str,
        source: SocketAddr,
        outgoing: bool,
        (socket, rtcp): (StdUdpSocket, StdUdpSocket),
        media: NegotiatedMedia,
    ) {
        let (Ok(local), Ok(rtcp_local)) = (socket.local_addr(), rtcp.local_addr()) else {
            return;
        };
        let Ok(mut d) = self.control.directory.lock() else {
            return;
        };
        let conn = conn.unwrap_or_else(|| d.next_conn_id());
        let peer = peer.unwrap_or_else(|| conn.to_string());
        let setup = CallSetup {
            conn,
            local,
            rtcp_local: Some(rtcp_local),
            wallclock: (now, SystemTime::now()),
            media,
            audio: ChannelId::for_track(room, &peer, "audio"),
            ssrc: rand::random(),
        };
        let direction = if outgoing { "out" } else { "in" };
        // A call without an endpoint is hung up by the next sweep.
        match SipEndpoint::new(CallConfig::default(), setup, now) {
            Ok(endpoint) => {
                let shard = d.least_loaded_shard();
                let metadata = json!({"sip": {"remote": remote, "direction": direction}});
                d.add_call(
                    now,
                    room,
                    &peer,
                    conn,
                    shard,
                    Box::new(endpoint),
                    [socket, rtcp],
                    metadata,
                    unix_ms(),
                );
                tracing::info!(
                    "sip {conn}: call {direction} with {remote} in {room} as {peer} \
                     (RTP {local}, shard {shard})"
                );
                self.stats.calls_answered += 1;
            }
            Err(e) => tracing::warn!("sip {conn}: no endpoint for the call: {e}"),
        }
        drop(d);
        self.active.insert(
            call,
            Active {
                conn,
                room: room.to_string(),
                peer,
                remote: remote.to_string(),
                source,
                outgoing,
                end_told: false,
                transport: if outgoing {
                    Transport::Unreliable
                } else {
                    self.last_transport
                },
            },
        );
    }

    /// An RTP socket on an even port of `--rtp-ports` and its RTCP socket
    /// on the next port (RFC 3550 §11: phones send RTCP to RTP + 1).
    fn bind_rtp(&mut self) -> Option<(StdUdpSocket, StdUdpSocket)> {
        // In u32: a range may end at 65535.
        let (first, last) = (u32::from(self.rtp_ports.0), u32::from(self.rtp_ports.1));
        let first = first + first % 2;
        if first + 1 > last {
            return None;
        }
        let pairs = (last - first).div_ceil(2);
        for _ in 0..pairs {
            let port = u32::from(self.next_port).max(first) & !1;
            let next = if port + 3 > last { first } else { port + 2 };
            self.next_port = u16::try_from(next).unwrap_or(self.rtp_ports.0);
            let (Ok(rtp_port), Ok(rtcp_port)) = (u16::try_from(port), u16::try_from(port + 1))
            else {
                continue;
            };
            let Ok(rtp) = StdUdpSocket::bind(SocketAddr::new(self.setup_media_ip, rtp_port)) else {
                continue;
            };
            let Ok(rtcp) = StdUdpSocket::bind(SocketAddr::new(self.setup_media_ip, rtcp_port))
            else {
                continue;
            };
            let _ = rtp.set_nonblocking(true);
            let _ = rtcp.set_nonblocking(true);
            return Some((rtp, rtcp));
        }
        None
    }

    fn media_changed(&mut self, call: CallHandle, media: &NegotiatedMedia) {
        let Some(a) = self.active.get(&call) else {
            return;
        };
        let Ok(mut d) = self.control.directory.lock() else {
            return;
        };
        let Some(shard) = d.conns.get(&a.conn).and_then(|c| c.shard()) else {
            return;
        };
        let (reply, _) = tokio::sync::oneshot::channel();
        d.command(
            shard,
            ShardCommand::Signal {
                conn: a.conn,
                body: media_signal(media),
                reply,
            },
        );
    }

    /// Hangs up calls whose endpoint is gone.
    fn sweep(&mut self, now: Instant) {
        let gone: Vec<CallHandle> = match self.control.directory.lock() {
            Ok(d) => self
                .active
                .iter()
                .filter(|(_, a)| !d.conns.contains_key(&a.conn))
                .map(|(c, _)| *c)
                .collect(),
            Err(_) => return,
        };
        for call in gone {
            self.hang_up_call(now, call);
        }
    }

    /// Our BYE (or, for a call we placed that is not answered, our CANCEL).
    fn hang_up_call(&mut self, now: Instant, call: CallHandle) {
        match self.calls.hangup(call, now) {
            Ok(request) => {
                // Where the call's signalling goes: where our INVITE went,
                // else the Contact, else where the phone's INVITE came from.
                let to = match (self.active.get(&call), self.outgoing.get(&call)) {
                    (_, Some(o)) => Some(o.destination),
                    (Some(a), None) if a.outgoing => Some(a.source),
                    // Over TCP: on the connection of the call's INVITE.
                    (Some(a), None) if a.transport == Transport::Reliable => Some(a.source),
                    (a, None) => uri_addr(&request.next_hop).or(a.map(|a| a.source)),
                };
                let transport = self
                    .active
                    .get(&call)
                    .map_or(Transport::Unreliable, |a| a.transport);
                let sent = match to {
                    Some(to) => self.txs.send_request(now, request.request, to, transport),
                    None => Err(transaction::TxError::Unknown),
                };
                if let Some(o) = self.outgoing.get_mut(&call) {
                    o.cancelled_at = Some(now);
                }
                self.calls.bye_sent(call, now, sent);
            }
            // Not acknowledged yet, or already hanging up: a later sweep.
            Err(dialog::DialogError::WrongState(
                dialog::CallState::Accepted | dialog::CallState::Terminating,
            )) => {}
            Err(_) => {
                self.active.remove(&call);
            }
        }
    }

    /// Our bindings' changes to the cluster's key-value store.
    fn flush_cluster(&mut self) {
        if self.registrations.cluster_out.is_empty() {
            return;
        }
        let out = std::mem::take(&mut self.registrations.cluster_out);
        if let Ok(mut d) = self.control.directory.lock() {
            for cmd in out {
                d.cluster(cmd);
            }
        }
    }

    fn publish_stats(&mut self, now: Instant) {
        self.stats.registrar = self.registrations.counters();
        self.stats.blocked_requests = self.registrations.blocked_requests();
        self.stats.registrations = self.registrations.json(now);
        self.stats.transactions = self.txs.counters();
        self.stats.transactions_held = self.txs.len();
        self.stats.calls = self.calls.counters();
        let mut active: Vec<CallInfo> = self
            .active
            .values()
            .map(|a| CallInfo {
                id: a.conn.to_string(),
                room: a.room.clone(),
                peer: a.peer.clone(),
                direction: if a.outgoing { "out" } else { "in" },
                state: "connected",
                remote: a.remote.clone(),
            })
            .collect();
        active.extend(self.outgoing.values().map(outgoing::Outgoing::info));
        self.stats.active = active;
        if let Ok(mut s) = self.control.sip.lock() {
            *s = self.stats.clone();
        }
    }
}

/// The room of a Request-URI `sip:ROOM@host[:port][;params]`.
fn room_of(uri: &str) -> Option<String> {
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))?;
    let (user, _) = rest.split_once('@')?;
    Some(user.to_string())
}

/// The address of a SIP URI with an IP literal host (`sip:u@192.0.2.1:5062`,
/// `sip:[2001:db8::1]`), default port 5060. Names are not resolved.
fn uri_addr(uri: &str) -> Option<SocketAddr> {
    let uri = uri.trim_start_matches('<');
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))?;
    let host_port = rest.split_once('@').map_or(rest, |(_, h)| h);
    let host_port = host_port.split([';', '>', '?']).next().unwrap_or(host_port);
    if let Ok(a) = host_port.parse::<SocketAddr>() {
        return Some(a);
    }
    let host = host_port.trim_start_matches('[').trim_end_matches(']');
    host.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, 5060))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_come_from_the_request_uri() {
        assert_eq!(room_of("sip:lobby@10.0.0.1:5060").as_deref(), Some("lobby"));
        assert_eq!(
            room_of("sip:lobby@host;transport=udp").as_deref(),
            Some("lobby")
        );
        assert_eq!(room_of("sip:host"), None);
        assert_eq!(room_of("tel:+123"), None);
    }

    #[test]
    fn uris_with_ip_hosts_resolve() {
        assert_eq!(
            uri_addr("sip:a@127.0.0.1:5061"),
            "127.0.0.1:5061".parse().ok()
        );
        assert_eq!(
            uri_addr("<sip:a@127.0.0.1:5061;transport=udp>"),
            "127.0.0.1:5061".parse().ok()
        );
        assert_eq!(uri_addr("sip:127.0.0.1"), "127.0.0.1:5060".parse().ok());
        assert_eq!(uri_addr("sip:[::1]:5070"), "[::1]:5070".parse().ok());
        assert_eq!(uri_addr("sip:[::1]"), "[::1]:5060".parse().ok());
        assert_eq!(
            uri_addr("<sips:a@127.0.0.1:5061>"),
            "127.0.0.1:5061".parse().ok()
        );
        assert_eq!(uri_addr("sip:a@example.com"), None);
    }
}
