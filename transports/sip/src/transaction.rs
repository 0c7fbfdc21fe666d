//! The RFC 3261 §17 transaction layer, sans-IO.
//!
//! [`Transactions`] holds every live transaction of one endpoint (a shard):
//! client INVITE (§17.1.1, timers A, B, D), client non-INVITE (§17.1.2,
//! E, F, K), server INVITE (§17.2.1, G, H, I; an automatic 100 Trying) and
//! server non-INVITE (§17.2.2, J). Messages come in through
//! [`Transactions::receive`], which either absorbs them (a retransmission:
//! the last response is sent again; an ACK for a 3xx–6xx) or hands them to
//! the transaction user (the dialog layer). The TU sends requests with
//! [`Transactions::send_request`] and answers with
//! [`Transactions::respond`]. What goes out (datagrams, timeouts, transport
//! errors) is queued for [`Transactions::poll_output`]; time moves only by
//! [`Transactions::handle_timeout`] at [`Transactions::next_timeout`].
//!
//! 2xx responses to INVITE follow RFC 6026: the server transaction enters
//! "Accepted", retransmits the 2xx itself (the §13.3.1.4 schedule: T1,
//! doubling, capped at T2; none on a reliable transport) until the ACK
//! arrives, matched by Call-ID and CSeq since it has a branch of its own,
//! and absorbs INVITE retransmissions for 64·T1 (timer L); without an ACK by
//! then the TU gets a [`Output::Timeout`] and should end the call with BYE.
//! The client INVITE transaction likewise stays "Accepted" for 64·T1 (timer
//! M) and hands every 2xx (retransmissions too) to the TU, which sends the
//! ACK itself with [`Transactions::send_stateless`].
//!
//! Responses go back to the address the request came from (what RFC 3581
//! `rport` asks for, and what phones behind NAT need), not to the Via.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::message::{Message, Method};

/// The timer values and limits of a [`Transactions`] table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// T1, the RTT estimate: 500 ms (§17.1.1.1).
    pub t1: Duration,
    /// T2, the longest retransmission interval of non-INVITE requests and
    /// INVITE responses: 4 s.
    pub t2: Duration,
    /// T4, how long a message may stay in the network: 5 s.
    pub t4: Duration,
    /// Timer D, how long a client INVITE transaction absorbs retransmitted
    /// 3xx–6xx responses on an unreliable transport: 32 s.
    pub timer_d: Duration,
    /// How long a server transaction waits for the TU's final response
    /// before it is dropped with a [`Output::Timeout`]: 180 s (RFC 3261 has
    /// no such limit; it bounds what a TU that never answers can hold).
    pub tu_answer: Duration,
    /// The most live transactions. At the cap a new request is answered
    /// statelessly with 503 (Retry-After: 5) and [`Received::Refused`], a
    /// new client request fails with [`TxError::Full`]; both are counted.
    pub max_transactions: usize,
    /// Whether a new server INVITE transaction sends 100 Trying at once
    /// (§17.2.1; the alternative, waiting 200 ms for the TU, is not
    /// implemented).
    pub send_trying: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            timer_d: Duration::from_secs(32),
            tu_answer: Duration::from_secs(180),
            max_transactions: 4096,
            send_trying: true,
        }
    }
}

/// Whether the transport retransmits for us (§17: TCP, TLS are reliable,
/// UDP is not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP: the transaction retransmits and waits out stray copies.
    Unreliable,
    /// TCP, TLS: no retransmissions, zero waits.
    Reliable,
}

/// A transaction's handle, unique within one [`Transactions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxId(u64);

impl TxId {
    /// No transaction yet (a call being prepared); never one the table
    /// hands out.
    pub(crate) fn placeholder() -> TxId {
        TxId(u64::MAX)
    }
}

/// The four kinds of transaction (§17).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Sent an INVITE.
    ClientInvite,
    /// Sent any other request (ACK has no transaction).
    ClientNonInvite,
    /// Received an INVITE.
    ServerInvite,
    /// Received any other request but ACK.
    ServerNonInvite,
}

/// Where a transaction is (§17 figures 5–8, RFC 6026's Accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Client INVITE, nothing received yet.
    Calling,
    /// Non-INVITE, no provisional response yet.
    Trying,
    /// A provisional response was received or sent.
    Proceeding,
    /// A final response (3xx–6xx for INVITE) was received or sent.
    Completed,
    /// Server INVITE: the ACK for its 3xx–6xx arrived (timer I).
    Confirmed,
    /// INVITE answered with a 2xx (RFC 6026).
    Accepted,
}

/// What became of a received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A new request; server transaction `id` waits for the TU's
    /// [`Transactions::respond`].
    Request {
        /// The new server transaction.
        id: TxId,
        /// The request.
        request: Message,
    },
    /// A CANCEL (§9.2): server transaction `id` of its own (answer it 200,
    /// or 481 when `invite` is `None`), and the INVITE server transaction
    /// it cancels, which the TU answers 487 if still proceeding.
    Cancel {
        /// The CANCEL's own server transaction.
        id: TxId,
        /// The INVITE transaction with the same branch and sent-by.
        invite: Option<TxId>,
        /// The CANCEL.
        request: Message,
    },
    /// An ACK for a 2xx (or one that matches nothing): for the dialog.
    /// `invite` is the Accepted server transaction it acknowledges, if any;
    /// its 2xx retransmissions have stopped.
    Ack {
        /// The INVITE transaction acknowledged.
        invite: Option<TxId>,
        /// The ACK.
        ack: Message,
    },
    /// A response for client transaction `id`, for the TU.
    Response {
        /// The client transaction.
        id: TxId,
        /// The response.
        response: Message,
    },
    /// Taken by its transaction: a retransmitted request (the last response
    /// went out again), an ACK for a 3xx–6xx, a retransmitted final
    /// response (the ACK went out again).
    Absorbed,
    /// A response that matches no transaction (§18.1.2: a UA discards it;
    /// the dialog may want a retransmitted 2xx to ACK it again).
    Stray(Message),
    /// A new request refused, answered statelessly (not an ACK).
    Refused(Refusal),
}

/// Why a new request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The table is at [`Config::max_transactions`]: answered 503.
    Full,
    /// The top Via branch lacks the RFC 3261 magic cookie (an RFC 2543
    /// client, whose matching rules are not implemented): answered 400.
    NoCookie,
}

/// What the table asks of the engine and the TU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send `data` to `to`. `id` is the transaction (none for stateless
    /// sends); if sending fails, report it with
    /// [`Transactions::transport_failed`].
    Send {
        /// The transaction, if any.
        id: Option<TxId>,
        /// Where.
        to: SocketAddr,
        /// Over which kind of transport.
        transport: Transport,
        /// The printed message.
        data: Bytes,
    },
    /// Timer B, F, H, L (no ACK for a 2xx) or [`Config::tu_answer`] fired:
    /// the transaction is gone. For a client request the TU acts as if it
    /// got 408 (§8.1.3.1); for a server INVITE without ACK it ends the
    /// session with BYE (§13.3.1.4).
    Timeout {
        /// The transaction.
        id: TxId,
        /// Its kind.
        kind: Kind,
    },
    /// A send of this transaction failed (§17.1.4, §17.2.4): it is gone.
    TransportError {
        /// The transaction.
        id: TxId,
        /// Its kind.
        kind: Kind,
    },
}

/// Why the TU's call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// A response was given where a request is needed.
    #[error("not a request")]
    NotARequest,
    /// A request was given where a response is needed.
    #[error("not a response")]
    NotAResponse,
    /// ACK has no transaction: use `send_stateless`.
    #[error("ACK is sent without a transaction")]
    AckIsStateless,
    /// The top Via has no branch with the magic cookie.
    #[error("top Via branch lacks the magic cookie")]
    NoBranch,
    /// A client transaction with this branch and method exists.
    #[error("duplicate transaction")]
    Duplicate,
    /// The table is at its cap.
    #[error("transaction table full")]
    Full,
    /// No such transaction (it may have ended).
    #[error("unknown transaction")]
    Unknown,
    /// Responding on a client transaction.
    #[error("not a server transaction")]
    WrongKind,
    /// The response is not allowed in the transaction's state (a second
    /// final response, a provisional one after the final).
    #[error("response not allowed in this state")]
    WrongState,
}

/// What the table counted since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Client INVITE transactions created.
    pub client_invite: u64,
    /// Client non-INVITE transactions created.
    pub client_non_invite: u64,
    /// Server INVITE transactions created.
    pub server_invite: u64,
    /// Server non-INVITE transactions created.
    pub server_non_invite: u64,
    /// Messages sent again: by timers A, E, G and the 2xx timer, and in
    /// answer to a retransmission received.
    pub retransmissions: u64,
    /// Received retransmissions absorbed (requests, final responses, ACKs).
    pub absorbed: u64,
    /// Transactions ended by a timeout ([`Output::Timeout`]).
    pub timeouts: u64,
    /// New requests refused at the cap.
    pub refused_full: u64,
    /// New requests refused for lacking the magic cookie.
    pub refused_no_cookie: u64,
    /// Responses that matched no transaction.
    pub stray_responses: u64,
    /// Transactions ended by a transport error.
    pub transport_errors: u64,
}

/// §17.1.3 / §17.2.3: the branch, the sent-by (server side only) and the
/// method (ACK looks up INVITE).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    server: bool,
    branch: String,
    sent_by: String,
    method: Method,
}

#[derive(Debug)]
struct Tx {
    kind: Kind,
    state: State,
    transport: Transport,
    peer: SocketAddr,
    key: Key,
    /// The request that made the transaction.
    request: Message,
    /// What a retransmission sends: the request (client), the last response
    /// (server), the ACK (client INVITE, Completed).
    resend: Option<Bytes>,
    /// Timers A, E, G, 2xx: when next, and the interval that led there.
    retransmit: Option<(Instant, Duration)>,
    /// Timers B, F, H, L, M and the TU's answer deadline.
    timeout: Option<Instant>,
    /// Timers D, I, J, K.
    end: Option<Instant>,
    /// Server INVITE, Accepted: (Call-ID, CSeq) an ACK for the 2xx carries.
    ack_key: Option<(String, u32)>,
    /// Server INVITE, Accepted: the ACK arrived.
    acked: bool,
    /// The instant this transaction is filed under in the timer set.
    filed: Option<Instant>,
}

impl Tx {
    fn due(&self) -> Option<Instant> {
        [self.retransmit.map(|r| r.0), self.timeout, self.end]
            .into_iter()
            .flatten()
            .min()
    }
}

/// The transaction table of one endpoint; see the module documentation.
#[derive(Debug)]
pub struct Transactions {
    config: Config,
    txs: HashMap<TxId, Tx>,
    by_key: HashMap<Key, TxId>,
    by_ack: HashMap<(String, u32), TxId>,
    timers: BTreeSet<(Instant, TxId)>,
    out: VecDeque<Output>,
    next_id: u64,
    counters: Counters,
}

/// The To tag of stateless refusals (503 at the cap, 400): they create no
/// dialog, so one constant tag serves.
const REFUSAL_TAG: &str = "cc-refused";

impl Transactions {
    /// An empty table.
    pub fn new(config: Config) -> Transactions {
        Transactions {
            config,
            txs: HashMap::new(),
            by_key: HashMap::new(),
            by_ack: HashMap::new(),
            timers: BTreeSet::new(),
            out: VecDeque::new(),
            next_id: 0,
            counters: Counters::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// What was counted.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// How many transactions are live.
    pub fn len(&self) -> usize {
        self.txs.len()
    }

    /// Whether no transaction is live.
    pub fn is_empty(&self) -> bool {
        self.txs.is_empty()
    }

    /// The state of a live transaction.
    pub fn state(&self, id: TxId) -> Option<State> {
        self.txs.get(&id).map(|t| t.state)
    }

    /// The kind of a live transaction.
    pub fn kind(&self, id: TxId) -> Option<Kind> {
        self.txs.get(&id).map(|t| t.kind)
    }

    /// The request a live transaction was made for.
    pub fn request(&self, id: TxId) -> Option<&Message> {
        self.txs.get(&id).map(|t| &t.request)
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Transactions::handle_timeout`] should next be called.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|&(at, _)| at)
    }

    /// Fires every timer due at or before `now`, in order. Each fires at
    /// its own instant, so the schedule does not drift when called late.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, id));
            if let Some(tx) = self.txs.get_mut(&id) {
                tx.filed = None;
            }
            self.fire(id, at);
            self.refile(id);
        }
    }

    /// Takes a received message (`from` is the source address, the
    /// transport the kind it came over); see [`Received`].
    pub fn receive(
        &mut self,
        now: Instant,
        message: Message,
        from: SocketAddr,
        transport: Transport,
    ) -> Received {
        match message.method().cloned() {
            Some(method) => self.receive_request(now, method, message, from, transport),
            None => self.receive_response(now, message),
        }
    }

    /// Sends a request in a new client transaction to `to`. The request's
    /// top Via must carry a fresh branch with the magic cookie (the TU picks
    /// it). ACK is refused: it is sent with [`Transactions::send_stateless`].
    pub fn send_request(
        &mut self,
        now: Instant,
        request: Message,
        to: SocketAddr,
        transport: Transport,
    ) -> Result<TxId, TxError> {
        let method = request.method().cloned().ok_or(TxError::NotARequest)?;
        if method == Method::Ack {
            return Err(TxError::AckIsStateless);
        }
        let via = &request.summary().via;
        let branch = match &via.branch {
            Some(b) if via.has_cookie() => b.clone(),
            _ => return Err(TxError::NoBranch),
        };
        let key = Key {
            server: false,
            branch,
            sent_by: String::new(),
            method: method.clone(),
        };
        if self.by_key.contains_key(&key) {
            return Err(TxError::Duplicate);
        }
        if self.txs.len() >= self.config.max_transactions {
            self.counters.refused_full += 1;
            return Err(TxError::Full);
        }
        let data = Bytes::from(request.to_bytes());
        let invite = method == Method::Invite;
        let (kind, state) = if invite {
            self.counters.client_invite += 1;
            (Kind::ClientInvite, State::Calling)
        } else {
            self.counters.client_non_invite += 1;
            (Kind::ClientNonInvite, State::Trying)
        };
        let t1 = self.config.t1;
        let tx = Tx {
            kind,
            state,
            transport,
            peer: to,
            key: key.clone(),
            request,
            resend: Some(data.clone()),
            // Timer A or E.
            retransmit: (transport == Transport::Unreliable).then_some((now + t1, t1)),
            // Timer B or F.
            timeout: Some(now + 64 * t1),
            end: None,
            ack_key: None,
            acked: false,
            filed: None,
        };
        let id = self.insert(key, tx);
        self.send(Some(id), to, transport, data);
        Ok(id)
    }

    /// Sends the TU's response on server transaction `id` (built with
    /// [`Message::response`] from its request), moving it on per §17.2.
    pub fn respond(&mut self, now: Instant, id: TxId, response: Message) -> Result<(), TxError> {
        let status = response.status().ok_or(TxError::NotAResponse)?;
        let config = self.config;
        let tx = self.txs.get_mut(&id).ok_or(TxError::Unknown)?;
        let unreliable = tx.transport == Transport::Unreliable;
        let data = Bytes::from(response.to_bytes());
        let mut ends_now = false;
        match (tx.kind, tx.state, status) {
            (Kind::ServerInvite, State::Proceeding, 100..=199) => {}
            (Kind::ServerInvite, State::Proceeding, 200..=299) => {
                tx.state = State::Accepted;
                tx.retransmit = unreliable.then_some((now + config.t1, config.t1));
                // Timer L.
                tx.timeout = Some(now + 64 * config.t1);
                let key = (response.summary().call_id.clone(), response.summary().cseq);
                self.by_ack.insert(key.clone(), id);
                tx.ack_key = Some(key);
            }
            // A 2xx sent again by the TU, or one with other content.
            (Kind::ServerInvite, State::Accepted, 200..=299) => {}
            (Kind::ServerInvite, State::Proceeding, _) => {
                tx.state = State::Completed;
                // Timer G, timer H.
                tx.retransmit = unreliable.then_some((now + config.t1, config.t1));
                tx.timeout = Some(now + 64 * config.t1);
            }
            (Kind::ServerNonInvite, State::Trying | State::Proceeding, 100..=199) => {
                tx.state = State::Proceeding;
            }
            (Kind::ServerNonInvite, State::Trying | State::Proceeding, _) => {
                tx.state = State::Completed;
                tx.timeout = None;
                // Timer J.
                if unreliable {
                    tx.end = Some(now + 64 * config.t1);
                } else {
                    ends_now = true;
                }
            }
            (Kind::ClientInvite | Kind::ClientNonInvite, _, _) => return Err(TxError::WrongKind),
            _ => return Err(TxError::WrongState),
        }
        tx.resend = Some(data.clone());
        let (peer, transport) = (tx.peer, tx.transport);
        self.send(Some(id), peer, transport, data);
        if ends_now {
            self.remove(id);
        } else {
            self.refile(id);
        }
        Ok(())
    }

    /// Sends a message outside any transaction: the ACK for a 2xx
    /// (§13.2.2.4), a stateless response.
    pub fn send_stateless(&mut self, message: &Message, to: SocketAddr, transport: Transport) {
        self.send(None, to, transport, Bytes::from(message.to_bytes()));
    }

    /// The engine failed to send for transaction `id` (§17.1.4, §17.2.4):
    /// it ends and the TU gets [`Output::TransportError`].
    pub fn transport_failed(&mut self, id: TxId) {
        if let Some(tx) = self.remove(id) {
            self.counters.transport_errors += 1;
            self.out
                .push_back(Output::TransportError { id, kind: tx.kind });
        }
    }

    fn receive_request(
        &mut self,
        now: Instant,
        method: Method,
        request: Message,
        from: SocketAddr,
        transport: Transport,
    ) -> Received {
        let summary = request.summary();
        let via = &summary.via;
        let is_ack = method == Method::Ack;
        let branch = match &via.branch {
            Some(b) if via.has_cookie() => b.clone(),
            _ if is_ack => return self.ack_for_2xx(request),
            _ => {
                self.counters.refused_no_cookie += 1;
                self.refuse(
                    &request,
                    400,
                    "Missing Branch Magic Cookie",
                    from,
                    transport,
                );
                return Received::Refused(Refusal::NoCookie);
            }
        };
        let key = Key {
            server: true,
            branch,
            sent_by: via.sent_by.clone(),
            method: if is_ack {
                Method::Invite
            } else {
                method.clone()
            },
        };
        if let Some(&id) = self.by_key.get(&key) {
            return self.known_request(now, id, is_ack, request);
        }
        if is_ack {
            return self.ack_for_2xx(request);
        }
        if self.txs.len() >= self.config.max_transactions {
            self.counters.refused_full += 1;
            self.refuse(&request, 503, "Service Unavailable", from, transport);
            return Received::Refused(Refusal::Full);
        }
        let invite = method == Method::Invite;
        let (kind, state) = if invite {
            self.counters.server_invite += 1;
            (Kind::ServerInvite, State::Proceeding)
        } else {
            self.counters.server_non_invite += 1;
            (Kind::ServerNonInvite, State::Trying)
        };
        let trying = if invite && self.config.send_trying {
            Message::response(&request, 100, None, None)
                .ok()
                .map(|m| Bytes::from(m.to_bytes()))
        } else {
            None
        };
        let cancelled = if method == Method::Cancel {
            let invite_key = Key {
                method: Method::Invite,
                ..key.clone()
            };
            Some(self.by_key.get(&invite_key).copied())
        } else {
            None
        };
        let tx = Tx {
            kind,
            state,
            transport,
            peer: from,
            key: key.clone(),
            request: request.clone(),
            resend: trying.clone(),
            retransmit: None,
            timeout: Some(now + self.config.tu_answer),
            end: None,
            ack_key: None,
            acked: false,
            filed: None,
        };
        let id = self.insert(key, tx);
        if let Some(data) = trying {
            self.send(Some(id), from, transport, data);
        }
        match cancelled {
            Some(invite) => Received::Cancel {
                id,
                invite,
                request,
            },
            None => Received::Request { id, request },
        }
    }

    /// A request that matches server transaction `id`.
    fn known_request(
        &mut self,
        now: Instant,
        id: TxId,
        is_ack: bool,
        request: Message,
    ) -> Received {
        let config = self.config;
        let Some(tx) = self.txs.get_mut(&id) else {
            return Received::Absorbed;
        };
        if is_ack {
            match tx.state {
                State::Completed => {
                    tx.state = State::Confirmed;
                    tx.retransmit = None;
                    tx.timeout = None;
                    // Timer I.
                    if tx.transport == Transport::Unreliable {
                        tx.end = Some(now + config.t4);
                        self.refile(id);
                    } else {
                        self.remove(id);
                    }
                }
                // An ACK for the 2xx that reuses the INVITE's branch.
                State::Accepted => return self.ack_for_2xx(request),
                _ => self.counters.absorbed += 1,
            }
            return Received::Absorbed;
        }
        self.counters.absorbed += 1;
        // Accepted absorbs silently (RFC 6026 §8.5): the 2xx timer resends.
        let resend = match tx.state {
            State::Proceeding | State::Completed => tx.resend.clone(),
            _ => None,
        };
        if let Some(data) = resend {
            let (peer, transport) = (tx.peer, tx.transport);
            self.counters.retransmissions += 1;
            self.send(Some(id), peer, transport, data);
        }
        Received::Absorbed
    }

    /// An ACK without a transaction of its own: if it acknowledges an
    /// Accepted server INVITE, that one stops retransmitting its 2xx.
    fn ack_for_2xx(&mut self, ack: Message) -> Received {
        let key = (ack.summary().call_id.clone(), ack.summary().cseq);
        let invite = self.by_ack.get(&key).copied();
        if let Some(id) = invite {
            if let Some(tx) = self.txs.get_mut(&id) {
                if tx.acked {
                    self.counters.absorbed += 1;
                }
                tx.acked = true;
                tx.retransmit = None;
            }
            self.refile(id);
        }
        Received::Ack { invite, ack }
    }

    fn receive_response(&mut self, now: Instant, response: Message) -> Received {
        let summary = response.summary();
        let status = response.status().unwrap_or(0);
        let key = summary.via.branch.clone().map(|branch| Key {
            server: false,
            branch,
            sent_by: String::new(),
            method: summary.cseq_method.clone(),
        });
        let Some(id) = key.and_then(|k| self.by_key.get(&k).copied()) else {
            self.counters.stray_responses += 1;
            return Received::Stray(response);
        };
        let config = self.config;
        let Some(tx) = self.txs.get_mut(&id) else {
            return Received::Stray(response);
        };
        let unreliable = tx.transport == Transport::Unreliable;
        let mut ends_now = false;
        let mut send_ack = None;
        let pass = match (tx.kind, tx.state, status) {
            (Kind::ClientInvite, State::Calling | State::Proceeding, 100..=199) => {
                tx.state = State::Proceeding;
                tx.retransmit = None;
                tx.timeout = None;
                true
            }
            (Kind::ClientInvite, State::Calling | State::Proceeding, 200..=299) => {
                tx.state = State::Accepted;
                tx.retransmit = None;
                // Timer M (RFC 6026).
                tx.timeout = None;
                tx.end = Some(now + 64 * config.t1);
                true
            }
            // 2xx retransmissions go to the TU, which ACKs each.
            (Kind::ClientInvite, State::Accepted, 200..=299) => true,
            (Kind::ClientInvite, State::Calling | State::Proceeding, 300..) => {
                tx.state = State::Completed;
                tx.retransmit = None;
                tx.timeout = None;
                let ack = Message::ack_for(&tx.request, &response)
                    .ok()
                    .map(|m| Bytes::from(m.to_bytes()));
                tx.resend = ack.clone();
                send_ack = ack;
                // Timer D.
                if unreliable {
                    tx.end = Some(now + config.timer_d);
                } else {
                    ends_now = true;
                }
                true
            }
            (Kind::ClientInvite, State::Completed, 300..) => {
                self.counters.absorbed += 1;
                send_ack = tx.resend.clone();
                if send_ack.is_some() {
                    self.counters.retransmissions += 1;
                }
                false
            }
            (Kind::ClientNonInvite, State::Trying | State::Proceeding, 100..=199) => {
                tx.state = State::Proceeding;
                true
            }
            (Kind::ClientNonInvite, State::Trying | State::Proceeding, 200..) => {
                tx.state = State::Completed;
                tx.retransmit = None;
                tx.timeout = None;
                // Timer K.
                if unreliable {
                    tx.end = Some(now + config.t4);
                } else {
                    ends_now = true;
                }
                true
            }
            _ => {
                self.counters.absorbed += 1;
                false
            }
        };
        let (peer, transport) = (tx.peer, tx.transport);
        if let Some(ack) = send_ack {
            self.send(Some(id), peer, transport, ack);
        }
        if ends_now {
            self.remove(id);
        } else {
            self.refile(id);
        }
        if pass {
            Received::Response { id, response }
        } else {
            Received::Absorbed
        }
    }

    /// Fires the earliest timer of `id`, due at `at`.
    fn fire(&mut self, id: TxId, at: Instant) {
        let t2 = self.config.t2;
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        if tx.end.is_some_and(|e| e <= at) {
            // Timers D, I, J, K, M: the wait is over.
            self.remove(id);
            return;
        }
        if tx.timeout.is_some_and(|t| t <= at) {
            let silent = tx.state == State::Accepted && tx.acked;
            let kind = tx.kind;
            self.remove(id);
            if !silent {
                self.counters.timeouts += 1;
                self.out.push_back(Output::Timeout { id, kind });
            }
            return;
        }
        let Some((due, interval)) = tx.retransmit else {
            return;
        };
        if due > at {
            return;
        }
        let next = match (tx.kind, tx.state) {
            // Timer A doubles without a cap (B ends it at 64·T1).
            (Kind::ClientInvite, _) => interval * 2,
            // Timer E in Proceeding fires every T2.
            (Kind::ClientNonInvite, State::Proceeding) => t2,
            // Timers E, G and the 2xx timer double up to T2.
            _ => (interval * 2).min(t2),
        };
        tx.retransmit = Some((due + next, next));
        if let Some(data) = tx.resend.clone() {
            let (peer, transport) = (tx.peer, tx.transport);
            self.counters.retransmissions += 1;
            self.send(Some(id), peer, transport, data);
        }
    }

    fn refuse(
        &mut self,
        request: &Message,
        status: u16,
        reason: &str,
        to: SocketAddr,
        transport: Transport,
    ) {
        let response = Message::response(request, status, Some(reason), Some(REFUSAL_TAG))
            .and_then(|m| {
                if status == 503 {
                    m.with_header("Retry-After", "5")
                } else {
                    Ok(m)
                }
            });
        if let Ok(response) = response {
            self.send_stateless(&response, to, transport);
        }
    }

    fn send(&mut self, id: Option<TxId>, to: SocketAddr, transport: Transport, data: Bytes) {
        self.out.push_back(Output::Send {
            id,
            to,
            transport,
            data,
        });
    }

    fn insert(&mut self, key: Key, tx: Tx) -> TxId {
        let id = TxId(self.next_id);
        self.next_id += 1;
        self.by_key.insert(key, id);
        self.txs.insert(id, tx);
        self.refile(id);
        id
    }

    /// Files `id` in the timer set under its earliest timer.
    fn refile(&mut self, id: TxId) {
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        let due = tx.due();
        if tx.filed == due {
            return;
        }
        if let Some(old) = tx.filed.take() {
            self.timers.remove(&(old, id));
        }
        if let Some(at) = due {
            self.timers.insert((at, id));
            tx.filed = Some(at);
        }
    }

    fn remove(&mut self, id: TxId) -> Option<Tx> {
        let tx = self.txs.remove(&id)?;
        if self.by_key.get(&tx.key) == Some(&id) {
            self.by_key.remove(&tx.key);
        }
        if let Some(key) = &tx.ack_key {
            if self.by_ack.get(key) == Some(&id) {
                self.by_ack.remove(key);
            }
        }
        if let Some(at) = tx.filed {
            self.timers.remove(&(at, id));
        }
        Some(tx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Framing, MAGIC_COOKIE};

    const PHONE: &str = "192.0.2.10:5060";

    fn peer() -> SocketAddr {
        PHONE.parse().expect("address")
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn request(method: &str, branch: &str, cseq: u32) -> Message {
        let text = format!(
            "{method} sip:room1@sfu.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch={MAGIC_COOKIE}{branch}\r\n\
Max-Forwards: 70\r\n\
To: <sip:room1@sfu.example.com>\r\n\
From: <sip:alice@example.com>;tag=f1\r\n\
Call-ID: call-1@192.0.2.10\r\n\
CSeq: {cseq} {method}\r\n\
Content-Length: 0\r\n\r\n"
        );
        Message::parse(text.as_bytes(), Framing::Datagram).expect("request parses")
    }

    fn response(req: &Message, status: u16) -> Message {
        Message::response(req, status, None, Some("t1")).expect("response builds")
    }

    /// Drains the outputs: the sends parsed back, and the events.
    fn drain(t: &mut Transactions) -> (Vec<Message>, Vec<Output>) {
        let mut sent = Vec::new();
        let mut events = Vec::new();
        while let Some(o) = t.poll_output() {
            match o {
                Output::Send { data, to, .. } => {
                    assert_eq!(to, peer());
                    sent.push(Message::parse(&data, Framing::Datagram).expect("sent parses"));
                }
                other => events.push(other),
            }
        }
        (sent, events)
    }

    /// Runs the timers until none is left or `until` passes; returns when
    /// (after `base`) each send happened, and the events with their time.
    fn run(
        t: &mut Transactions,
        base: Instant,
        until: Duration,
    ) -> (Vec<Duration>, Vec<(Duration, Output)>) {
        let mut sends = Vec::new();
        let mut events = Vec::new();
        while let Some(at) = t.next_timeout() {
            if at > base + until {
                break;
            }
            t.handle_timeout(at);
            let (sent, evs) = drain(t);
            sends.extend(sent.iter().map(|_| at - base));
            events.extend(evs.into_iter().map(|e| (at - base, e)));
        }
        (sends, events)
    }

    fn table() -> Transactions {
        Transactions::new(Config::default())
    }

    /// Feeds a request that must start a new server transaction; its id.
    fn new_request(t: &mut Transactions, at: Instant, msg: Message, via: Transport) -> TxId {
        match t.receive(at, msg, peer(), via) {
            Received::Request { id, .. } => id,
            other => panic!("new request expected, got {other:?}"),
        }
    }

    fn secs_ms(list: &[u64]) -> Vec<Duration> {
        list.iter().map(|&n| ms(n)).collect()
    }

    #[test]
    fn timer_a_doubles_and_timer_b_times_out_at_64_t1() {
        let mut t = table();
        let base = Instant::now();
        let inv = request("INVITE", "a1", 1);
        let id = t
            .send_request(base, inv.clone(), peer(), Transport::Unreliable)
            .expect("sends");
        let (sent, _) = drain(&mut t);
        assert_eq!(sent, [inv]);
        assert_eq!(t.state(id), Some(State::Calling));
        let (sends, events) = run(&mut t, base, Duration::from_secs(100));
        assert_eq!(sends, secs_ms(&[500, 1500, 3500, 7500, 15500, 31500]));
        assert_eq!(
            events,
            [(
                Duration::from_secs(32),
                Output::Timeout {
                    id,
                    kind: Kind::ClientInvite
                }
            )]
        );
        assert!(t.is_empty());
        let c = t.counters();
        assert_eq!((c.client_invite, c.retransmissions, c.timeouts), (1, 6, 1));
    }

    #[test]
    fn timer_e_is_capped_at_t2_and_timer_f_times_out() {
        let mut t = table();
        let base = Instant::now();
        let id = t
            .send_request(
                base,
                request("OPTIONS", "e1", 1),
                peer(),
                Transport::Unreliable,
            )
            .expect("sends");
        drain(&mut t);
        let (sends, events) = run(&mut t, base, Duration::from_secs(100));
        assert_eq!(
            sends,
            secs_ms(&[500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500])
        );
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].0, Duration::from_secs(32));
        assert!(
            matches!(events[0].1, Output::Timeout { id: i, kind: Kind::ClientNonInvite } if i == id)
        );
        assert_eq!(t.counters().client_non_invite, 1);
    }

    #[test]
    fn timer_e_fires_every_t2_once_proceeding_then_k_waits_t4() {
        let mut t = table();
        let base = Instant::now();
        let req = request("REGISTER", "e2", 1);
        let id = t
            .send_request(base, req.clone(), peer(), Transport::Unreliable)
            .expect("sends");
        t.handle_timeout(base + ms(600));
        assert_eq!(drain(&mut t).0.len(), 2, "the request and its 0.5 s copy");
        let got = t.receive(
            base + ms(700),
            response(&req, 100),
            peer(),
            Transport::Unreliable,
        );
        assert!(matches!(got, Received::Response { id: i, .. } if i == id));
        assert_eq!(t.state(id), Some(State::Proceeding));
        let (sends, _) = run(&mut t, base, ms(10_000));
        // 0.5 s had fired; the 1.5 s one was armed; then every T2.
        assert_eq!(sends, secs_ms(&[1500, 5500, 9500]));
        let ok = response(&req, 200);
        let got = t.receive(base + ms(10_000), ok.clone(), peer(), Transport::Unreliable);
        assert_eq!(
            got,
            Received::Response {
                id,
                response: ok.clone()
            }
        );
        assert_eq!(t.state(id), Some(State::Completed));
        // A retransmitted final response is absorbed in Completed.
        let got = t.receive(base + ms(11_000), ok, peer(), Transport::Unreliable);
        assert_eq!(got, Received::Absorbed);
        let (sends, events) = run(&mut t, base, ms(100_000));
        assert!(sends.is_empty() && events.is_empty());
        assert!(t.is_empty(), "timer K ended it");
        assert_eq!(t.counters().absorbed, 1);
        // Timer K is T4 after the final response.
        let mut t = table();
        t.send_request(base, req.clone(), peer(), Transport::Unreliable)
            .expect("sends");
        t.receive(base, response(&req, 200), peer(), Transport::Unreliable);
        assert_eq!(t.next_timeout(), Some(base + Duration::from_secs(5)));
    }

    #[test]
    fn reliable_client_transactions_never_retransmit_and_do_not_wait() {
        let mut t = table();
        let base = Instant::now();
        let req = request("OPTIONS", "r1", 1);
        let id = t
            .send_request(base, req.clone(), peer(), Transport::Reliable)
            .expect("sends");
        drain(&mut t);
        // Only timer F is armed.
        assert_eq!(t.next_timeout(), Some(base + Duration::from_secs(32)));
        t.receive(
            base + ms(100),
            response(&req, 200),
            peer(),
            Transport::Reliable,
        );
        assert!(t.is_empty(), "timer K is zero");
        let inv = request("INVITE", "r2", 2);
        let id2 = t
            .send_request(base, inv.clone(), peer(), Transport::Reliable)
            .expect("sends");
        drain(&mut t);
        let (sends, events) = run(&mut t, base, Duration::from_secs(100));
        assert!(sends.is_empty());
        assert_eq!(
            events,
            [(
                Duration::from_secs(32),
                Output::Timeout {
                    id: id2,
                    kind: Kind::ClientInvite
                }
            )]
        );
        let inv = request("INVITE", "r3", 3);
        t.send_request(base, inv.clone(), peer(), Transport::Reliable)
            .expect("sends");
        drain(&mut t);
        t.receive(base, response(&inv, 404), peer(), Transport::Reliable);
        let (sent, _) = drain(&mut t);
        assert_eq!(sent.len(), 1, "the ACK");
        assert!(t.is_empty(), "timer D is zero");
        assert_eq!(t.counters().retransmissions, 0);
        assert_ne!(id, id2);
    }

    #[test]
    fn a_client_invite_acks_a_failure_and_absorbs_its_retransmissions() {
        let mut t = table();
        let base = Instant::now();
        let inv = request("INVITE", "c1", 7);
        let id = t
            .send_request(base, inv.clone(), peer(), Transport::Unreliable)
            .expect("sends");
        drain(&mut t);
        let ringing = response(&inv, 180);
        let got = t.receive(base + ms(200), ringing, peer(), Transport::Unreliable);
        assert!(matches!(got, Received::Response { .. }));
        assert_eq!(t.state(id), Some(State::Proceeding));
        // Proceeding: timers A and B are off.
        assert_eq!(t.next_timeout(), None);
        let busy = response(&inv, 486);
        let got = t.receive(base + ms(900), busy.clone(), peer(), Transport::Unreliable);
        assert_eq!(
            got,
            Received::Response {
                id,
                response: busy.clone()
            }
        );
        let (sent, _) = drain(&mut t);
        assert_eq!(sent.len(), 1);
        let ack = &sent[0];
        assert_eq!(ack.method(), Some(&Method::Ack));
        assert_eq!(ack.summary().via.branch, inv.summary().via.branch);
        assert_eq!(ack.summary().to.tag.as_deref(), Some("t1"));
        assert_eq!(ack.summary().cseq, 7);
        assert_eq!(t.state(id), Some(State::Completed));
        let got = t.receive(base + ms(1500), busy, peer(), Transport::Unreliable);
        assert_eq!(got, Received::Absorbed);
        let (again, _) = drain(&mut t);
        assert_eq!(&again, &sent, "the ACK again");
        // Timer D: 32 s.
        assert_eq!(
            t.next_timeout(),
            Some(base + ms(900) + Duration::from_secs(32))
        );
        run(&mut t, base, Duration::from_secs(100));
        assert!(t.is_empty());
    }

    #[test]
    fn a_client_invite_hands_every_2xx_to_the_tu() {
        let mut t = table();
        let base = Instant::now();
        let inv = request("INVITE", "c2", 1);
        let id = t
            .send_request(base, inv.clone(), peer(), Transport::Unreliable)
            .expect("sends");
        drain(&mut t);
        let ok = response(&inv, 200);
        for at in [100, 600, 1600] {
            let got = t.receive(base + ms(at), ok.clone(), peer(), Transport::Unreliable);
            assert_eq!(
                got,
                Received::Response {
                    id,
                    response: ok.clone()
                }
            );
        }
        assert_eq!(t.state(id), Some(State::Accepted));
        let (sent, events) = drain(&mut t);
        assert!(sent.is_empty(), "the TU sends the ACK for a 2xx");
        assert!(events.is_empty());
        let (sends, events) = run(&mut t, base, Duration::from_secs(100));
        assert!(
            sends.is_empty() && events.is_empty(),
            "timer M ends it quietly"
        );
        assert!(t.is_empty());
    }

    #[test]
    fn a_server_invite_sends_trying_and_answers_retransmissions_with_the_last_response() {
        let mut t = table();
        let base = Instant::now();
        let inv = request("INVITE", "s1", 1);
        let got = t.receive(base, inv.clone(), peer(), Transport::Unreliable);
        let Received::Request { id, request } = got else {
            panic!("new request expected: {got:?}");
        };
        assert_eq!(request, inv);
        let (sent, _) = drain(&mut t);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].status(), Some(100));
        let got = t.receive(base + ms(400), inv.clone(), peer(), Transport::Unreliable);
        assert_eq!(got, Received::Absorbed);
        let (again, _) = drain(&mut t);
        assert_eq!(again, sent, "100 Trying again");
        let ringing = response(&inv, 180);
        t.respond(base + ms(500), id, ringing.clone())
            .expect("responds");
        let (sent, _) = drain(&mut t);
        assert_eq!(sent, std::slice::from_ref(&ringing));
        t.receive(base + ms(900), inv.clone(), peer(), Transport::Unreliable);
        let (again, _) = drain(&mut t);
        assert_eq!(again, [ringing], "the last provisional response again");
        let busy = response(&inv, 486);
        t.respond(base + ms(1000), id, busy.clone())
            .expect("responds");
        drain(&mut t);
        t.receive(base + ms(1100), inv.clone(), peer(), Transport::Unreliable);
        let (again, _) = drain(&mut t);
        assert_eq!(again, [busy], "the final response again");
        let c = t.counters();
        assert_eq!((c.server_invite, c.absorbed, c.retransmissions), (1, 3, 3));
        // A 1xx after the final is refused.
        assert_eq!(
            t.respond(base + ms(1200), id, response(&inv, 180)),
            Err(TxError::WrongState)
        );
    }

    #[test]
    fn timer_g_is_capped_at_t2_and_timer_h_times_out_without_ack() {
        let mut t = table();
        let base = Instant::now();
        let inv = request("INVITE", "s2", 1);
        let id = new_request(&mut t, base, inv.clone(), Transport::Unreliable);
        t.respond(base, id, response(&inv, 603)).expect("responds");
        drain(&mut t);
        let (sends, events) = run(&mut t, base, Duration::from_secs(100));
        assert_eq!(
            sends,
            secs_ms(&[500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500])
        );
        assert_eq!(
            events,
            [(
                Duration::from_secs(32),
                Output::Timeout {
                    id,
                    kind: Kind::ServerInvite
                }
            )]
        );
        assert!(t.is_empty());
    }

    #[test]
    fn an_ack_for_a_failure_is_absorbed_and_timer_i_waits_t4() {
        let mut t = table();
        let base = Instant::now();
        let inv = request("INVITE", "s3", 1);
        let id = new_request(&mut t, base, inv.clone(), Transport::Unreliable);
        let busy = response(&inv, 486);
        t.respond(base, id, busy.clone()).expect("responds");
        drain(&mut t);
        t.handle_timeout(base + ms(600));
        assert_eq!(drain(&mut t).0.len(), 1, "timer G at 0.5 s");
        let ack = Message::ack_for(&inv, &busy).expect("ack");
        let got = t.receive(base + ms(700), ack.clone(), peer(), Transport::Unreliable);
        assert_eq!(got, Received::Absorbed);
        assert_eq!(t.state(id), Some(State::Confirmed));
        assert_eq!(
            t.receive(base + ms(800), ack, peer(), Transport::Unreliable),
            Received::Absorbed
        );
        let (sends, events) = run(&mut t, base, Duration::from_secs(100));
        assert!(sends.is_empty(), "timer G stops at the ACK");
        assert!(events.is_empty());
        assert!(t.is_empty());
        // Timer I: T4 after the ACK.
        let mut t = table();
        let id = new_request(&mut t, base, inv.clone(), Transport::Reliable);
        t.respond(base, id, busy.clone()).expect("responds");
        // Reliable: no timer G, only H.
        assert_eq!(t.next_timeout(), Some(base + Duration::from_secs(32)));
        let ack = Message::ack_for(&inv, &busy).expect("ack");
        t.receive(base + ms(100), ack.clone(), peer(), Transport::Reliable);
        assert!(t.is_empty(), "timer I is zero");
        let mut t = table();
        let id = new_request(&mut t, base, inv.clone(), Transport::Unreliable);
        t.respond(base, id, busy).expect("responds");
        t.receive(base + ms(100), ack, peer(), Transport::Unreliable);
        assert_eq!(t.next_timeout(), Some(base + ms(5100)));
    }

    #[test]
    fn a_2xx_is_retransmitted_until_the_ack_for_it_arrives() {
        let mut t = table();
        let base = Instant::now();
        let inv = request("INVITE", "s4", 5);
        let id = new_request(&mut t, base, inv.clone(), Transport::Unreliable);
        let ok = response(&inv, 200);
        t.respond(base, id, ok.clone()).expect("responds");
        assert_eq!(t.state(id), Some(State::Accepted));
        drain(&mut t);
        let (sends, _) = run(&mut t, base, ms(8000));
        assert_eq!(sends, secs_ms(&[500, 1500, 3500, 7500]));
        // An INVITE retransmission is absorbed without a send.
        assert_eq!(
            t.receive(base + ms(8000), inv.clone(), peer(), Transport::Unreliable),
            Received::Absorbed
        );
        assert!(drain(&mut t).0.is_empty());
        // The ACK for a 2xx has a branch of its own.
        let ack = request("ACK", "other", 5);
        let got = t.receive(base + ms(9000), ack.clone(), peer(), Transport::Unreliable);
        assert_eq!(
            got,
            Received::Ack {
                invite: Some(id),
                ack
            }
        );
        let (sends, events) = run(&mut t, base, Duration::from_secs(100));
        assert!(sends.is_empty(), "no 2xx after the ACK");
        assert!(events.is_empty(), "timer L ends it quietly");
        assert!(t.is_empty());
        // Without an ACK, timer L tells the TU.
        let mut t = table();
        let id = new_request(&mut t, base, inv.clone(), Transport::Unreliable);
        drain(&mut t);
        t.respond(base, id, ok).expect("responds");
        let (sends, events) = run(&mut t, base, Duration::from_secs(100));
        assert_eq!(
            sends.len(),
            1 + 10,
            "the 2xx, then T1 doubling to T2 for 32 s"
        );
        assert_eq!(
            events,
            [(
                Duration::from_secs(32),
                Output::Timeout {
                    id,
                    kind: Kind::ServerInvite
                }
            )]
        );
    }

    #[test]
    fn a_server_non_invite_absorbs_retransmissions_and_timer_j_waits() {
        let mut t = table();
        let base = Instant::now();
        let bye = request("BYE", "n1", 2);
        let id = new_request(&mut t, base, bye.clone(), Transport::Unreliable);
        assert_eq!(t.state(id), Some(State::Trying));
        assert!(drain(&mut t).0.is_empty(), "no 100 for non-INVITE");
        assert_eq!(
            t.receive(base + ms(500), bye.clone(), peer(), Transport::Unreliable),
            Received::Absorbed
        );
        assert!(drain(&mut t).0.is_empty(), "nothing to resend yet");
        let ok = response(&bye, 200);
        t.respond(base + ms(600), id, ok.clone()).expect("responds");
        drain(&mut t);
        t.receive(base + ms(1000), bye.clone(), peer(), Transport::Unreliable);
        assert_eq!(drain(&mut t).0, std::slice::from_ref(&ok));
        assert_eq!(
            t.next_timeout(),
            Some(base + ms(600) + Duration::from_secs(32))
        );
        let (sends, events) = run(&mut t, base, Duration::from_secs(100));
        assert!(sends.is_empty() && events.is_empty());
        assert!(t.is_empty());
        // Reliable: timer J is zero.
        let id = new_request(&mut t, base, bye.clone(), Transport::Reliable);
        t.respond(base, id, ok).expect("responds");
        assert!(t.is_empty());
    }

    #[test]
    fn cancel_is_its_own_transaction_matching_the_invite() {
        let mut t = table();
        let base = Instant::now();
        let inv = request("INVITE", "x1", 1);
        let Received::Request { id: invite, .. } =
            t.receive(base, inv.clone(), peer(), Transport::Unreliable)
        else {
            panic!("new request expected");
        };
        let cancel = Message::cancel_for(&inv).expect("cancel");
        let got = t.receive(
            base + ms(100),
            cancel.clone(),
            peer(),
            Transport::Unreliable,
        );
        let Received::Cancel {
            id,
            invite: Some(i),
            ..
        } = got
        else {
            panic!("cancel expected: {got:?}");
        };
        assert_eq!(i, invite);
        assert_ne!(id, invite);
        assert_eq!(t.kind(id), Some(Kind::ServerNonInvite));
        t.respond(base, id, response(&cancel, 200))
            .expect("responds");
        t.respond(base, invite, response(&inv, 487))
            .expect("responds");
        assert_eq!(t.state(invite), Some(State::Completed));
        // A CANCEL for nothing.
        let stray = Message::cancel_for(&request("INVITE", "x2", 1)).expect("cancel");
        let got = t.receive(base, stray, peer(), Transport::Unreliable);
        assert!(matches!(got, Received::Cancel { invite: None, .. }));
    }

    #[test]
    fn a_response_matching_nothing_is_stray() {
        let mut t = table();
        let base = Instant::now();
        let opts = request("OPTIONS", "m1", 1);
        t.send_request(base, opts.clone(), peer(), Transport::Unreliable)
            .expect("sends");
        let other = response(&request("OPTIONS", "m2", 1), 200);
        assert_eq!(
            t.receive(base, other.clone(), peer(), Transport::Unreliable),
            Received::Stray(other)
        );
        // Same branch, other method (§17.1.3).
        let bye = response(&request("BYE", "m1", 1), 200);
        assert_eq!(
            t.receive(base, bye.clone(), peer(), Transport::Unreliable),
            Received::Stray(bye)
        );
        assert_eq!(t.counters().stray_responses, 2);
        // An ACK that matches nothing goes to the dialog.
        let ack = request("ACK", "m3", 9);
        assert_eq!(
            t.receive(base, ack.clone(), peer(), Transport::Unreliable),
            Received::Ack { invite: None, ack }
        );
    }

    #[test]
    fn the_cap_refuses_with_503_and_counts() {
        let mut t = Transactions::new(Config {
            max_transactions: 2,
            ..Config::default()
        });
        let base = Instant::now();
        for b in ["p1", "p2"] {
            let got = t.receive(
                base,
                request("OPTIONS", b, 1),
                peer(),
                Transport::Unreliable,
            );
            assert!(matches!(got, Received::Request { .. }));
        }
        let got = t.receive(
            base,
            request("OPTIONS", "p3", 1),
            peer(),
            Transport::Unreliable,
        );
        assert_eq!(got, Received::Refused(Refusal::Full));
        let (sent, _) = drain(&mut t);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].status(), Some(503));
        assert_eq!(sent[0].header_values("Retry-After"), ["5"]);
        assert_eq!(
            t.send_request(
                base,
                request("OPTIONS", "p4", 1),
                peer(),
                Transport::Unreliable
            ),
            Err(TxError::Full)
        );
        assert_eq!(t.counters().refused_full, 2);
        assert_eq!(t.len(), 2);
        // Retransmissions of live ones are still absorbed.
        let got = t.receive(
            base,
            request("OPTIONS", "p1", 1),
            peer(),
            Transport::Unreliable,
        );
        assert_eq!(got, Received::Absorbed);
    }

    #[test]
    fn requests_without_the_magic_cookie_are_refused() {
        let mut t = table();
        let base = Instant::now();
        let text = String::from_utf8(request("OPTIONS", "q", 1).to_bytes())
            .expect("utf-8")
            .replace("branch=z9hG4bKq", "branch=old2543");
        let old = Message::parse(text.as_bytes(), Framing::Datagram).expect("parses");
        assert_eq!(
            t.receive(base, old.clone(), peer(), Transport::Unreliable),
            Received::Refused(Refusal::NoCookie)
        );
        assert_eq!(drain(&mut t).0[0].status(), Some(400));
        assert_eq!(
            t.send_request(base, old, peer(), Transport::Unreliable),
            Err(TxError::NoBranch)
        );
        assert_eq!(t.counters().refused_no_cookie, 1);
    }

    #[test]
    fn tu_errors_transport_errors_and_the_answer_deadline() {
        let mut t = table();
        let base = Instant::now();
        let opts = request("OPTIONS", "u1", 1);
        let id = t
            .send_request(base, opts.clone(), peer(), Transport::Unreliable)
            .expect("sends");
        assert_eq!(
            t.send_request(base, opts.clone(), peer(), Transport::Unreliable),
            Err(TxError::Duplicate)
        );
        assert_eq!(
            t.send_request(base, request("ACK", "u2", 1), peer(), Transport::Unreliable),
            Err(TxError::AckIsStateless)
        );
        assert_eq!(
            t.send_request(base, response(&opts, 200), peer(), Transport::Unreliable),
            Err(TxError::NotARequest)
        );
        assert_eq!(
            t.respond(base, id, response(&opts, 200)),
            Err(TxError::WrongKind)
        );
        assert_eq!(
            t.respond(base, id, opts.clone()),
            Err(TxError::NotAResponse)
        );
        drain(&mut t);
        t.transport_failed(id);
        assert_eq!(
            drain(&mut t).1,
            [Output::TransportError {
                id,
                kind: Kind::ClientNonInvite
            }]
        );
        assert_eq!(
            t.respond(base, id, response(&opts, 200)),
            Err(TxError::Unknown)
        );
        assert_eq!(t.counters().transport_errors, 1);
        assert!(t.is_empty());
        assert_eq!(t.next_timeout(), None);
        // A TU that never answers: the transaction goes after tu_answer.
        let Received::Request { id, .. } = t.receive(
            base,
            request("INFO", "u3", 1),
            peer(),
            Transport::Unreliable,
        ) else {
            panic!("new request expected");
        };
        let (_, events) = run(&mut t, base, Duration::from_secs(1000));
        assert_eq!(
            events,
            [(
                Duration::from_secs(180),
                Output::Timeout {
                    id,
                    kind: Kind::ServerNonInvite
                }
            )]
        );
        // The ACK for a 2xx is sent without a transaction.
        let ack = request("ACK", "u4", 1);
        t.send_stateless(&ack, peer(), Transport::Unreliable);
        assert_eq!(
            t.poll_output(),
            Some(Output::Send {
                id: None,
                to: peer(),
                transport: Transport::Unreliable,
                data: Bytes::from(ack.to_bytes())
            })
        );
    }

    #[test]
    fn a_late_call_fires_each_timer_at_its_own_instant() {
        let mut t = table();
        let base = Instant::now();
        t.send_request(
            base,
            request("OPTIONS", "l1", 1),
            peer(),
            Transport::Unreliable,
        )
        .expect("sends");
        drain(&mut t);
        t.handle_timeout(base + ms(4000));
        assert_eq!(drain(&mut t).0.len(), 3, "0.5, 1.5 and 3.5 s");
        assert_eq!(t.next_timeout(), Some(base + ms(7500)));
    }
}
