//! Calls, sans-IO: the user-agent server side of a call that comes in
//! (RFC 3261 §12 dialogs, §13 the INVITE, §14 re-INVITE, §15 BYE, §9.2
//! CANCEL), and in `dialog_uac.rs` the client side of calls we place
//! ([`Calls::prepare_invite`]).
//!
//! [`Calls`] sits on top of the [`transaction`](crate::transaction) layer:
//! it takes what [`Transactions::receive`](crate::transaction::Transactions::receive)
//! hands the transaction user ([`Calls::receive`]) and the transaction
//! timeouts ([`Calls::timeout`], [`Calls::transport_error`]), and queues
//! responses for [`Transactions::respond`](crate::transaction::Transactions::respond)
//! and events for the engine ([`Calls::poll_output`]).
//!
//! A call is a dialog keyed by Call-ID, our (local) tag and the caller's
//! (remote) tag. Its life:
//! - An INVITE without a To tag and with an SDP offer makes a call in
//!   [`CallState::Early`] and an [`Event::Incoming`] with the media the
//!   offer would give (or why it is unusable). The 100 Trying is the
//!   transaction layer's. The engine answers with [`Calls::ringing`] (180),
//!   [`Calls::accept`] (200 with our SDP answer) or [`Calls::reject`].
//! - An INVITE without a body (a late offer, where our 200 would carry the
//!   offer and the ACK the answer) is refused with 488 for now, as is a
//!   re-INVITE without one; a body that is not `application/sdp` gets 415.
//! - The ACK for the 200 confirms the call ([`Event::Established`]). Without
//!   it the transaction layer times out (timer L) and the call ends with
//!   [`EndReason::NoAck`]; RFC 3261 §13.3.1.4 would have us send BYE, but
//!   the engine just drops the call's media and sends nothing more.
//! - A CANCEL before the final response: 200 to the CANCEL, 487 to the
//!   INVITE, [`EndReason::Cancelled`].
//! - In the dialog: BYE → 200 and [`EndReason::RemoteBye`]; a re-INVITE
//!   with an offer → 200 with a new answer (the `o=` version goes up) and
//!   [`Event::MediaChanged`] (hold shows in `on_hold` and `direction`);
//!   OPTIONS (in or out of a dialog) → 200 with `Allow`, `Accept`,
//!   `Supported`; a To tag that matches no call → 481; a CSeq lower than
//!   the last one → 500; an unknown method → 501, a known one we do not
//!   take here → 405 with `Allow`.
//! - [`Calls::hangup`] builds our BYE (route set, remote target, tags,
//!   CSeq) for the engine to send in a client transaction, whose id it
//!   reports with [`Calls::bye_sent`]; the final response or the timeout
//!   ends the call with [`EndReason::LocalBye`].
//!
//! Bounded: at [`Config::max_calls`] a new INVITE is answered 503 with
//! `Retry-After`, so that a proxy in front may try another node (486 would
//! tell the caller the callee is busy). REGISTER is the registrar's: the
//! engine routes it there before this table (here it would get 405).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::message::{Message, Method, ParseError, Party, StartLine, MAGIC_COOKIE};
use crate::sdp::{
    CodecName, LocalMedia, NegotiatedMedia, SdpError, SdpSession, DEFAULT_PREFERENCE,
};
use crate::transaction::{Received, TxError, TxId};

#[path = "dialog_uac.rs"]
mod uac;
pub use uac::Invite;

/// The methods a call takes, for `Allow`.
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS";

/// The body types we take, for `Accept`.
pub const ACCEPT: &str = "application/sdp";

/// The extensions we support, for `Supported`: none yet (no `100rel`,
/// `timer` or `replaces`).
pub const SUPPORTED: &str = "";

/// The default cap on calls held by one table.
pub const DEFAULT_MAX_CALLS: usize = 1024;

/// The settings of a [`Calls`] table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The most calls held at once (any state); a new INVITE over it is
    /// answered 503 with `Retry-After: 5`.
    pub max_calls: usize,
    /// Our Contact URI (`sip:corecast@192.0.2.1:5060`), the remote target
    /// the phone sends its in-dialog requests to.
    pub contact: String,
    /// Our `host:port` for the Via of requests we send (BYE).
    pub sent_by: String,
    /// The codecs we answer with, most wanted first.
    pub preference: Vec<CodecName>,
}

impl Config {
    /// A configuration with this Contact URI and Via sent-by, the default
    /// cap and codec preference.
    pub fn new(contact: impl Into<String>, sent_by: impl Into<String>) -> Config {
        Config {
            max_calls: DEFAULT_MAX_CALLS,
            contact: contact.into(),
            sent_by: sent_by.into(),
            preference: DEFAULT_PREFERENCE.to_vec(),
        }
    }
}

/// A call's handle, unique within one [`Calls`] (not the SIP Call-ID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallHandle(u64);

/// Where a call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    /// The INVITE has no final response yet.
    Early,
    /// We answered 200 and wait for the ACK.
    Accepted,
    /// The ACK came: media flows.
    Confirmed,
    /// We sent BYE and wait for its response.
    Terminating,
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The phone sent BYE.
    RemoteBye,
    /// We sent BYE ([`Calls::hangup`]); its response came, it timed out or
    /// could not be sent.
    LocalBye,
    /// The phone cancelled the INVITE before the final response.
    Cancelled,
    /// The engine refused the call ([`Calls::reject`]) with this status.
    Rejected(u16),
    /// No ACK for our 200 (to the INVITE or a re-INVITE) within timer L.
    NoAck,
    /// The engine did not answer before the transaction layer gave up
    /// (its `tu_answer` limit).
    Unanswered,
    /// A send for the call's INVITE transaction failed.
    TransportError,
    /// The callee refused our INVITE with this status (486 busy, 404, 603…).
    Refused(u16),
}

/// What a call tells the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new call: decide with [`Calls::accept`], [`Calls::ringing`],
    /// [`Calls::reject`].
    Incoming {
        /// The call.
        call: CallHandle,
        /// The caller.
        from: Party,
        /// Whom it calls.
        to: Party,
        /// The INVITE's Request-URI (`sip:ROOM@host`).
        request_uri: String,
        /// The media our answer would agree, or why the offer is unusable
        /// (reject with [`SdpError::status`]).
        offer: Result<NegotiatedMedia, SdpError>,
    },
    /// The callee of a call we placed is ringing (the first 180 or 183).
    Ringing {
        /// The call.
        call: CallHandle,
    },
    /// The callee of a call we placed answered with SDP we cannot use:
    /// hang up.
    AnswerUnusable {
        /// The call.
        call: CallHandle,
    },
    /// The ACK for our 200 came; for a call we placed, the callee's 2xx.
    Established {
        /// The call.
        call: CallHandle,
        /// The media agreed.
        media: NegotiatedMedia,
    },
    /// A re-INVITE changed the media (hold, unhold, codec, address).
    MediaChanged {
        /// The call.
        call: CallHandle,
        /// The media now agreed.
        media: NegotiatedMedia,
    },
    /// The call is gone.
    Ended {
        /// The call.
        call: CallHandle,
        /// Why.
        reason: EndReason,
        /// How long it was established, if it was.
        connected: Option<Duration>,
    },
}

/// What the table asks of the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send `response` on server transaction `tx`
    /// ([`Transactions::respond`](crate::transaction::Transactions::respond)).
    Respond {
        /// The server transaction.
        tx: TxId,
        /// The response.
        response: Message,
    },
    /// An event for the engine.
    Event(Event),
    /// Send this ACK of a 2xx to our INVITE outside any transaction
    /// ([`Transactions::send_stateless`](crate::transaction::Transactions::send_stateless)),
    /// to the address of `next_hop`.
    SendAck {
        /// The call.
        call: CallHandle,
        /// The ACK.
        request: Message,
        /// The URI to resolve and send it to.
        next_hop: String,
    },
}

/// Our BYE, from [`Calls::hangup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bye {
    /// The request, for
    /// [`Transactions::send_request`](crate::transaction::Transactions::send_request).
    pub request: Message,
    /// The URI to resolve and send it to: the first route, else the remote
    /// target (a phone behind NAT is better reached at the address its
    /// INVITE came from).
    pub next_hop: String,
}

/// Why an engine's call on a [`Calls`] was refused; nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialogError {
    /// No such call (it may have ended).
    #[error("unknown call")]
    UnknownCall,
    /// Not allowed in the call's state (accept twice, hang up before the
    /// ACK: reject an early call instead, wait for the ACK).
    #[error("not allowed in state {0:?}")]
    WrongState(CallState),
    /// The offer cannot be answered: reject with [`SdpError::status`].
    #[error("offer not usable: {0}")]
    Offer(SdpError),
    /// A rejection status outside 300–699.
    #[error("status {0} is not a rejection")]
    Status(u16),
    /// A message could not be built from what the phone sent.
    #[error("message: {0}")]
    Message(#[from] ParseError),
}

/// What the table counted; the first four are the calls held now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Calls in [`CallState::Early`].
    pub early: usize,
    /// Calls in [`CallState::Accepted`].
    pub accepted: usize,
    /// Calls in [`CallState::Confirmed`].
    pub confirmed: usize,
    /// Calls in [`CallState::Terminating`].
    pub terminating: usize,
    /// Calls created ([`Event::Incoming`]).
    pub incoming: u64,
    /// Calls established.
    pub established: u64,
    /// Re-INVITEs answered ([`Event::MediaChanged`]).
    pub media_changes: u64,
    /// Ended by [`EndReason::RemoteBye`].
    pub ended_remote_bye: u64,
    /// Ended by [`EndReason::LocalBye`].
    pub ended_local_bye: u64,
    /// Ended by [`EndReason::Cancelled`].
    pub ended_cancelled: u64,
    /// Ended by [`EndReason::Rejected`].
    pub ended_rejected: u64,
    /// Ended by [`EndReason::NoAck`].
    pub ended_no_ack: u64,
    /// Ended by [`EndReason::Unanswered`].
    pub ended_unanswered: u64,
    /// Ended by [`EndReason::TransportError`].
    pub ended_transport_error: u64,
    /// New INVITEs refused at the cap (503).
    pub refused_full: u64,
    /// INVITEs and re-INVITEs refused without an offer (488) or with a body
    /// other than SDP (415).
    pub refused_no_offer: u64,
    /// New INVITEs refused as malformed (400: no Contact).
    pub refused_bad_request: u64,
    /// Requests for no known dialog (481).
    pub unknown_dialog: u64,
    /// Calls we placed (INVITEs sent).
    pub outgoing: u64,
    /// Calls we placed that the callee refused.
    pub ended_refused: u64,
    /// In-dialog requests with a CSeq lower than the last (500).
    pub out_of_order: u64,
}

/// Call-ID, local tag, remote tag (§12).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DialogKey {
    call_id: String,
    local_tag: String,
    remote_tag: String,
}

impl DialogKey {
    /// The dialog a received request belongs to: To is us, From the phone.
    fn of_request(request: &Message) -> DialogKey {
        let s = request.summary();
        DialogKey {
            call_id: s.call_id.clone(),
            local_tag: s.to.tag.clone().unwrap_or_default(),
            remote_tag: s.from.tag.clone().unwrap_or_default(),
        }
    }

    /// The dialog a response to our request belongs to: From is us.
    fn of_response(response: &Message) -> DialogKey {
        let s = response.summary();
        DialogKey {
            call_id: s.call_id.clone(),
            local_tag: s.from.tag.clone().unwrap_or_default(),
            remote_tag: s.to.tag.clone().unwrap_or_default(),
        }
    }
}

#[derive(Debug)]
struct Call {
    key: DialogKey,
    state: CallState,
    /// The initial INVITE, for the responses to it.
    invite: Message,
    invite_tx: TxId,
    /// The raw Record-Route values of the INVITE, copied into responses.
    record_route: Vec<String>,
    /// The route set (§12.1.1: the Record-Route URIs in order).
    route_set: Vec<String>,
    /// The phone's Contact URI (updated by a re-INVITE).
    remote_target: String,
    /// The raw From and To of the INVITE (tag of From included).
    remote_party: String,
    local_party: String,
    transport: String,
    remote_cseq: u32,
    local_cseq: u32,
    sdp: SdpSession,
    local: Option<LocalMedia>,
    media: Option<NegotiatedMedia>,
    /// A 2xx to an INVITE waiting for its ACK: its transaction and CSeq.
    awaiting_ack: Option<(TxId, u32)>,
    /// Our BYE: its CSeq and, once sent, its transaction.
    bye: Option<(u32, Option<TxId>)>,
    /// The transactions mapped to this call in `Calls::by_tx`.
    txs: Vec<TxId>,
    established_at: Option<Instant>,
    /// We placed it (UAC).
    outgoing: bool,
    /// [`Event::Ringing`] was given.
    ringing_said: bool,
    /// We sent CANCEL.
    cancelled: bool,
}

/// The calls of one endpoint (a shard); see the module documentation.
#[derive(Debug)]
pub struct Calls {
    config: Config,
    calls: HashMap<CallHandle, Call>,
    by_dialog: HashMap<DialogKey, CallHandle>,
    by_tx: HashMap<TxId, CallHandle>,
    out: VecDeque<Output>,
    next_handle: u64,
    rng: u64,
    counters: Counters,
}

impl Calls {
    /// An empty table. `seed` (from a CSPRNG) feeds the tags, branches and
    /// SDP session ids it draws.
    pub fn new(config: Config, seed: u64) -> Calls {
        Calls {
            config,
            calls: HashMap::new(),
            by_dialog: HashMap::new(),
            by_tx: HashMap::new(),
            out: VecDeque::new(),
            next_handle: 0,
            rng: seed,
            counters: Counters::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// How many calls are held.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether no call is held.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// The state of a call.
    pub fn state(&self, call: CallHandle) -> Option<CallState> {
        self.calls.get(&call).map(|c| c.state)
    }

    /// The media a call agreed, once accepted.
    pub fn media(&self, call: CallHandle) -> Option<&NegotiatedMedia> {
        self.calls.get(&call).and_then(|c| c.media.as_ref())
    }

    /// What was counted, with the calls held now by state.
    pub fn counters(&self) -> Counters {
        let mut c = self.counters;
        for call in self.calls.values() {
            match call.state {
                CallState::Early => c.early += 1,
                CallState::Accepted => c.accepted += 1,
                CallState::Confirmed => c.confirmed += 1,
                CallState::Terminating => c.terminating += 1,
            }
        }
        c
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Takes what the transaction layer handed the TU.
    pub fn receive(&mut self, now: Instant, received: Received) {
        match received {
            Received::Request { id, request } => self.request(now, id, request),
            Received::Cancel {
                id,
                invite,
                request,
            } => self.cancel(now, id, invite, &request),
            Received::Ack { ack, .. } => self.ack(now, &ack),
            Received::Response { id, response } => self.response(now, id, &response),
            // A 2xx to our INVITE after its transaction: ACK it again.
            Received::Stray(response) if response.summary().cseq_method == Method::Invite => {
                if let Some(&handle) = self.by_dialog.get(&DialogKey::of_response(&response)) {
                    if self.calls.get(&handle).is_some_and(|c| c.outgoing) {
                        self.invite_response(now, handle, &response);
                    }
                }
            }
            Received::Absorbed | Received::Stray(_) | Received::Refused(_) => {}
        }
    }

    /// The transaction layer timed out transaction `id`
    /// ([`Output::Timeout`](crate::transaction::Output::Timeout)).
    pub fn timeout(&mut self, now: Instant, id: TxId) {
        self.tx_failed(now, id, false);
    }

    /// A send of transaction `id` failed
    /// ([`Output::TransportError`](crate::transaction::Output::TransportError)).
    pub fn transport_error(&mut self, now: Instant, id: TxId) {
        self.tx_failed(now, id, true);
    }

    /// Sends 180 Ringing for an early call.
    pub fn ringing(&mut self, call: CallHandle) -> Result<(), DialogError> {
        let c = self.calls.get(&call).ok_or(DialogError::UnknownCall)?;
        if c.state != CallState::Early {
            return Err(DialogError::WrongState(c.state));
        }
        let response = dialog_response(&self.config, c, &c.invite, 180, None)?;
        let tx = c.invite_tx;
        self.out.push_back(Output::Respond { tx, response });
        Ok(())
    }

    /// Accepts an early call: 200 with our SDP answer (media received at
    /// `local`), and the media agreed. The call waits for the ACK. (`now`
    /// is taken for symmetry with the other calls; nothing is timed here.)
    pub fn accept(
        &mut self,
        call: CallHandle,
        local: LocalMedia,
        now: Instant,
    ) -> Result<NegotiatedMedia, DialogError> {
        let _ = now;
        let config = &self.config;
        let c = self.calls.get_mut(&call).ok_or(DialogError::UnknownCall)?;
        if c.state != CallState::Early {
            return Err(DialogError::WrongState(c.state));
        }
        let answer = c
            .sdp
            .answer(c.invite.body(), &local, &config.preference)
            .map_err(DialogError::Offer)?;
        let response = dialog_response(config, c, &c.invite, 200, Some(answer.sdp))?;
        c.state = CallState::Accepted;
        c.local = Some(local);
        c.media = Some(answer.media.clone());
        c.awaiting_ack = Some((c.invite_tx, c.invite.summary().cseq));
        let tx = c.invite_tx;
        self.out.push_back(Output::Respond { tx, response });
        Ok(answer.media)
    }

    /// Refuses an early call with `status` (300–699: 486 busy, 603
    /// declined, 404 no such room, the offer's [`SdpError::status`]); the
    /// call ends with [`EndReason::Rejected`].
    pub fn reject(
        &mut self,
        call: CallHandle,
        status: u16,
        now: Instant,
    ) -> Result<(), DialogError> {
        if !(300..=699).contains(&status) {
            return Err(DialogError::Status(status));
        }
        let c = self.calls.get(&call).ok_or(DialogError::UnknownCall)?;
        if c.state != CallState::Early {
            return Err(DialogError::WrongState(c.state));
        }
        let mut response = Message::response(&c.invite, status, None, Some(&c.key.local_tag))?;
        if status == 488 || status == 415 {
            response = response.with_header("Accept", ACCEPT)?;
        }
        let tx = c.invite_tx;
        self.out.push_back(Output::Respond { tx, response });
        self.end(now, call, EndReason::Rejected(status));
        Ok(())
    }

    /// Hangs up a confirmed call: our BYE, which the engine sends with
    /// [`Transactions::send_request`](crate::transaction::Transactions::send_request)
    /// and reports with [`Calls::bye_sent`]. An early call is rejected
    /// instead; one waiting for its ACK cannot be hung up yet (§15). The
    /// call's connected time is counted to the final response of the BYE.
    pub fn hangup(&mut self, call: CallHandle, now: Instant) -> Result<Bye, DialogError> {
        let _ = now;
        let branch = self.draw();
        let c = self.calls.get_mut(&call).ok_or(DialogError::UnknownCall)?;
        if c.outgoing && c.state == CallState::Early {
            if c.cancelled {
                return Err(DialogError::WrongState(CallState::Terminating));
            }
            return self.cancel_outgoing(call);
        }
        if c.state != CallState::Confirmed {
            return Err(DialogError::WrongState(c.state));
        }
        let cseq = c.local_cseq.wrapping_add(1);
        let bye = build_bye(&self.config, c, cseq, branch)?;
        c.local_cseq = cseq;
        c.state = CallState::Terminating;
        c.bye = Some((cseq, None));
        Ok(bye)
    }

    /// Tells the table what became of sending our BYE: its client
    /// transaction (whose timeout or transport error then ends the call),
    /// or the refusal, which ends the call at once.
    pub fn bye_sent(&mut self, call: CallHandle, now: Instant, sent: Result<TxId, TxError>) {
        match sent {
            Ok(id) => {
                if let Some(c) = self.calls.get_mut(&call) {
                    if let Some((cseq, _)) = c.bye {
                        c.bye = Some((cseq, Some(id)));
                        c.txs.push(id);
                        self.by_tx.insert(id, call);
                    }
                }
            }
            Err(_) => {
                if self.state(call) == Some(CallState::Terminating) {
                    self.end(now, call, EndReason::LocalBye);
                }
            }
        }
    }

    fn request(&mut self, now: Instant, id: TxId, request: Message) {
        let Some(method) = request.method().cloned() else {
            return;
        };
        if request.summary().to.tag.is_some() {
            self.in_dialog(now, id, method, request);
            return;
        }
        match method {
            Method::Invite => self.new_call(id, request),
            Method::Options => self.options(id, &request),
            Method::Bye => {
                self.counters.unknown_dialog += 1;
                self.simple(id, &request, 481, &[]);
            }
            Method::Ack | Method::Cancel => {}
            other => self.not_allowed(id, &request, &other),
        }
    }

    fn new_call(&mut self, id: TxId, invite: Message) {
        if self.calls.len() >= self.config.max_calls {
            self.counters.refused_full += 1;
            self.simple(id, &invite, 503, &[("Retry-After", "5")]);
            return;
        }
        if let Some(status) = offer_refusal(&invite) {
            self.counters.refused_no_offer += 1;
            self.simple(id, &invite, status, &[("Accept", ACCEPT)]);
            return;
        }
        let s = invite.summary();
        let Some(remote_target) = s.contact.clone().filter(|c| c != "*") else {
            self.counters.refused_bad_request += 1;
            self.simple(id, &invite, 400, &[]);
            return;
        };
        let first = |name: &str| invite.header_values(name).first().map(|v| v.to_string());
        let (Some(local_party), Some(remote_party)) = (first("To"), first("From")) else {
            self.counters.refused_bad_request += 1;
            self.simple(id, &invite, 400, &[]);
            return;
        };
        let record_route: Vec<String> = invite
            .header_values("Record-Route")
            .into_iter()
            .map(str::to_owned)
            .collect();
        let route_set = record_route.iter().flat_map(|v| split_list(v)).collect();
        let local_tag = format!("{:016x}", self.draw());
        let session_id = self.draw() >> 1;
        let probe = LocalMedia {
            address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            rtp_port: 9,
        };
        let offer = SdpSession::new(0)
            .answer(invite.body(), &probe, &self.config.preference)
            .map(|a| a.media);
        let key = DialogKey {
            call_id: s.call_id.clone(),
            local_tag,
            remote_tag: s.from.tag.clone().unwrap_or_default(),
        };
        let request_uri = match invite.start_line() {
            StartLine::Request { uri, .. } => uri.clone(),
            StartLine::Response { .. } => String::new(),
        };
        let handle = CallHandle(self.next_handle);
        self.next_handle += 1;
        let event = Event::Incoming {
            call: handle,
            from: s.from.clone(),
            to: s.to.clone(),
            request_uri,
            offer,
        };
        let call = Call {
            key: key.clone(),
            state: CallState::Early,
            invite_tx: id,
            record_route,
            route_set,
            remote_target,
            remote_party,
            local_party,
            transport: s.via.transport.clone(),
            remote_cseq: s.cseq,
            local_cseq: 0,
            sdp: SdpSession::new(session_id),
            local: None,
            media: None,
            awaiting_ack: None,
            bye: None,
            txs: vec![id],
            established_at: None,
            outgoing: false,
            ringing_said: false,
            cancelled: false,
            invite,
        };
        self.calls.insert(handle, call);
        self.by_dialog.insert(key, handle);
        self.by_tx.insert(id, handle);
        self.counters.incoming += 1;
        self.out.push_back(Output::Event(event));
    }

    fn in_dialog(&mut self, now: Instant, id: TxId, method: Method, request: Message) {
        let Some(&handle) = self.by_dialog.get(&DialogKey::of_request(&request)) else {
            self.counters.unknown_dialog += 1;
            self.simple(id, &request, 481, &[]);
            return;
        };
        let cseq = request.summary().cseq;
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        if cseq < call.remote_cseq {
            self.counters.out_of_order += 1;
            self.simple(id, &request, 500, &[]);
            return;
        }
        call.remote_cseq = cseq;
        match method {
            Method::Bye => self.remote_bye(now, handle, id, &request),
            Method::Invite => self.reinvite(handle, id, request),
            Method::Options => self.options(id, &request),
            other => self.not_allowed(id, &request, &other),
        }
    }

    fn remote_bye(&mut self, now: Instant, handle: CallHandle, id: TxId, bye: &Message) {
        self.simple(id, bye, 200, &[]);
        let Some(call) = self.calls.get(&handle) else {
            return;
        };
        let reason = match call.state {
            CallState::Early => {
                // §15.1.2: the pending INVITE gets 487.
                let tx = call.invite_tx;
                if let Ok(response) =
                    Message::response(&call.invite, 487, None, Some(&call.key.local_tag))
                {
                    self.out.push_back(Output::Respond { tx, response });
                }
                EndReason::RemoteBye
            }
            // Our BYE crossed theirs: we hung up first.
            CallState::Terminating => EndReason::LocalBye,
            CallState::Accepted | CallState::Confirmed => EndReason::RemoteBye,
        };
        self.end(now, handle, reason);
    }

    fn reinvite(&mut self, handle: CallHandle, id: TxId, request: Message) {
        let Some(call) = self.calls.get(&handle) else {
            return;
        };
        match call.state {
            CallState::Confirmed => {}
            // §14.2: an INVITE still pending on the dialog.
            CallState::Early | CallState::Accepted => {
                let wait = (self.draw() % 10).to_string();
                self.simple(id, &request, 500, &[("Retry-After", &wait)]);
                return;
            }
            CallState::Terminating => {
                self.simple(id, &request, 481, &[]);
                return;
            }
        }
        if let Some(status) = offer_refusal(&request) {
            self.counters.refused_no_offer += 1;
            self.simple(id, &request, status, &[("Accept", ACCEPT)]);
            return;
        }
        let config = &self.config;
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        let Some(local) = call.local else {
            return;
        };
        let answer = match call.sdp.answer(request.body(), &local, &config.preference) {
            Ok(a) => a,
            Err(e) => {
                let status = e.status();
                self.simple(id, &request, status, &[]);
                return;
            }
        };
        let Ok(response) = dialog_response(config, call, &request, 200, Some(answer.sdp)) else {
            return;
        };
        // §12.2.2: a re-INVITE refreshes the remote target.
        if let Some(contact) = request.summary().contact.clone().filter(|c| c != "*") {
            call.remote_target = contact;
        }
        call.media = Some(answer.media.clone());
        call.awaiting_ack = Some((id, request.summary().cseq));
        call.txs.push(id);
        self.by_tx.insert(id, handle);
        self.counters.media_changes += 1;
        self.out.push_back(Output::Respond { tx: id, response });
        self.out.push_back(Output::Event(Event::MediaChanged {
            call: handle,
            media: answer.media,
        }));
    }

    fn options(&mut self, id: TxId, request: &Message) {
        self.simple(
            id,
            request,
            200,
            &[
                ("Allow", ALLOW),
                ("Accept", ACCEPT),
                ("Supported", SUPPORTED),
            ],
        );
    }

    fn not_allowed(&mut self, id: TxId, request: &Message, method: &Method) {
        if matches!(method, Method::Other(_)) {
            self.simple(id, request, 501, &[]);
        } else {
            self.simple(id, request, 405, &[("Allow", ALLOW)]);
        }
    }

    fn cancel(&mut self, now: Instant, id: TxId, invite: Option<TxId>, cancel: &Message) {
        let Some(invite) = invite else {
            self.counters.unknown_dialog += 1;
            self.simple(id, cancel, 481, &[]);
            return;
        };
        let handle = self.by_tx.get(&invite).copied();
        let call = handle.and_then(|h| self.calls.get(&h).map(|c| (h, c)));
        let Some((handle, call)) = call else {
            // The final response went out already: the CANCEL does nothing.
            self.simple(id, cancel, 200, &[]);
            return;
        };
        let tag = call.key.local_tag.clone();
        let early = call.state == CallState::Early && call.invite_tx == invite;
        let terminated = Message::response(&call.invite, 487, None, Some(&tag));
        if let Ok(response) = Message::response(cancel, 200, None, Some(&tag)) {
            self.out.push_back(Output::Respond { tx: id, response });
        }
        if early {
            if let Ok(response) = terminated {
                self.out.push_back(Output::Respond {
                    tx: invite,
                    response,
                });
            }
            self.end(now, handle, EndReason::Cancelled);
        }
    }

    fn ack(&mut self, now: Instant, ack: &Message) {
        let Some(&handle) = self.by_dialog.get(&DialogKey::of_request(ack)) else {
            return;
        };
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        let Some((tx, cseq)) = call.awaiting_ack else {
            return;
        };
        if ack.summary().cseq != cseq {
            return;
        }
        call.awaiting_ack = None;
        call.txs.retain(|&t| t != tx);
        self.by_tx.remove(&tx);
        if call.state == CallState::Accepted {
            call.state = CallState::Confirmed;
            call.established_at = Some(now);
            self.counters.established += 1;
            if let Some(media) = call.media.clone() {
                self.out.push_back(Output::Event(Event::Established {
                    call: handle,
                    media,
                }));
            }
        }
    }

    fn response(&mut self, now: Instant, id: TxId, response: &Message) {
        let handle = match self.by_tx.get(&id) {
            Some(&h) => h,
            // The engine may not have reported the BYE's transaction yet.
            None => match self.by_dialog.get(&DialogKey::of_response(response)) {
                Some(&h) => h,
                None => return,
            },
        };
        let Some(call) = self.calls.get(&handle) else {
            return;
        };
        let s = response.summary();
        if call.outgoing && s.cseq_method == Method::Invite {
            self.invite_response(now, handle, response);
            return;
        }
        let ours =
            matches!(call.bye, Some((cseq, _)) if cseq == s.cseq) && s.cseq_method == Method::Bye;
        if ours && response.status().is_some_and(|st| st >= 200) {
            self.end(now, handle, EndReason::LocalBye);
        }
    }

    fn tx_failed(&mut self, now: Instant, id: TxId, transport: bool) {
        let Some(handle) = self.by_tx.remove(&id) else {
            return;
        };
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        call.txs.retain(|&t| t != id);
        let reason = if matches!(call.bye, Some((_, Some(t))) if t == id) {
            EndReason::LocalBye
        } else if call.awaiting_ack.is_some_and(|(t, _)| t == id) {
            if transport {
                EndReason::TransportError
            } else {
                EndReason::NoAck
            }
        } else if call.state == CallState::Early && call.invite_tx == id {
            if transport {
                EndReason::TransportError
            } else {
                EndReason::Unanswered
            }
        } else {
            return;
        };
        self.end(now, handle, reason);
    }

    fn end(&mut self, now: Instant, handle: CallHandle, reason: EndReason) {
        let Some(call) = self.calls.remove(&handle) else {
            return;
        };
        self.by_dialog.remove(&call.key);
        for tx in &call.txs {
            self.by_tx.remove(tx);
        }
        let counter = match reason {
            EndReason::RemoteBye => &mut self.counters.ended_remote_bye,
            EndReason::LocalBye => &mut self.counters.ended_local_bye,
            EndReason::Cancelled => &mut self.counters.ended_cancelled,
            EndReason::Rejected(_) => &mut self.counters.ended_rejected,
            EndReason::NoAck => &mut self.counters.ended_no_ack,
            EndReason::Unanswered => &mut self.counters.ended_unanswered,
            EndReason::TransportError => &mut self.counters.ended_transport_error,
            EndReason::Refused(_) => &mut self.counters.ended_refused,
        };
        *counter += 1;
        let connected = call
            .established_at
            .map(|at| now.saturating_duration_since(at));
        self.out.push_back(Output::Event(Event::Ended {
            call: handle,
            reason,
            connected,
        }));
    }

    /// A response with only the given extra header fields; a fresh To tag
    /// when the request has none.
    fn simple(&mut self, id: TxId, request: &Message, status: u16, headers: &[(&str, &str)]) {
        let tag = format!("{:016x}", self.draw());
        let built = Message::response(request, status, None, Some(&tag)).and_then(|mut m| {
            for (name, value) in headers {
                m = m.with_header(name, value)?;
            }
            Ok(m)
        });
        if let Ok(response) = built {
            self.out.push_back(Output::Respond { tx: id, response });
        }
    }

    /// The next value of the table's generator (SplitMix64).
    fn draw(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Why an INVITE cannot be answered for want of an SDP offer: 488 without
/// a body (a late offer), 415 for a body of another type.
fn offer_refusal(invite: &Message) -> Option<u16> {
    if invite.body().is_empty() {
        return Some(488);
    }
    let sdp = invite.summary().content_type.as_deref().is_some_and(|t| {
        t.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case(ACCEPT))
    });
    (!sdp).then_some(415)
}

/// A response to an INVITE of the dialog (§12.1.1): our To tag, the
/// Record-Route copied, our Contact, `Allow`, `Supported`, and the SDP.
fn dialog_response(
    config: &Config,
    call: &Call,
    request: &Message,
    status: u16,
    sdp: Option<String>,
) -> Result<Message, ParseError> {
    let mut m = Message::response(request, status, None, Some(&call.key.local_tag))?;
    for rr in &call.record_route {
        m = m.with_header("Record-Route", rr)?;
    }
    m = m
        .with_header("Contact", &format!("<{}>", config.contact))?
        .with_header("Allow", ALLOW)?
        .with_header("Supported", SUPPORTED)?;
    if let Some(sdp) = sdp {
        m = m.with_body(ACCEPT, Bytes::from(sdp))?;
    }
    Ok(m)
}

/// Our BYE in the dialog (§12.2.1.1, §15.1.1).
fn build_bye(config: &Config, call: &Call, cseq: u32, branch: u64) -> Result<Bye, ParseError> {
    let via = format!(
        "SIP/2.0/{} {};branch={MAGIC_COOKIE}{branch:016x}",
        call.transport, config.sent_by
    );
    let from = format!("{};tag={}", call.local_party.trim_end(), call.key.local_tag);
    let cseq = format!("{cseq} BYE");
    let target = format!("<{}>", call.remote_target);
    // Loose routing (`lr`) keeps the remote target as Request-URI; a strict
    // router takes the Request-URI and the target goes last in Route.
    let (uri, routes, next_hop) = match call.route_set.first() {
        None => (
            call.remote_target.clone(),
            Vec::new(),
            call.remote_target.clone(),
        ),
        Some(first) if is_loose(first) => (
            call.remote_target.clone(),
            call.route_set.clone(),
            uri_of(first),
        ),
        Some(first) => {
            let mut routes: Vec<String> = call.route_set[1..].to_vec();
            routes.push(target);
            (uri_of(first), routes, uri_of(first))
        }
    };
    let mut headers = vec![
        ("Via", via.as_str()),
        ("Max-Forwards", "70"),
        ("From", from.as_str()),
        ("To", call.remote_party.as_str()),
        ("Call-ID", call.key.call_id.as_str()),
        ("CSeq", cseq.as_str()),
    ];
    headers.extend(routes.iter().map(|r| ("Route", r.as_str())));
    let request = Message::request(Method::Bye, &uri, &headers, None)?;
    Ok(Bye { request, next_hop })
}

/// The values of a comma-separated header field (commas inside `<>` or
/// quotes do not separate).
fn split_list(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut angle, mut quote, mut start) = (false, false, 0);
    for (i, c) in value.char_indices() {
        match c {
            '"' if !angle => quote = !quote,
            '<' if !quote => angle = true,
            '>' if !quote => angle = false,
            ',' if !angle && !quote => {
                out.push(value[start..i].trim().to_owned());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(value[start..].trim().to_owned());
    out.retain(|v| !v.is_empty());
    out
}

/// The URI of a name-addr (`<sip:p.example.com;lr>` → `sip:p.example.com;lr`).
fn uri_of(route: &str) -> String {
    match (route.find('<'), route.find('>')) {
        (Some(a), Some(b)) if a < b => route[a + 1..b].to_owned(),
        _ => route.trim().to_owned(),
    }
}

/// Whether a route's URI has the `lr` parameter (RFC 3261 §16.12.1.1).
fn is_loose(route: &str) -> bool {
    let uri = uri_of(route);
    let params = uri.split('?').next().unwrap_or("");
    params.split(';').skip(1).any(|p| {
        let name = p.split('=').next().unwrap_or("");
        name.trim().eq_ignore_ascii_case("lr")
    })
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::message::Framing;
    use crate::sdp::{Direction, SessionDescription};
    use crate::transaction::{self, Transactions, Transport};

    const OFFER: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\n\
c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

    const G729_OFFER: &str = "v=0\r\no=user1 1 1 IN IP4 127.0.0.1\r\ns=-\r\n\
c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n";

    const CALL_ID: &str = "1-4242@127.0.0.1";

    fn local() -> LocalMedia {
        LocalMedia {
            address: "192.0.2.10".parse().expect("ip"),
            rtp_port: 20000,
        }
    }

    /// A request from the phone (SIPp's uac shapes): `to_tag` for an
    /// in-dialog one, `extra` header fields after the usual ones.
    fn request(
        method: Method,
        branch: &str,
        cseq: u32,
        to_tag: Option<&str>,
        body: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Message {
        let via = format!("SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK{branch}");
        let to = match to_tag {
            Some(tag) => format!("sut <sip:room1@127.0.0.1:5060>;tag={tag}"),
            None => "sut <sip:room1@127.0.0.1:5060>".to_owned(),
        };
        let cseq = format!("{cseq} {method}");
        let mut headers = vec![
            ("Via", via.as_str()),
            ("From", "sipp <sip:sipp@127.0.0.1:5061>;tag=1"),
            ("To", to.as_str()),
            ("Call-ID", CALL_ID),
            ("CSeq", cseq.as_str()),
            ("Contact", "sip:sipp@127.0.0.1:5061"),
            ("Max-Forwards", "70"),
        ];
        headers.extend_from_slice(extra);
        let uri = "sip:room1@127.0.0.1:5060";
        Message::request(
            method,
            uri,
            &headers,
            body.map(|b| ("application/sdp", b.as_bytes())),
        )
        .expect("request")
    }

    fn invite() -> Message {
        request(Method::Invite, "inv1", 1, None, Some(OFFER), &[])
    }

    /// The phone, a transaction table and a call table in simulated time.
    /// A transaction table and a call table driven together in simulated
    /// time (the UAC tests in `dialog_uac.rs` use it too).
    pub(super) struct World {
        pub(super) txs: Transactions,
        pub(super) calls: Calls,
        pub(super) now: Instant,
        pub(super) events: Vec<Event>,
        pub(super) sent: Vec<Message>,
    }

    impl World {
        pub(super) fn new(max_calls: usize) -> World {
            let mut config = Config::new("sip:corecast@192.0.2.10:5060", "192.0.2.10:5060");
            config.max_calls = max_calls;
            World {
                txs: Transactions::new(transaction::Config::default()),
                calls: Calls::new(config, 7),
                now: Instant::now(),
                events: Vec::new(),
                sent: Vec::new(),
            }
        }

        pub(super) fn phone() -> SocketAddr {
            "127.0.0.1:5061".parse().expect("addr")
        }

        pub(super) fn deliver(&mut self, message: Message) {
            let received =
                self.txs
                    .receive(self.now, message, World::phone(), Transport::Unreliable);
            self.calls.receive(self.now, received);
            self.pump();
        }

        pub(super) fn pump(&mut self) {
            loop {
                let mut moved = false;
                while let Some(out) = self.calls.poll_output() {
                    moved = true;
                    match out {
                        Output::Respond { tx, response } => {
                            self.txs.respond(self.now, tx, response).expect("respond")
                        }
                        Output::Event(e) => self.events.push(e),
                        Output::SendAck { request, .. } => self.sent.push(request),
                    }
                }
                while let Some(out) = self.txs.poll_output() {
                    moved = true;
                    match out {
                        transaction::Output::Send { data, .. } => self
                            .sent
                            .push(Message::parse(&data, Framing::Datagram).expect("reparse")),
                        transaction::Output::Timeout { id, .. } => self.calls.timeout(self.now, id),
                        transaction::Output::TransportError { id, .. } => {
                            self.calls.transport_error(self.now, id)
                        }
                    }
                }
                if !moved {
                    break;
                }
            }
        }

        pub(super) fn advance(&mut self, by: Duration) {
            let end = self.now + by;
            while let Some(at) = self.txs.next_timeout().filter(|&t| t <= end) {
                self.now = at;
                self.txs.handle_timeout(at);
                self.pump();
            }
            self.now = end;
        }

        pub(super) fn sent(&mut self) -> Vec<Message> {
            std::mem::take(&mut self.sent)
        }

        pub(super) fn events(&mut self) -> Vec<Event> {
            std::mem::take(&mut self.events)
        }

        fn statuses(&mut self) -> Vec<u16> {
            self.sent().iter().filter_map(|m| m.status()).collect()
        }

        /// An INVITE in: the new call.
        fn incoming(&mut self, invite: Message) -> CallHandle {
            self.deliver(invite);
            match self.events().as_slice() {
                [Event::Incoming { call, .. }] => *call,
                other => panic!("expected Incoming, got {other:?}"),
            }
        }

        /// INVITE, accept, ACK: the call and our To tag.
        fn established(&mut self) -> (CallHandle, String) {
            let call = self.incoming(invite());
            self.calls.accept(call, local(), self.now).expect("accept");
            self.pump();
            let ok = self
                .sent()
                .into_iter()
                .find(|m| m.status() == Some(200))
                .expect("200");
            let tag = ok.summary().to.tag.clone().expect("to tag");
            self.advance(Duration::from_millis(50));
            self.deliver(request(Method::Ack, "ack1", 1, Some(&tag), None, &[]));
            assert!(matches!(
                self.events().as_slice(),
                [Event::Established { call: c, .. }] if *c == call
            ));
            (call, tag)
        }
    }

    #[test]
    fn accepted_call_is_established_and_ended_by_bye() {
        let mut w = World::new(8);
        let call = w.incoming(invite());
        assert_eq!(w.statuses(), vec![100]);
        assert_eq!(w.calls.state(call), Some(CallState::Early));
        let media = w.calls.accept(call, local(), w.now).expect("accept");
        assert_eq!(media.remote, Some("127.0.0.1:6000".parse().expect("addr")));
        w.pump();
        let sent = w.sent();
        let ok = sent.iter().find(|m| m.status() == Some(200)).expect("200");
        let tag = ok.summary().to.tag.clone().expect("our To tag");
        assert_eq!(
            ok.summary().contact.as_deref(),
            Some("sip:corecast@192.0.2.10:5060")
        );
        assert_eq!(ok.header_values("Allow"), vec![ALLOW]);
        assert_eq!(
            ok.summary().content_type.as_deref(),
            Some("application/sdp")
        );
        let answer = SessionDescription::parse(ok.body()).expect("answer parses");
        assert_eq!(answer.media.len(), 1);
        assert_eq!(answer.media[0].port, 20000);
        assert_eq!(answer.media[0].formats, vec!["0".to_owned()]);
        assert_eq!(answer.connection, Some("192.0.2.10".parse().expect("ip")));
        assert_eq!(w.calls.state(call), Some(CallState::Accepted));
        // The ACK confirms the call.
        w.advance(Duration::from_millis(100));
        w.deliver(request(Method::Ack, "ack1", 1, Some(&tag), None, &[]));
        match w.events().as_slice() {
            [Event::Established { call: c, media: m }] => {
                assert_eq!(*c, call);
                assert_eq!(*m, media);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(w.calls.state(call), Some(CallState::Confirmed));
        // No 2xx retransmission after the ACK, no timeout later.
        w.sent();
        w.advance(Duration::from_secs(10));
        assert!(w.sent().is_empty());
        // The phone hangs up.
        w.deliver(request(Method::Bye, "bye1", 2, Some(&tag), None, &[]));
        assert_eq!(w.statuses(), vec![200]);
        match w.events().as_slice() {
            [Event::Ended {
                call: c,
                reason: EndReason::RemoteBye,
                connected: Some(d),
            }] => {
                assert_eq!(*c, call);
                assert_eq!(*d, Duration::from_secs(10));
            }
            other => panic!("{other:?}"),
        }
        assert!(w.calls.is_empty());
        let c = w.calls.counters();
        assert_eq!((c.incoming, c.established, c.ended_remote_bye), (1, 1, 1));
        assert_eq!(c.confirmed, 0);
        w.advance(Duration::from_secs(60));
        assert!(w.txs.is_empty());
        assert!(w.events().is_empty());
    }

    #[test]
    fn cancel_before_answer_gets_487_and_200() {
        let mut w = World::new(8);
        let inv = invite();
        let call = w.incoming(inv.clone());
        w.calls.ringing(call).expect("ringing");
        w.pump();
        let sent = w.sent();
        let ringing = sent.iter().find(|m| m.status() == Some(180)).expect("180");
        let tag = ringing.summary().to.tag.clone().expect("tag");
        assert_eq!(
            ringing.summary().contact.as_deref(),
            Some("sip:corecast@192.0.2.10:5060")
        );
        w.deliver(Message::cancel_for(&inv).expect("cancel"));
        let sent = w.sent();
        let cancel_ok = sent
            .iter()
            .find(|m| m.summary().cseq_method == Method::Cancel)
            .expect("200 to CANCEL");
        assert_eq!(cancel_ok.status(), Some(200));
        let terminated = sent
            .iter()
            .find(|m| m.summary().cseq_method == Method::Invite)
            .expect("487");
        assert_eq!(terminated.status(), Some(487));
        assert_eq!(terminated.summary().to.tag.as_deref(), Some(tag.as_str()));
        assert!(matches!(
            w.events().as_slice(),
            [Event::Ended {
                reason: EndReason::Cancelled,
                connected: None,
                ..
            }]
        ));
        assert!(w.calls.is_empty());
        assert_eq!(
            w.calls.accept(call, local(), w.now),
            Err(DialogError::UnknownCall)
        );
        assert_eq!(w.calls.counters().ended_cancelled, 1);
    }

    #[test]
    fn rejected_call_gets_486() {
        let mut w = World::new(8);
        let call = w.incoming(invite());
        w.sent();
        assert_eq!(
            w.calls.reject(call, 200, w.now),
            Err(DialogError::Status(200))
        );
        w.calls.reject(call, 486, w.now).expect("reject");
        w.pump();
        assert_eq!(w.statuses(), vec![486]);
        assert!(matches!(
            w.events().as_slice(),
            [Event::Ended {
                reason: EndReason::Rejected(486),
                ..
            }]
        ));
        assert!(w.calls.is_empty());
    }

    #[test]
    fn offer_without_common_codec_is_reported_and_rejected_488() {
        let mut w = World::new(8);
        w.deliver(request(
            Method::Invite,
            "inv1",
            1,
            None,
            Some(G729_OFFER),
            &[],
        ));
        let call = match w.events().as_slice() {
            [Event::Incoming {
                call,
                offer: Err(e),
                ..
            }] => {
                assert_eq!(e.status(), 488);
                *call
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(
            w.calls.accept(call, local(), w.now),
            Err(DialogError::Offer(SdpError::NoCommonCodec))
        );
        w.sent();
        w.calls.reject(call, 488, w.now).expect("reject");
        w.pump();
        let sent = w.sent();
        assert_eq!(sent[0].status(), Some(488));
        assert_eq!(sent[0].header_values("Accept"), vec![ACCEPT]);
    }

    #[test]
    fn late_offer_is_refused_488() {
        let mut w = World::new(8);
        w.deliver(request(Method::Invite, "inv1", 1, None, None, &[]));
        assert_eq!(w.statuses(), vec![100, 488]);
        assert!(w.events().is_empty());
        assert!(w.calls.is_empty());
        assert_eq!(w.calls.counters().refused_no_offer, 1);
    }

    #[test]
    fn reinvite_holds_and_unholds() {
        let mut w = World::new(8);
        let (call, tag) = w.established();
        w.sent();
        let hold = OFFER.replace(
            "a=rtpmap:0 PCMU/8000\r\n",
            "a=rtpmap:0 PCMU/8000\r\na=sendonly\r\n",
        );
        w.deliver(request(
            Method::Invite,
            "reinv1",
            2,
            Some(&tag),
            Some(&hold),
            &[],
        ));
        let sent = w.sent();
        let ok = sent.iter().find(|m| m.status() == Some(200)).expect("200");
        let answer = SessionDescription::parse(ok.body()).expect("answer");
        assert_eq!(answer.direction_of(&answer.media[0]), Direction::RecvOnly);
        assert_eq!(
            answer.origin.as_ref().map(|o| o.version.as_str()),
            Some("2")
        );
        match w.events().as_slice() {
            [Event::MediaChanged { call: c, media }] => {
                assert_eq!(*c, call);
                assert!(media.on_hold);
                assert_eq!(media.direction, Direction::RecvOnly);
            }
            other => panic!("{other:?}"),
        }
        assert!(w.calls.media(call).is_some_and(|m| m.on_hold));
        w.deliver(request(Method::Ack, "ack2", 2, Some(&tag), None, &[]));
        w.deliver(request(
            Method::Invite,
            "reinv2",
            3,
            Some(&tag),
            Some(OFFER),
            &[],
        ));
        let sent = w.sent();
        let ok = sent.iter().find(|m| m.status() == Some(200)).expect("200");
        let answer = SessionDescription::parse(ok.body()).expect("answer");
        assert_eq!(
            answer.origin.as_ref().map(|o| o.version.as_str()),
            Some("3")
        );
        match w.events().as_slice() {
            [Event::MediaChanged { media, .. }] => {
                assert!(!media.on_hold);
                assert_eq!(media.direction, Direction::SendRecv);
            }
            other => panic!("{other:?}"),
        }
        w.deliver(request(Method::Ack, "ack3", 3, Some(&tag), None, &[]));
        // Both ACKs came: nothing times out.
        w.advance(Duration::from_secs(60));
        assert!(w.events().is_empty());
        assert_eq!(w.calls.state(call), Some(CallState::Confirmed));
        assert_eq!(w.calls.counters().media_changes, 2);
    }

    #[test]
    fn unknown_dialogs_get_481() {
        let mut w = World::new(8);
        let (call, _) = w.established();
        w.sent();
        w.deliver(request(
            Method::Bye,
            "bye1",
            2,
            Some("nosuchtag"),
            None,
            &[],
        ));
        assert_eq!(w.statuses(), vec![481]);
        w.deliver(request(Method::Bye, "bye2", 2, None, None, &[]));
        assert_eq!(w.statuses(), vec![481]);
        let lone = request(Method::Invite, "gone", 5, None, Some(OFFER), &[]);
        w.deliver(Message::cancel_for(&lone).expect("cancel"));
        assert_eq!(w.statuses(), vec![481]);
        assert_eq!(w.calls.state(call), Some(CallState::Confirmed));
        assert_eq!(w.calls.counters().unknown_dialog, 3);
        assert!(w.events().is_empty());
    }

    #[test]
    fn in_dialog_order_and_methods() {
        let mut w = World::new(8);
        let (call, tag) = w.established();
        w.sent();
        w.deliver(request(Method::Options, "opt1", 5, Some(&tag), None, &[]));
        assert_eq!(w.statuses(), vec![200]);
        // Lower than 5: out of order.
        w.deliver(request(Method::Bye, "bye1", 4, Some(&tag), None, &[]));
        assert_eq!(w.statuses(), vec![500]);
        assert_eq!(w.calls.state(call), Some(CallState::Confirmed));
        w.deliver(request(Method::Info, "info1", 6, Some(&tag), None, &[]));
        let sent = w.sent();
        assert_eq!(sent[0].status(), Some(405));
        assert_eq!(sent[0].header_values("Allow"), vec![ALLOW]);
        w.deliver(request(
            Method::Other("FOO".into()),
            "foo1",
            7,
            Some(&tag),
            None,
            &[],
        ));
        assert_eq!(w.statuses(), vec![501]);
        assert_eq!(w.calls.counters().out_of_order, 1);
    }

    #[test]
    fn options_out_of_dialog() {
        let mut w = World::new(8);
        w.deliver(request(Method::Options, "opt1", 1, None, None, &[]));
        let sent = w.sent();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].status(), Some(200));
        assert!(sent[0].summary().to.tag.is_some());
        assert_eq!(sent[0].header_values("Allow"), vec![ALLOW]);
        assert_eq!(sent[0].header_values("Accept"), vec![ACCEPT]);
        assert!(w.calls.is_empty());
    }

    #[test]
    fn hangup_sends_a_bye_the_phone_matches() {
        let mut w = World::new(8);
        let (call, tag) = w.established();
        w.sent();
        w.advance(Duration::from_secs(30));
        let bye = w.calls.hangup(call, w.now).expect("hangup");
        let s = bye.request.summary();
        assert_eq!(s.call_id, CALL_ID);
        assert_eq!(s.from.tag.as_deref(), Some(tag.as_str()));
        assert_eq!(s.from.uri, "sip:room1@127.0.0.1:5060");
        assert_eq!(s.to.tag.as_deref(), Some("1"));
        assert_eq!(s.to.uri, "sip:sipp@127.0.0.1:5061");
        assert_eq!((s.cseq, s.cseq_method.clone()), (1, Method::Bye));
        assert!(s.via.has_cookie());
        assert_eq!(s.via.sent_by, "192.0.2.10:5060");
        assert!(matches!(
            bye.request.start_line(),
            StartLine::Request { uri, .. } if uri == "sip:sipp@127.0.0.1:5061"
        ));
        assert_eq!(bye.next_hop, "sip:sipp@127.0.0.1:5061");
        assert_eq!(w.calls.state(call), Some(CallState::Terminating));
        assert_eq!(
            w.calls.hangup(call, w.now).map(|_| ()),
            Err(DialogError::WrongState(CallState::Terminating))
        );
        let sent = w.txs.send_request(
            w.now,
            bye.request.clone(),
            World::phone(),
            Transport::Unreliable,
        );
        w.calls.bye_sent(call, w.now, sent);
        w.pump();
        // The phone sees the BYE and answers it.
        let on_wire = w.sent();
        assert_eq!(on_wire[0].method(), Some(&Method::Bye));
        let ok = Message::response(&on_wire[0], 200, None, None).expect("200");
        w.deliver(ok);
        match w.events().as_slice() {
            [Event::Ended {
                call: c,
                reason: EndReason::LocalBye,
                connected: Some(d),
            }] => {
                assert_eq!(*c, call);
                assert_eq!(*d, Duration::from_secs(30));
            }
            other => panic!("{other:?}"),
        }
        assert!(w.calls.is_empty());
    }

    #[test]
    fn bye_follows_the_route_set() {
        let mut w = World::new(8);
        let rr = [
            (
                "Record-Route",
                "<sip:p1.example.com;lr>, <sip:p2.example.com;lr>",
            ),
            ("Record-Route", "<sip:p3.example.com;lr>"),
        ];
        let call = w.incoming(request(Method::Invite, "inv1", 1, None, Some(OFFER), &rr));
        w.calls.accept(call, local(), w.now).expect("accept");
        w.pump();
        let sent = w.sent();
        let ok = sent.iter().find(|m| m.status() == Some(200)).expect("200");
        assert_eq!(
            ok.header_values("Record-Route"),
            vec![
                "<sip:p1.example.com;lr>, <sip:p2.example.com;lr>",
                "<sip:p3.example.com;lr>"
            ]
        );
        let tag = ok.summary().to.tag.clone().expect("tag");
        w.deliver(request(Method::Ack, "ack1", 1, Some(&tag), None, &[]));
        let bye = w.calls.hangup(call, w.now).expect("hangup");
        assert_eq!(
            bye.request.header_values("Route"),
            vec![
                "<sip:p1.example.com;lr>",
                "<sip:p2.example.com;lr>",
                "<sip:p3.example.com;lr>"
            ]
        );
        assert_eq!(bye.next_hop, "sip:p1.example.com;lr");
        assert!(matches!(
            bye.request.start_line(),
            StartLine::Request { uri, .. } if uri == "sip:sipp@127.0.0.1:5061"
        ));
    }

    #[test]
    fn unanswered_bye_ends_the_call_at_timer_f() {
        let mut w = World::new(8);
        let (call, _) = w.established();
        let bye = w.calls.hangup(call, w.now).expect("hangup");
        let sent = w
            .txs
            .send_request(w.now, bye.request, World::phone(), Transport::Unreliable);
        w.calls.bye_sent(call, w.now, sent);
        w.advance(Duration::from_millis(31_900));
        assert!(w.events().is_empty());
        w.advance(Duration::from_millis(200));
        assert!(matches!(
            w.events().as_slice(),
            [Event::Ended {
                reason: EndReason::LocalBye,
                ..
            }]
        ));
        assert!(w.calls.is_empty());
    }

    #[test]
    fn missing_ack_ends_the_call_at_timer_l() {
        let mut w = World::new(8);
        let call = w.incoming(invite());
        w.calls.accept(call, local(), w.now).expect("accept");
        w.pump();
        w.advance(Duration::from_millis(31_900));
        assert!(w.events().is_empty());
        assert_eq!(w.calls.state(call), Some(CallState::Accepted));
        w.advance(Duration::from_millis(200));
        assert!(matches!(
            w.events().as_slice(),
            [Event::Ended {
                reason: EndReason::NoAck,
                connected: None,
                ..
            }]
        ));
        assert!(w.calls.is_empty());
        assert_eq!(w.calls.counters().ended_no_ack, 1);
    }

    #[test]
    fn the_cap_refuses_with_503() {
        let mut w = World::new(1);
        let first = w.incoming(invite());
        w.sent();
        let second = request(Method::Invite, "inv2", 1, None, Some(OFFER), &[])
            .with_header("X-Note", "second")
            .expect("header");
        // Another call: another Call-ID is not needed, the dialog is new.
        w.deliver(second);
        let sent = w.sent();
        let refused = sent.iter().find(|m| m.status() == Some(503)).expect("503");
        assert_eq!(refused.header_values("Retry-After"), vec!["5"]);
        assert!(w.events().is_empty());
        assert_eq!(w.calls.len(), 1);
        assert_eq!(w.calls.counters().refused_full, 1);
        assert_eq!(w.calls.counters().early, 1);
        // Room again once the first ends.
        w.calls.reject(first, 603, w.now).expect("reject");
        w.pump();
        w.deliver(request(Method::Invite, "inv3", 1, None, Some(OFFER), &[]));
        assert!(matches!(w.events().as_slice(), [_, Event::Incoming { .. }]));
    }

    #[test]
    fn bye_through_a_strict_router() {
        let mut w = World::new(8);
        let rr = [(
            "Record-Route",
            "<sip:strict.example.com>, <sip:p2.example.com;lr>",
        )];
        let call = w.incoming(request(Method::Invite, "inv1", 1, None, Some(OFFER), &rr));
        w.calls.accept(call, local(), w.now).expect("accept");
        w.pump();
        let sent = w.sent();
        let ok = sent.iter().find(|m| m.status() == Some(200)).expect("200");
        let tag = ok.summary().to.tag.clone().expect("tag");
        w.deliver(request(Method::Ack, "ack1", 1, Some(&tag), None, &[]));
        let bye = w.calls.hangup(call, w.now).expect("hangup");
        assert!(matches!(
            bye.request.start_line(),
            StartLine::Request { uri, .. } if uri == "sip:strict.example.com"
        ));
        assert_eq!(
            bye.request.header_values("Route"),
            vec!["<sip:p2.example.com;lr>", "<sip:sipp@127.0.0.1:5061>"]
        );
        assert_eq!(bye.next_hop, "sip:strict.example.com");
    }

    #[test]
    fn reinvite_before_the_ack_gets_500_with_retry_after() {
        let mut w = World::new(8);
        let call = w.incoming(invite());
        w.calls.accept(call, local(), w.now).expect("accept");
        w.pump();
        let sent = w.sent();
        let ok = sent.iter().find(|m| m.status() == Some(200)).expect("200");
        let tag = ok.summary().to.tag.clone().expect("tag");
        assert_eq!(
            w.calls.hangup(call, w.now).map(|_| ()),
            Err(DialogError::WrongState(CallState::Accepted))
        );
        w.deliver(request(
            Method::Invite,
            "reinv1",
            2,
            Some(&tag),
            Some(OFFER),
            &[],
        ));
        let sent = w.sent();
        let refused = sent.iter().find(|m| m.status() == Some(500)).expect("500");
        assert_eq!(refused.header_values("Retry-After").len(), 1);
        assert!(w.events().is_empty());
        assert_eq!(w.calls.state(call), Some(CallState::Accepted));
    }

    #[test]
    fn a_call_the_engine_never_answers_ends_unanswered() {
        let mut w = World::new(8);
        let call = w.incoming(invite());
        w.advance(Duration::from_secs(179));
        assert_eq!(w.calls.state(call), Some(CallState::Early));
        w.advance(Duration::from_secs(2));
        assert!(matches!(
            w.events().as_slice(),
            [Event::Ended {
                reason: EndReason::Unanswered,
                ..
            }]
        ));
        assert!(w.calls.is_empty());
        assert_eq!(w.calls.counters().ended_unanswered, 1);
    }

    #[test]
    fn helpers_split_routes() {
        assert_eq!(
            split_list("<sip:a;lr>, \"x, y\" <sip:b>"),
            vec!["<sip:a;lr>".to_owned(), "\"x, y\" <sip:b>".to_owned()]
        );
        assert!(is_loose("<sip:a.example.com;lr>"));
        assert!(!is_loose("<sip:a.example.com;lrx=1>"));
        assert_eq!(uri_of("<sip:a;lr>"), "sip:a;lr");
    }
}
