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
use corecast_sip::message::{Framing, Message};
use corecast_sip::sdp::{LocalMedia, NegotiatedMedia};
use corecast_sip::transaction::{self, Received, Transactions, Transport};
use serde_json::json;

use super::auth::{Access, Action};
use super::http::{unix_ms, valid_stream};
use super::Control;
use crate::messages::ShardCommand;

/// How often calls whose endpoint ended are hung up.
const SWEEP: Duration = Duration::from_millis(250);

/// What the SIP service is started with.
pub struct SipSetup {
    pub socket: StdUdpSocket,
    /// Our address in Via and Contact (the first `--ice-ip`, the SIP port).
    pub advertised: SocketAddr,
    /// The address calls' RTP sockets bind and SDP names.
    pub media_ip: IpAddr,
    pub rtp_ports: (u16, u16),
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
    /// Calls answered into a room.
    pub calls_answered: u64,
    /// INVITEs refused, by status.
    pub calls_refused: u64,
    /// Calls refused because no RTP port was free.
    pub no_rtp_port: u64,
    /// The calls now: conn, room, caller.
    pub active: Vec<(ConnId, String, String)>,
}

/// A call answered into a room.
struct Active {
    conn: ConnId,
    room: String,
    from: String,
    /// Where its INVITE came from (our BYE goes there when the Contact
    /// does not resolve).
    source: SocketAddr,
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
    /// The source of the datagram being handled.
    last_source: Option<SocketAddr>,
    stats: SipStats,
}

/// Runs the SIP service on the control thread's runtime.
pub async fn run(control: Arc<Control>, setup: SipSetup) {
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
        last_source: None,
        stats: SipStats {
            on: true,
            ..SipStats::default()
        },
    };
    let mut buf = vec![0u8; 65_536];
    let mut next_sweep = Instant::now() + SWEEP;
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
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
        }
        let now = Instant::now();
        service.txs.handle_timeout(now);
        if now >= next_sweep {
            next_sweep = now + SWEEP;
            service.sweep(now);
        }
        service.pump(now);
        service.publish_stats();
    }
}

impl Service {
    fn datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        // Keep-alive CRLFs (RFC 5626) are not messages.
        if data.iter().all(|b| b.is_ascii_whitespace()) {
            return;
        }
        let message = match Message::parse(data, Framing::Datagram) {
            Ok(m) => m,
            Err(e) => {
                self.stats.parse_errors += 1;
                tracing::debug!("sip from {from}: {e}");
                return;
            }
        };
        let received = self.txs.receive(now, message, from, Transport::Unreliable);
        if let Received::Refused(why) = &received {
            tracing::debug!("sip from {from}: refused {why:?}");
        }
        // A new call's Incoming comes out of this receive's pump.
        self.last_source = Some(from);
        self.calls.receive(now, received);
        self.pump(now);
        self.last_source = None;
    }

    /// Moves what the transaction layer and the calls have to say until
    /// both are quiet.
    fn pump(&mut self, now: Instant) {
        loop {
            let mut busy = false;
            while let Some(out) = self.txs.poll_output() {
                busy = true;
                match out {
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
                request_uri,
                offer,
                ..
            } => {
                let source = self.last_source;
                if let Err(status) = self.answer(now, call, &from.uri, &request_uri, offer, source)
                {
                    self.stats.calls_refused += 1;
                    let _ = self.calls.reject(call, status, now);
                }
            }
            dialog::Event::Established { call, .. } => {
                if let Some(a) = self.active.get(&call) {
                    tracing::info!("sip {}: call from {} established", a.conn, a.from);
                }
            }
            dialog::Event::MediaChanged { call, media } => self.media_changed(call, &media),
            dialog::Event::Ended { call, reason, .. } => {
                let Some(a) = self.active.remove(&call) else {
                    return;
                };
                let why = match reason {
                    EndReason::RemoteBye => "sip_bye",
                    EndReason::LocalBye => "sip_local_bye",
                    EndReason::Cancelled => "sip_cancelled",
                    EndReason::NoAck => "sip_no_ack",
                    EndReason::Rejected(_) | EndReason::Unanswered => "sip_rejected",
                    EndReason::TransportError => "sip_transport_error",
                };
                tracing::info!("sip {}: call in {} ended ({why})", a.conn, a.room);
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
        let offer = offer.map_err(|e| e.status())?;
        let _ = offer;
        let room = room_of(request_uri).ok_or(404u16)?;
        if !valid_stream(&room) {
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
        if self.control.auth.check(None, &access, now_unix).is_err() {
            return Err(403);
        }
        let socket = self.bind_rtp().ok_or_else(|| {
            self.stats.no_rtp_port += 1;
            503u16
        })?;
        let local = socket.local_addr().map_err(|_| 500u16)?;
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
        let mut d = self.control.directory.lock().map_err(|_| 500u16)?;
        let conn = d.next_conn_id();
        let peer = conn.to_string();
        let setup = CallSetup {
            conn,
            local,
            media,
            audio: ChannelId::for_track(&room, &peer, "audio"),
            ssrc: rand::random(),
        };
        // The 200 is out: from here a failure hangs up instead.
        let endpoint = match SipEndpoint::new(CallConfig::default(), setup, now) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!("sip: call endpoint: {e}");
                return Ok(());
            }
        };
        let shard = d.least_loaded_shard();
        let metadata = json!({"sip": {"from": from}});
        d.add_call(
            now,
            &room,
            &peer,
            conn,
            shard,
            Box::new(endpoint),
            socket,
            metadata,
            unix_ms(),
        );
        drop(d);
        tracing::info!("sip {conn}: call from {from} into {room} (RTP {local}, shard {shard})");
        self.stats.calls_answered += 1;
        self.active.insert(
            call,
            Active {
                conn,
                room,
                from: from.to_string(),
                source: source.unwrap_or(local),
            },
        );
        Ok(())
    }

    /// A socket on the next free port of `--rtp-ports`.
    fn bind_rtp(&mut self) -> Option<StdUdpSocket> {
        let (first, last) = self.rtp_ports;
        let span = u32::from(last - first) + 1;
        for _ in 0..span {
            let port = self.next_port;
            self.next_port = if port >= last { first } else { port + 1 };
            if let Ok(s) = StdUdpSocket::bind(SocketAddr::new(self.setup_media_ip, port)) {
                let _ = s.set_nonblocking(true);
                return Some(s);
            }
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
            match self.calls.hangup(call, now) {
                Ok(bye) => {
                    let to = uri_addr(&bye.next_hop)
                        .or_else(|| self.active.get(&call).map(|a| a.source));
                    let sent = match to {
                        Some(to) => {
                            self.txs
                                .send_request(now, bye.request, to, Transport::Unreliable)
                        }
                        None => Err(transaction::TxError::Unknown),
                    };
                    self.calls.bye_sent(call, now, sent);
                }
                // Not acknowledged yet: hang up at a later sweep.
                Err(dialog::DialogError::WrongState(dialog::CallState::Accepted)) => {}
                Err(dialog::DialogError::WrongState(dialog::CallState::Terminating)) => {}
                Err(_) => {
                    self.active.remove(&call);
                }
            }
        }
    }

    fn publish_stats(&mut self) {
        self.stats.transactions = self.txs.counters();
        self.stats.transactions_held = self.txs.len();
        self.stats.calls = self.calls.counters();
        self.stats.active = self
            .active
            .values()
            .map(|a| (a.conn, a.room.clone(), a.from.clone()))
            .collect();
        if let Ok(mut s) = self.control.sip.lock() {
            *s = self.stats.clone();
        }
    }
}

/// `GET /api/sip/calls`: the calls now, with the service's counters.
pub(super) async fn list_calls(
    axum::extract::State(control): axum::extract::State<Arc<Control>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let s = match control.sip.lock() {
        Ok(s) => s.clone(),
        Err(_) => return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    if !s.on {
        return super::http::text(
            axum::http::StatusCode::NOT_FOUND,
            "SIP is off (start with --sip-port)",
        );
    }
    let calls: Vec<serde_json::Value> = s
        .active
        .iter()
        .map(|(conn, room, from)| json!({"id": conn.to_string(), "room": room, "peer": conn.to_string(), "from": from}))
        .collect();
    let c = &s.calls;
    axum::Json(json!({
        "calls": calls,
        "states": {"early": c.early, "accepted": c.accepted, "confirmed": c.confirmed, "terminating": c.terminating},
    }))
    .into_response()
}

/// `DELETE /api/sip/calls/{id}`: hangs up a call (our BYE follows within
/// a sweep). Needs the right to publish in the call's room.
pub(super) async fn hang_up(
    axum::extract::State(control): axum::extract::State<Arc<Control>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::http::StatusCode;
    let found = ConnId::parse(&id).and_then(|conn| {
        let s = control.sip.lock().ok()?;
        s.active
            .iter()
            .find(|(c, _, _)| *c == conn)
            .map(|(c, room, _)| (*c, room.clone()))
    });
    let Some((conn, room)) = found else {
        return super::http::text(StatusCode::NOT_FOUND, "no such call");
    };
    let access = Access {
        room: &room,
        action: Action::Publish,
        transport: "sip",
    };
    if let Err(r) = super::http::check_auth(&control, &headers, &access) {
        return super::http::refuse(r);
    }
    if let Ok(mut d) = control.directory.lock() {
        d.remove(Instant::now(), conn);
    }
    tracing::info!("sip {conn}: hung up through the API");
    super::http::text(StatusCode::OK, "hanging up")
}

/// The `corecast_sip_*` metrics.
pub fn render_metrics(s: &SipStats, out: &mut String) {
    use std::fmt::Write;
    let t = &s.transactions;
    let c = &s.calls;
    let rows: [(&str, &str, &str, u64); 12] = [
        (
            "corecast_sip_transactions",
            "gauge",
            "SIP transactions held.",
            s.transactions_held as u64,
        ),
        (
            "corecast_sip_transactions_total",
            "counter",
            "SIP transactions started (client and server).",
            t.client_invite + t.client_non_invite + t.server_invite + t.server_non_invite,
        ),
        (
            "corecast_sip_retransmissions_total",
            "counter",
            "SIP messages sent again by the transaction timers.",
            t.retransmissions,
        ),
        (
            "corecast_sip_transaction_timeouts_total",
            "counter",
            "SIP transactions that timed out.",
            t.timeouts,
        ),
        (
            "corecast_sip_refused_total",
            "counter",
            "SIP requests refused before a transaction (table full, RFC 2543 branch).",
            t.refused_full + t.refused_no_cookie,
        ),
        (
            "corecast_sip_parse_errors_total",
            "counter",
            "Datagrams on the SIP port that are not SIP messages within the size limit.",
            s.parse_errors,
        ),
        (
            "corecast_sip_calls_answered_total",
            "counter",
            "Calls answered into a room.",
            s.calls_answered,
        ),
        (
            "corecast_sip_calls_refused_total",
            "counter",
            "INVITEs refused (no such room, not allowed, unusable offer, no RTP port).",
            s.calls_refused,
        ),
        (
            "corecast_sip_no_rtp_port_total",
            "counter",
            "Calls refused because --rtp-ports had no free port.",
            s.no_rtp_port,
        ),
        (
            "corecast_sip_unknown_dialog_total",
            "counter",
            "In-dialog requests for a dialog that does not exist (481).",
            c.unknown_dialog,
        ),
        (
            "corecast_sip_calls_ended_total",
            "counter",
            "Calls ended, any reason.",
            c.ended_remote_bye
                + c.ended_local_bye
                + c.ended_cancelled
                + c.ended_rejected
                + c.ended_no_ack
                + c.ended_unanswered
                + c.ended_transport_error,
        ),
        (
            "corecast_sip_reinvites_total",
            "counter",
            "re-INVITEs that changed a call's media.",
            c.media_changes,
        ),
    ];
    for (name, kind, help, value) in rows {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP corecast_sip_calls SIP calls held, by state.\n# TYPE corecast_sip_calls gauge"
    );
    for (state, n) in [
        ("early", c.early),
        ("accepted", c.accepted),
        ("confirmed", c.confirmed),
        ("terminating", c.terminating),
    ] {
        let _ = writeln!(out, "corecast_sip_calls{{state=\"{state}\"}} {n}");
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
    let rest = uri
        .trim_start_matches('<')
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
        assert_eq!(uri_addr("sip:a@example.com"), None);
    }
}
