//! The REGISTER side of a registrar (RFC 3261 §10.3), as a state machine:
//! the engine hands in a parsed request, its source address and `now`,
//! and gets the response to send; bindings expire in the time it passes
//! to [`Registrar::handle_timeout`], and every change comes out as a
//! [`RegistrarEvent`] for the cluster's key-value store.
//!
//! The order of the checks:
//! 1. Only REGISTER (405 otherwise). A source the [`FailureLimiter`]
//!    blocks gets 403 at once (counted by the limiter and here).
//! 2. Digest credentials ([`Authenticator::verify_header`]): none → 401
//!    with a challenge; a stale nonce → 401 with `stale=true`; wrong
//!    credentials or an unknown user → a failure recorded in the limiter
//!    and 403; unreadable credentials → 400. The authenticated user may
//!    only register the address-of-record with the same user part (403
//!    otherwise, §10.3 step 4).
//! 3. The address-of-record: the To URI's `user@host`, host in lower
//!    case, port, parameters and scheme left out, the user unescaped
//!    (§10.3 step 5). A To URI without a user part → 404.
//! 4. The Contacts (§10.3 steps 6–7): each one's expiry is its `expires`
//!    parameter, else the Expires header, else
//!    [`RegistrarConfig::default_expires`]; a non-zero expiry under the
//!    minimum refuses the whole request with 423 and `Min-Expires`, one
//!    over the maximum is cut to it. `Contact: *` needs `Expires: 0` and
//!    no other Contact (400 otherwise) and removes every binding. A
//!    binding updated with the same Call-ID and a CSeq not above the
//!    stored one refuses the request with 500 (RFC 3261 names no code;
//!    500 is what §12.2.2 answers an out-of-order request in a dialog).
//! 5. Caps, checked before anything changes: more bindings for one
//!    address-of-record than [`RegistrarConfig::max_bindings_per_aor`] →
//!    403 (the client's own doing: retrying will not help); a new
//!    address-of-record when [`RegistrarConfig::max_aors`] are held → 503
//!    with `Retry-After` (the server is full). A request listing more
//!    Contacts than the cap plus the bindings held is refused with 403
//!    before they are compared, which bounds the work per request.
//! 6. The request applies as a whole, and the 200 OK lists every binding
//!    of the address-of-record with its remaining `expires` (§10.3 step
//!    8), with a `Date` header computed from the caller's anchor.
//!
//! Each new binding gets a [`SessionId`] unique across the cluster: the
//! node id from the configuration, the Unix time in milliseconds at `now`
//! (from an anchor: an `Instant` and the Unix time the caller read at that
//! instant, as [`crate::digest`] does) and a counter of this registrar. A
//! refresh keeps the binding's session.
//!
//! The users' HA1 come through [`UserLookup`], which may answer
//! [`UserAnswer::Pending`] (a hook that answers later): the registrar then
//! keeps nothing and answers [`Reply::Pending`]; the engine keeps the
//! request, waits for the hook, and calls [`Registrar::register`] again
//! with the same request and a lookup that answers from the hook's reply.
//! The nonce is stateless, so the second pass verifies as the first would
//! have. A synchronous table (`[[sip.users]]`) never answers `Pending`.
//!
//! Not done here: checking that the Request-URI's domain is served (the
//! engine's configuration), `q` values, `+sip.instance` / outbound (RFC
//! 5626) and GRUU. Contact URIs are compared as printed by the parser (a
//! phone refreshes with the URI it registered).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use corecast_media::SessionId;
use ezk_sip_types::header::typed::Contact;
use ezk_sip_types::header::HeaderParse;
use ezk_sip_types::print::AppendCtx;
use ezk_sip_types::uri::{SipUri, SipUriUserPart};

use crate::digest::{Algorithm, Authenticator, Credentials, Ha1, Outcome};
use crate::limits::{FailureLimiter, Verdict};
use crate::message::{Message, Method, ParseError, StartLine};

/// The expiry of a binding that asks for none, in seconds (§10.2.1.1).
pub const DEFAULT_EXPIRES: u32 = 3600;
/// The shortest expiry accepted by default, in seconds; shorter → 423.
pub const DEFAULT_MIN_EXPIRES: u32 = 60;
/// The longest expiry granted by default, in seconds; longer is cut.
pub const DEFAULT_MAX_EXPIRES: u32 = 7200;

/// What a [`Registrar`] is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrarConfig {
    /// This node's id, the first part of every [`SessionId`] it makes.
    pub node: u32,
    /// The expiry when neither the Contact nor the request gives one.
    pub default_expires: u32,
    /// Non-zero expiries under this are refused with 423.
    pub min_expires: u32,
    /// Expiries over this are cut to it.
    pub max_expires: u32,
    /// Bindings one address-of-record may hold; more → 403.
    pub max_bindings_per_aor: usize,
    /// Addresses-of-record held at once; a new one over it → 503.
    pub max_aors: usize,
    /// The algorithm offered in challenges.
    pub algorithm: Algorithm,
    /// The `Retry-After` of a 503, in seconds.
    pub retry_after: u32,
}

impl RegistrarConfig {
    /// The defaults for node `node`: 3600 s, 60–7200 s, 10 bindings per
    /// address-of-record, 10,000 addresses-of-record, MD5.
    pub fn new(node: u32) -> RegistrarConfig {
        RegistrarConfig {
            node,
            default_expires: DEFAULT_EXPIRES,
            min_expires: DEFAULT_MIN_EXPIRES,
            max_expires: DEFAULT_MAX_EXPIRES,
            max_bindings_per_aor: 10,
            max_aors: 10_000,
            algorithm: Algorithm::Md5,
            retry_after: 60,
        }
    }
}

/// What a [`UserLookup`] answers for a username.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserAnswer {
    /// The user's HA1.
    Found(Ha1),
    /// No such user: the credentials count as wrong.
    Unknown,
    /// The answer is not known yet (an asynchronous hook): see the module
    /// documentation.
    Pending,
}

/// Where HA1s come from: the `[[sip.users]]` table now, a hook later.
/// Any `FnMut(&str, Algorithm) -> UserAnswer` is one.
pub trait UserLookup {
    /// The HA1 of `username` for `algorithm` in the authenticator's realm.
    fn ha1(&mut self, username: &str, algorithm: Algorithm) -> UserAnswer;
}

impl<F: FnMut(&str, Algorithm) -> UserAnswer> UserLookup for F {
    fn ha1(&mut self, username: &str, algorithm: Algorithm) -> UserAnswer {
        self(username, algorithm)
    }
}

/// The authentication pieces the engine shares between the registrar and
/// the user agent (one realm, one per-source failure count).
pub struct Auth<'a> {
    /// Issues challenges and checks credentials.
    pub authenticator: &'a Authenticator,
    /// Counts failures per source and blocks.
    pub limiter: &'a mut FailureLimiter,
    /// The users' HA1.
    pub users: &'a mut dyn UserLookup,
}

/// What [`Registrar::register`] asks the engine to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Send this response (boxed: a message is large).
    Respond(Box<Message>),
    /// The user lookup is pending: call again with the same request once
    /// the answer for `username` is in. Nothing was changed or counted.
    Pending {
        /// The username being looked up.
        username: String,
    },
}

/// Why a REGISTER was refused (apart from challenges and wrong
/// credentials, counted on their own); a bounded metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Not a REGISTER (405).
    NotRegister,
    /// The source is blocked by the limiter (403).
    Blocked,
    /// Unreadable credentials, Contacts or expiries, a bad `*` (400).
    Malformed,
    /// Authenticated, but not as the address-of-record's user (403).
    Forbidden,
    /// The To URI has no user part (404).
    NotFound,
    /// An expiry under the minimum (423).
    IntervalTooBrief,
    /// The same Call-ID with a CSeq not above the stored one (500).
    OutOfOrder,
    /// Over the bindings cap of an address-of-record (403).
    TooManyBindings,
    /// Over the cap of addresses-of-record (503).
    TableFull,
}

impl Refusal {
    /// Every reason, in the order of [`RefusalCounts`].
    pub const ALL: [Refusal; 9] = [
        Refusal::NotRegister,
        Refusal::Blocked,
        Refusal::Malformed,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::IntervalTooBrief,
        Refusal::OutOfOrder,
        Refusal::TooManyBindings,
        Refusal::TableFull,
    ];

    /// The metrics label.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::NotRegister => "not_register",
            Refusal::Blocked => "blocked",
            Refusal::Malformed => "malformed",
            Refusal::Forbidden => "forbidden",
            Refusal::NotFound => "not_found",
            Refusal::IntervalTooBrief => "interval_too_brief",
            Refusal::OutOfOrder => "out_of_order",
            Refusal::TooManyBindings => "too_many_bindings",
            Refusal::TableFull => "table_full",
        }
    }

    /// The status code answered.
    pub fn status(self) -> u16 {
        match self {
            Refusal::NotRegister => 405,
            Refusal::Blocked | Refusal::Forbidden | Refusal::TooManyBindings => 403,
            Refusal::Malformed => 400,
            Refusal::NotFound => 404,
            Refusal::IntervalTooBrief => 423,
            Refusal::OutOfOrder => 500,
            Refusal::TableFull => 503,
        }
    }

    fn index(self) -> usize {
        Refusal::ALL.iter().position(|&r| r == self).unwrap_or(0)
    }
}

/// Refusals per [`Refusal`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefusalCounts([u64; 9]);

impl RefusalCounts {
    /// The count for one reason.
    pub fn get(&self, reason: Refusal) -> u64 {
        self.0[reason.index()]
    }

    /// All refusals.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

/// What a [`Registrar`] has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegistrarCounters {
    /// Bindings held now (a gauge).
    pub registrations: usize,
    /// Addresses-of-record held now (a gauge).
    pub aors: usize,
    /// REGISTERs answered 200.
    pub successes: u64,
    /// 401 challenges sent (stale ones included).
    pub challenges: u64,
    /// Wrong credentials or unknown users (answered 403).
    pub auth_failures: u64,
    /// Other refusals, by reason.
    pub refusals: RefusalCounts,
}

/// One binding of an address-of-record to a contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The Contact URI.
    pub contact: String,
    /// The cluster-wide id given when the binding was made.
    pub session: SessionId,
    /// When it expires.
    pub expires_at: Instant,
    /// The source address of the last REGISTER that made or refreshed it.
    pub source: SocketAddr,
    /// The Call-ID of that REGISTER.
    pub call_id: String,
    /// Its CSeq number.
    pub cseq: u32,
    /// Its key in the expiry index.
    key: (Instant, u64),
}

/// Why a binding went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnregisterReason {
    /// Not refreshed in time.
    Expired,
    /// Removed by the client (`Expires: 0` or `Contact: *`).
    Removed,
}

/// A change to mirror into the cluster's key-value store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrarEvent {
    /// A new binding.
    Registered {
        /// The address-of-record, `user@host`.
        aor: String,
        /// The Contact URI.
        contact: String,
        /// Its new session.
        session: SessionId,
        /// The expiry granted, in seconds.
        expires: u32,
    },
    /// An existing binding renewed.
    Refreshed {
        /// The address-of-record.
        aor: String,
        /// The Contact URI.
        contact: String,
        /// Its session (unchanged).
        session: SessionId,
        /// The expiry granted, in seconds.
        expires: u32,
    },
    /// A binding gone.
    Unregistered {
        /// The address-of-record.
        aor: String,
        /// The Contact URI.
        contact: String,
        /// Its session.
        session: SessionId,
        /// Why.
        reason: UnregisterReason,
    },
}

/// The Contacts of a request.
enum Contacts {
    /// `Contact: *`.
    Wildcard,
    /// URIs and their `expires` parameters.
    List(Vec<(String, Option<u64>)>),
}

/// The result of the authentication step.
enum Checked {
    /// Authenticated as this user.
    User(String),
    /// The lookup of this user is pending.
    Pending(String),
    /// Answer 401, with `stale=true` or not.
    Challenge { stale: bool },
    /// Wrong credentials (already recorded in the limiter): 403.
    Wrong,
    /// Refused for another reason.
    Refuse(Refusal),
}

/// The bindings of one node, with their expiry. See the module
/// documentation.
#[derive(Debug)]
pub struct Registrar {
    config: RegistrarConfig,
    anchor: Instant,
    anchor_unix: Duration,
    aors: HashMap<String, Vec<Binding>>,
    /// (expiry, sequence) → (address-of-record, contact).
    expiry: BTreeMap<(Instant, u64), (String, String)>,
    seq: u64,
    counter: u32,
    events: VecDeque<RegistrarEvent>,
    counters: RegistrarCounters,
}

impl Registrar {
    /// A registrar with `config`; `anchor_unix` is the time since the Unix
    /// epoch at `anchor`, read once by the caller. A minimum above the
    /// maximum is lowered to it, caps of 0 become 1.
    pub fn new(mut config: RegistrarConfig, anchor: Instant, anchor_unix: Duration) -> Registrar {
        config.min_expires = config.min_expires.min(config.max_expires);
        config.max_bindings_per_aor = config.max_bindings_per_aor.max(1);
        config.max_aors = config.max_aors.max(1);
        Registrar {
            config,
            anchor,
            anchor_unix,
            aors: HashMap::new(),
            expiry: BTreeMap::new(),
            seq: 0,
            counter: 0,
            events: VecDeque::new(),
            counters: RegistrarCounters::default(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &RegistrarConfig {
        &self.config
    }

    /// Handles a REGISTER from `source` at `now`; `random` (from a CSPRNG)
    /// makes the nonce of a challenge and the To tag. Expired bindings are
    /// removed first. Errors only if a response could not be built.
    pub fn register(
        &mut self,
        request: &Message,
        source: SocketAddr,
        now: Instant,
        random: u64,
        mut auth: Auth<'_>,
    ) -> Result<Reply, ParseError> {
        self.handle_timeout(now);
        let tag = format!("{random:x}");
        let username = match authenticate(request, source, now, &mut auth) {
            Checked::User(username) => username,
            Checked::Pending(username) => return Ok(Reply::Pending { username }),
            Checked::Challenge { stale } => {
                self.counters.challenges += 1;
                let value = auth
                    .authenticator
                    .challenge(self.config.algorithm, stale, now, random);
                let response = Message::response(request, 401, None, Some(&tag))?
                    .with_header("WWW-Authenticate", &value)?;
                return Ok(Reply::Respond(Box::new(response)));
            }
            Checked::Wrong => {
                self.counters.auth_failures += 1;
                let response = Message::response(request, 403, None, Some(&tag))?;
                return Ok(Reply::Respond(Box::new(response)));
            }
            Checked::Refuse(reason) => return self.refuse(request, reason, &tag),
        };
        let aor = match self.apply(request, source, now, &username) {
            Ok(aor) => aor,
            Err(reason) => return self.refuse(request, reason, &tag),
        };
        self.counters.successes += 1;
        let mut response = Message::response(request, 200, None, Some(&tag))?;
        for b in self.lookup(&aor) {
            let left = b.expires_at.saturating_duration_since(now);
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            let value = format!("<{}>;expires={secs}", b.contact);
            response = response.with_header("Contact", &value)?;
        }
        let response = response.with_header("Date", &http_date(self.unix_at(now)))?;
        Ok(Reply::Respond(Box::new(response)))
    }

    /// The bindings of an address-of-record (`user@host` as in the events,
    /// see [`aor_of`]), oldest first; empty if none. Bindings past their
    /// expiry stay until [`Registrar::handle_timeout`] runs.
    pub fn lookup(&self, aor: &str) -> &[Binding] {
        self.aors.get(aor).map(Vec::as_slice).unwrap_or(&[])
    }

    /// When the next binding expires.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.expiry.keys().next().map(|&(at, _)| at)
    }

    /// Removes the bindings expired at `now` (each with an
    /// [`UnregisterReason::Expired`] event).
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(entry) = self.expiry.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (aor, contact) = entry.remove();
            self.remove(&aor, &contact, UnregisterReason::Expired);
        }
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<RegistrarEvent> {
        self.events.pop_front()
    }

    /// The counters, with the current gauges.
    pub fn counters(&self) -> RegistrarCounters {
        RegistrarCounters {
            registrations: self.expiry.len(),
            aors: self.aors.len(),
            ..self.counters
        }
    }

    /// Counts a refusal and builds its response.
    fn refuse(
        &mut self,
        request: &Message,
        reason: Refusal,
        tag: &str,
    ) -> Result<Reply, ParseError> {
        self.counters.refusals.0[reason.index()] += 1;
        let mut response = Message::response(request, reason.status(), None, Some(tag))?;
        response = match reason {
            Refusal::NotRegister => response.with_header("Allow", "REGISTER")?,
            Refusal::IntervalTooBrief => {
                response.with_header("Min-Expires", &self.config.min_expires.to_string())?
            }
            Refusal::TableFull => {
                response.with_header("Retry-After", &self.config.retry_after.to_string())?
            }
            _ => response,
        };
        Ok(Reply::Respond(Box::new(response)))
    }

    /// Checks the request against the bindings and applies it as a whole;
    /// the address-of-record, or why not.
    fn apply(
        &mut self,
        request: &Message,
        source: SocketAddr,
        now: Instant,
        username: &str,
    ) -> Result<String, Refusal> {
        let summary = request.summary();
        let (user, host) = aor_parts(&summary.to.uri).ok_or(Refusal::NotFound)?;
        if user != username {
            return Err(Refusal::Forbidden);
        }
        let aor = format!("{user}@{host}");
        let contacts =
            parse_contacts(&request.header_values("Contact")).ok_or(Refusal::Malformed)?;
        let existing = self.lookup(&aor);
        let out_of_order = |b: &Binding| b.call_id == summary.call_id && summary.cseq <= b.cseq;
        // The contacts to set, with their expiry (0: remove).
        let plan: Vec<(String, u32)> = match contacts {
            Contacts::Wildcard => {
                if summary.expires != Some(0) {
                    return Err(Refusal::Malformed);
                }
                if existing.iter().any(out_of_order) {
                    return Err(Refusal::OutOfOrder);
                }
                existing.iter().map(|b| (b.contact.clone(), 0)).collect()
            }
            Contacts::List(list) => {
                if list.len() > existing.len() + self.config.max_bindings_per_aor {
                    return Err(Refusal::TooManyBindings);
                }
                let mut plan: Vec<(String, u32)> = Vec::with_capacity(list.len());
                for (contact, param) in list {
                    let asked = param
                        .or(summary.expires.map(u64::from))
                        .unwrap_or(u64::from(self.config.default_expires));
                    if asked != 0 && asked < u64::from(self.config.min_expires) {
                        return Err(Refusal::IntervalTooBrief);
                    }
                    let granted = u32::try_from(asked.min(u64::from(self.config.max_expires)))
                        .unwrap_or(self.config.max_expires);
                    if existing
                        .iter()
                        .any(|b| b.contact == contact && out_of_order(b))
                    {
                        return Err(Refusal::OutOfOrder);
                    }
                    plan.retain(|(c, _)| *c != contact);
                    plan.push((contact, granted));
                }
                plan
            }
        };
        let kept = existing
            .iter()
            .filter(|b| !plan.iter().any(|(c, e)| *c == b.contact && *e == 0))
            .count();
        let added = plan
            .iter()
            .filter(|(c, e)| *e > 0 && !existing.iter().any(|b| b.contact == *c))
            .count();
        if kept + added > self.config.max_bindings_per_aor {
            return Err(Refusal::TooManyBindings);
        }
        if existing.is_empty() && added > 0 && self.aors.len() >= self.config.max_aors {
            return Err(Refusal::TableFull);
        }
        for (contact, expires) in plan {
            if expires == 0 {
                self.remove(&aor, &contact, UnregisterReason::Removed);
            } else {
                self.upsert(&aor, contact, expires, now, source, request);
            }
        }
        Ok(aor)
    }

    /// Makes or refreshes a binding.
    fn upsert(
        &mut self,
        aor: &str,
        contact: String,
        expires: u32,
        now: Instant,
        source: SocketAddr,
        request: &Message,
    ) {
        let summary = request.summary();
        let expires_at = now + Duration::from_secs(u64::from(expires));
        self.seq += 1;
        let key = (expires_at, self.seq);
        self.expiry.insert(key, (aor.to_owned(), contact.clone()));
        let found = self
            .aors
            .get_mut(aor)
            .and_then(|bindings| bindings.iter_mut().find(|b| b.contact == contact));
        if let Some(b) = found {
            let old = std::mem::replace(&mut b.key, key);
            b.expires_at = expires_at;
            b.source = source;
            b.call_id.clone_from(&summary.call_id);
            b.cseq = summary.cseq;
            let session = b.session;
            self.expiry.remove(&old);
            self.events.push_back(RegistrarEvent::Refreshed {
                aor: aor.to_owned(),
                contact,
                session,
                expires,
            });
            return;
        }
        let session = self.next_session(now);
        self.aors.entry(aor.to_owned()).or_default().push(Binding {
            contact: contact.clone(),
            session,
            expires_at,
            source,
            call_id: summary.call_id.clone(),
            cseq: summary.cseq,
            key,
        });
        self.events.push_back(RegistrarEvent::Registered {
            aor: aor.to_owned(),
            contact,
            session,
            expires,
        });
    }

    /// Removes a binding if it is there.
    fn remove(&mut self, aor: &str, contact: &str, reason: UnregisterReason) {
        let Some(bindings) = self.aors.get_mut(aor) else {
            return;
        };
        let Some(i) = bindings.iter().position(|b| b.contact == contact) else {
            return;
        };
        let b = bindings.remove(i);
        if bindings.is_empty() {
            self.aors.remove(aor);
        }
        self.expiry.remove(&b.key);
        self.events.push_back(RegistrarEvent::Unregistered {
            aor: aor.to_owned(),
            contact: b.contact,
            session: b.session,
            reason,
        });
    }

    /// A new session id at `now`.
    fn next_session(&mut self, now: Instant) -> SessionId {
        let counter = self.counter;
        self.counter = self.counter.wrapping_add(1);
        SessionId {
            node: self.config.node,
            unix_ms: u64::try_from(self.unix_at(now).as_millis()).unwrap_or(u64::MAX),
            counter,
        }
    }

    /// The time since the Unix epoch at `now`, from the anchor.
    fn unix_at(&self, now: Instant) -> Duration {
        match now.checked_duration_since(self.anchor) {
            Some(after) => self.anchor_unix.saturating_add(after),
            None => self
                .anchor_unix
                .saturating_sub(self.anchor.saturating_duration_since(now)),
        }
    }
}

/// Authentication, steps 1–2 of the module documentation.
fn authenticate(
    request: &Message,
    source: SocketAddr,
    now: Instant,
    auth: &mut Auth<'_>,
) -> Checked {
    let StartLine::Request { method, uri } = request.start_line() else {
        return Checked::Refuse(Refusal::NotRegister);
    };
    if *method != Method::Register {
        return Checked::Refuse(Refusal::NotRegister);
    }
    if let Verdict::Blocked(_) = auth.limiter.check(source.ip(), now) {
        return Checked::Refuse(Refusal::Blocked);
    }
    let values = request.header_values("Authorization");
    let realm = auth.authenticator.realm();
    // With credentials for several realms, the ones for this realm;
    // readable credentials for other realms only are no answer to our
    // challenge (challenge again), unreadable ones are malformed.
    let ours = values
        .iter()
        .find(|v| Credentials::parse(v).is_ok_and(|c| c.realm == realm));
    let header = match (ours, values.first()) {
        (Some(header), _) => header,
        (None, Some(first)) if Credentials::parse(first).is_err() => first,
        (None, _) => return Checked::Challenge { stale: false },
    };
    let mut pending = None;
    let users = &mut *auth.users;
    let outcome = auth.authenticator.verify_header(
        header,
        "REGISTER",
        uri,
        now,
        |user, algorithm| match users.ha1(user, algorithm) {
            UserAnswer::Found(ha1) => Some(ha1),
            UserAnswer::Unknown => None,
            UserAnswer::Pending => {
                pending = Some(user.to_owned());
                None
            }
        },
    );
    if let Some(username) = pending {
        return Checked::Pending(username);
    }
    match outcome {
        Outcome::Ok(username) => Checked::User(username),
        Outcome::Stale => Checked::Challenge { stale: true },
        Outcome::Wrong => {
            auth.limiter.record_failure(source.ip(), now);
            Checked::Wrong
        }
        Outcome::Malformed => Checked::Refuse(Refusal::Malformed),
    }
}

/// The address-of-record of a `sip:`/`sips:` URI: `user@host`, the user
/// unescaped, the host in lower case, without scheme, port or parameters.
/// `None` without a user part or for another scheme.
pub fn aor_of(uri: &str) -> Option<String> {
    aor_parts(uri).map(|(user, host)| format!("{user}@{host}"))
}

fn aor_parts(uri: &str) -> Option<(String, String)> {
    let uri = SipUri::from_str(uri.trim()).ok()?;
    let user = match &uri.user_part {
        SipUriUserPart::Empty => return None,
        SipUriUserPart::User(user) => user.to_string(),
        SipUriUserPart::UserPw(user_pw) => user_pw.user.to_string(),
    };
    if user.is_empty() {
        return None;
    }
    let host = uri.host_port.host.to_string().to_ascii_lowercase();
    Some((user, host))
}

/// The Contact header values of a request; `None` if any is malformed or
/// `*` is not alone.
fn parse_contacts(values: &[&str]) -> Option<Contacts> {
    if values.iter().any(|v| v.trim() == "*") {
        return (values.len() == 1).then_some(Contacts::Wildcard);
    }
    let mut out = Vec::new();
    for value in values {
        // The parser's values borrow from the buffer they were cut from.
        let buf = Bytes::copy_from_slice(value.as_bytes());
        let text = std::str::from_utf8(&buf).ok()?;
        let mut rest = text.trim_start();
        loop {
            let (after, contact) = Contact::parse(&buf, rest).ok()?;
            let uri = contact.uri.uri.default_print_ctx().to_string();
            let expires = match contact.params.get_val("expires") {
                None => None,
                Some(e) => Some(e.trim().parse::<u64>().ok()?),
            };
            out.push((uri, expires));
            let after = after.trim_start();
            if after.is_empty() {
                break;
            }
            rest = after.strip_prefix(',')?.trim_start();
        }
    }
    Some(Contacts::List(out))
}

/// An RFC 1123 date (`Tue, 14 Nov 2023 22:13:20 GMT`), as §20.17 asks.
fn http_date(unix: Duration) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = unix.as_secs();
    let mut days = secs / 86_400;
    let weekday = DAYS[(days % 7) as usize];
    let mut year = 1970u64;
    loop {
        let len = if is_leap(year) { 366 } else { 365 };
        if days < len {
            break;
        }
        days -= len;
        year += 1;
    }
    let mut month = 0usize;
    loop {
        let len = match month {
            1 if is_leap(year) => 29,
            1 => 28,
            3 | 5 | 8 | 10 => 30,
            _ => 31,
        };
        if days < len || month == 11 {
            break;
        }
        days -= len;
        month += 1;
    }
    let rest = secs % 86_400;
    format!(
        "{weekday}, {:02} {} {year} {:02}:{:02}:{:02} GMT",
        days + 1,
        MONTHS[month],
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

fn is_leap(year: u64) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::{response, DigestConfig};
    use crate::limits::LimitConfig;

    const REALM: &str = "sip.example.com";
    const RURI: &str = "sip:sip.example.com";
    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    /// 2023-11-14T22:13:20Z at the test anchor.
    const UNIX: Duration = Duration::from_secs(1_700_000_000);
    const NODE: u32 = 7;

    fn ha1(user: &str) -> Ha1 {
        Ha1::from_password(Algorithm::Md5, user, REALM, &format!("pw-{user}"))
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A phone's `Authorization` for a REGISTER with `nonce`.
    fn authorization(user: &str, key: &Ha1, nonce: &str) -> String {
        let r = response(key, "REGISTER", RURI, nonce, Some(("00000001", "c0ffee")));
        format!(
            "Digest username=\"{user}\", realm=\"{REALM}\", nonce=\"{nonce}\", uri=\"{RURI}\", \
             response=\"{r}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"c0ffee\""
        )
    }

    fn nonce_of(challenge: &str) -> String {
        let start = challenge.find("nonce=\"").unwrap() + 7;
        let end = start + challenge[start..].find('"').unwrap();
        challenge[start..end].to_string()
    }

    /// A REGISTER for `user`'s address-of-record.
    struct Reg<'a> {
        user: &'a str,
        call_id: &'a str,
        cseq: u32,
        contacts: Vec<&'a str>,
        expires: Option<u32>,
    }

    impl<'a> Reg<'a> {
        fn new(user: &'a str, cseq: u32, contacts: &[&'a str]) -> Reg<'a> {
            Reg {
                user,
                call_id: "call-1",
                cseq,
                contacts: contacts.to_vec(),
                expires: None,
            }
        }

        fn expires(mut self, e: u32) -> Reg<'a> {
            self.expires = Some(e);
            self
        }

        fn call_id(mut self, c: &'a str) -> Reg<'a> {
            self.call_id = c;
            self
        }

        fn message(&self, authorization: Option<&str>) -> Message {
            let to = format!("<sip:{}@{REALM}>", self.user);
            let from = format!("{to};tag=f1");
            let cseq = format!("{} REGISTER", self.cseq);
            let expires = self.expires.map(|e| e.to_string());
            let mut headers = vec![
                ("Via", "SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bKreg1"),
                ("Max-Forwards", "70"),
                ("To", to.as_str()),
                ("From", from.as_str()),
                ("Call-ID", self.call_id),
                ("CSeq", cseq.as_str()),
            ];
            headers.extend(self.contacts.iter().map(|c| ("Contact", *c)));
            if let Some(e) = &expires {
                headers.push(("Expires", e.as_str()));
            }
            if let Some(a) = authorization {
                headers.push(("Authorization", a));
            }
            Message::request(Method::Register, RURI, &headers, None).unwrap()
        }
    }

    struct World {
        t0: Instant,
        reg: Registrar,
        authn: Authenticator,
        limiter: FailureLimiter,
        users: HashMap<String, Ha1>,
    }

    impl World {
        fn new(config: RegistrarConfig) -> World {
            let t0 = Instant::now();
            let users = ["alice", "bob", "carol"]
                .into_iter()
                .map(|u| (u.to_string(), ha1(u)))
                .collect();
            World {
                t0,
                reg: Registrar::new(config, t0, UNIX),
                authn: Authenticator::new(DigestConfig::new(REALM, SECRET), t0, UNIX).unwrap(),
                limiter: FailureLimiter::new(LimitConfig {
                    max_failures: 3,
                    ..LimitConfig::default()
                }),
                users,
            }
        }

        fn at(&self, s: u64) -> Instant {
            self.t0 + Duration::from_secs(s)
        }

        fn send_with(
            &mut self,
            request: &Message,
            source: SocketAddr,
            now: Instant,
            users: &mut dyn UserLookup,
        ) -> Reply {
            let auth = Auth {
                authenticator: &self.authn,
                limiter: &mut self.limiter,
                users,
            };
            self.reg
                .register(request, source, now, 0xabc, auth)
                .unwrap()
        }

        fn send(&mut self, request: &Message, source: SocketAddr, now: Instant) -> Message {
            let table = self.users.clone();
            let mut users = move |u: &str, _: Algorithm| {
                table
                    .get(u)
                    .cloned()
                    .map_or(UserAnswer::Unknown, UserAnswer::Found)
            };
            match self.send_with(request, source, now, &mut users) {
                Reply::Respond(m) => *m,
                other => panic!("{other:?}"),
            }
        }

        /// Sends `r` with good credentials made with a fresh nonce.
        fn authed(&mut self, r: &Reg<'_>, now: Instant) -> Message {
            let nonce = self.authn.nonce(now, 99);
            let header = authorization(r.user, &ha1(r.user), &nonce);
            self.send(&r.message(Some(&header)), addr("192.0.2.4:5060"), now)
        }

        fn events(&mut self) -> Vec<RegistrarEvent> {
            std::iter::from_fn(|| self.reg.poll_event()).collect()
        }
    }

    fn contacts(m: &Message) -> Vec<String> {
        m.header_values("Contact")
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    fn world() -> World {
        World::new(RegistrarConfig::new(NODE))
    }

    #[test]
    fn challenge_then_register() {
        let mut w = world();
        let r = Reg::new("alice", 1, &["<sip:alice@192.0.2.4:5060>"]);
        let first = w.send(&r.message(None), addr("192.0.2.4:5060"), w.t0);
        assert_eq!(first.status(), Some(401));
        let challenge = first.header_values("WWW-Authenticate")[0].to_owned();
        assert!(
            challenge.contains("realm=\"sip.example.com\""),
            "{challenge}"
        );
        assert!(!challenge.contains("stale"));
        assert_eq!(first.summary().to.tag.as_deref(), Some("abc"));
        assert!(w.events().is_empty());
        assert_eq!(w.reg.counters().registrations, 0);

        let nonce = nonce_of(&challenge);
        let header = authorization("alice", &ha1("alice"), &nonce);
        let r = Reg { cseq: 2, ..r };
        let ok = w.send(&r.message(Some(&header)), addr("192.0.2.4:5060"), w.at(1));
        assert_eq!(ok.status(), Some(200));
        assert_eq!(contacts(&ok), ["<sip:alice@192.0.2.4:5060>;expires=3600"]);
        assert_eq!(ok.header_values("Date"), ["Tue, 14 Nov 2023 22:13:21 GMT"]);
        let events = w.events();
        let [RegistrarEvent::Registered {
            aor,
            contact,
            session,
            expires: 3600,
        }] = events.as_slice()
        else {
            panic!("{events:?}");
        };
        assert_eq!(aor, "alice@sip.example.com");
        assert_eq!(contact, "sip:alice@192.0.2.4:5060");
        assert_eq!(session.node, NODE);
        assert_eq!(session.unix_ms, 1_700_000_001_000);
        let bindings = w.reg.lookup("alice@sip.example.com");
        assert_eq!(bindings.len(), 1);
        assert_eq!(bindings[0].source, addr("192.0.2.4:5060"));
        assert_eq!(bindings[0].expires_at, w.at(3601));
        let c = w.reg.counters();
        assert_eq!((c.challenges, c.successes, c.auth_failures), (1, 1, 0));
        assert_eq!((c.registrations, c.aors, c.refusals.total()), (1, 1, 0));
        assert_eq!(w.reg.next_timeout(), Some(w.at(3601)));
    }

    #[test]
    fn stale_nonce_is_challenged_again_not_counted() {
        let mut w = world();
        let nonce = w.authn.nonce(w.t0, 1);
        let header = authorization("alice", &ha1("alice"), &nonce);
        let r = Reg::new("alice", 1, &["<sip:alice@192.0.2.4>"]);
        let m = w.send(&r.message(Some(&header)), addr("192.0.2.4:5060"), w.at(301));
        assert_eq!(m.status(), Some(401));
        assert!(m.header_values("WWW-Authenticate")[0].ends_with("stale=true"));
        assert_eq!(w.limiter.counters().failures, 0);
        assert_eq!(w.reg.counters().auth_failures, 0);
        assert_eq!(w.reg.counters().challenges, 1);
        // The same nonce in time is fine.
        let m = w.send(&r.message(Some(&header)), addr("192.0.2.4:5060"), w.at(299));
        assert_eq!(m.status(), Some(200));
    }

    #[test]
    fn wrong_unknown_and_malformed_credentials() {
        let mut w = world();
        let src = addr("198.51.100.1:5060");
        let nonce = w.authn.nonce(w.t0, 1);
        let r = Reg::new("alice", 1, &["<sip:alice@192.0.2.4>"]);
        let bad = ha1("mallory");
        let wrong = authorization("alice", &bad, &nonce);
        assert_eq!(
            w.send(&r.message(Some(&wrong)), src, w.t0).status(),
            Some(403)
        );
        assert_eq!(w.limiter.counters().failures, 1);
        // An unknown user is wrong as well.
        let r2 = Reg::new("mallory", 1, &["<sip:m@192.0.2.4>"]);
        let unknown = authorization("mallory", &bad, &nonce);
        let m = w.send(&r2.message(Some(&unknown)), addr("198.51.100.2:5060"), w.t0);
        assert_eq!(m.status(), Some(403));
        assert_eq!(w.limiter.counters().failures, 2);
        assert_eq!(w.reg.counters().auth_failures, 2);
        // Unreadable credentials: 400, no failure counted.
        let m = w.send(&r.message(Some("Digest username=")), src, w.t0);
        assert_eq!(m.status(), Some(400));
        assert_eq!(w.reg.counters().refusals.get(Refusal::Malformed), 1);
        assert_eq!(w.limiter.counters().failures, 2);
        assert!(w.reg.lookup("alice@sip.example.com").is_empty());
        assert!(w.events().is_empty());
    }

    #[test]
    fn credentials_for_another_realm_are_challenged_ours_picked() {
        let mut w = world();
        let src = addr("192.0.2.4:5060");
        let nonce = w.authn.nonce(w.t0, 1);
        let ours = authorization("alice", &ha1("alice"), &nonce);
        let other = ours.replace("realm=\"sip.example.com\"", "realm=\"other.example\"");
        let r = Reg::new("alice", 1, &["<sip:alice@192.0.2.4>"]);
        let mut request = r.message(Some(&other));
        assert_eq!(w.send(&request, src, w.t0).status(), Some(401));
        assert_eq!(w.limiter.counters().failures, 0);
        request = request.with_header("Authorization", &ours).unwrap();
        assert_eq!(w.send(&request, src, w.t0).status(), Some(200));
    }

    #[test]
    fn a_blocked_source_is_refused_at_once() {
        let mut w = world();
        let src = addr("203.0.113.9:5060");
        let nonce = w.authn.nonce(w.t0, 1);
        let r = Reg::new("alice", 1, &["<sip:alice@192.0.2.4>"]);
        let wrong = authorization("alice", &ha1("eve"), &nonce);
        for _ in 0..3 {
            assert_eq!(
                w.send(&r.message(Some(&wrong)), src, w.t0).status(),
                Some(403)
            );
        }
        // The right password from the blocked source: still 403.
        let right = authorization("alice", &ha1("alice"), &nonce);
        let m = w.send(&r.message(Some(&right)), src, w.at(1));
        assert_eq!(m.status(), Some(403));
        // Even without credentials: no challenge.
        assert_eq!(w.send(&r.message(None), src, w.at(1)).status(), Some(403));
        let c = w.reg.counters();
        assert_eq!(c.refusals.get(Refusal::Blocked), 2);
        assert_eq!((c.auth_failures, c.successes, c.challenges), (3, 0, 0));
        assert_eq!(w.limiter.counters().blocked_requests, 2);
        // Another source with the right password gets through.
        let m = w.send(&r.message(Some(&right)), addr("192.0.2.4:5060"), w.at(1));
        assert_eq!(m.status(), Some(200));
    }

    #[test]
    fn only_your_own_aor() {
        let mut w = world();
        // Bob's credentials for Alice's address-of-record.
        let nonce = w.authn.nonce(w.t0, 1);
        let bob = authorization("bob", &ha1("bob"), &nonce);
        let r = Reg::new("alice", 1, &["<sip:bob@192.0.2.4>"]);
        let m = w.send(&r.message(Some(&bob)), addr("192.0.2.4:5060"), w.t0);
        assert_eq!(m.status(), Some(403));
        assert_eq!(w.reg.counters().refusals.get(Refusal::Forbidden), 1);
        assert!(w.reg.lookup("alice@sip.example.com").is_empty());
    }

    #[test]
    fn refresh_keeps_the_session() {
        let mut w = world();
        let r = Reg::new("alice", 1, &["<sip:alice@192.0.2.4>"]);
        assert_eq!(w.authed(&r, w.t0).status(), Some(200));
        let first = match w.events().as_slice() {
            [RegistrarEvent::Registered { session, .. }] => *session,
            e => panic!("{e:?}"),
        };
        let r = Reg::new("alice", 2, &["<sip:alice@192.0.2.4>"]).expires(7000);
        let m = w.authed(&r, w.at(1000));
        assert_eq!(contacts(&m), ["<sip:alice@192.0.2.4>;expires=7000"]);
        assert_eq!(
            w.events(),
            [RegistrarEvent::Refreshed {
                aor: "alice@sip.example.com".into(),
                contact: "sip:alice@192.0.2.4".into(),
                session: first,
                expires: 7000,
            }]
        );
        assert_eq!(w.reg.next_timeout(), Some(w.at(8000)));
        assert_eq!(w.reg.counters().registrations, 1);
        // The old expiry is gone: nothing happens at 3600.
        w.reg.handle_timeout(w.at(3600));
        assert!(w.events().is_empty());
        assert_eq!(w.reg.lookup("alice@sip.example.com")[0].session, first);
    }

    #[test]
    fn expires_zero_removes_one_binding() {
        let mut w = world();
        let r = Reg::new("alice", 1, &["<sip:a@192.0.2.4>", "<sip:a@192.0.2.5>"]);
        let m = w.authed(&r, w.t0);
        assert_eq!(contacts(&m).len(), 2);
        let sessions: Vec<SessionId> = w
            .reg
            .lookup("alice@sip.example.com")
            .iter()
            .map(|b| b.session)
            .collect();
        w.events();
        let r = Reg::new("alice", 2, &["<sip:a@192.0.2.4>"]).expires(0);
        let m = w.authed(&r, w.at(10));
        assert_eq!(contacts(&m), ["<sip:a@192.0.2.5>;expires=3590"]);
        assert_eq!(
            w.events(),
            [RegistrarEvent::Unregistered {
                aor: "alice@sip.example.com".into(),
                contact: "sip:a@192.0.2.4".into(),
                session: sessions[0],
                reason: UnregisterReason::Removed,
            }]
        );
        // A contact's own expires=0 wins over the header.
        let r = Reg::new("alice", 3, &["<sip:a@192.0.2.5>;expires=0"]).expires(3600);
        let m = w.authed(&r, w.at(20));
        assert!(contacts(&m).is_empty());
        assert!(w.reg.lookup("alice@sip.example.com").is_empty());
        let c = w.reg.counters();
        assert_eq!((c.registrations, c.aors), (0, 0));
        assert_eq!(w.reg.next_timeout(), None);
    }

    #[test]
    fn star_removes_all() {
        let mut w = world();
        let r = Reg::new("alice", 1, &["<sip:a@192.0.2.4>, <sip:a@192.0.2.5>"]);
        w.authed(&r, w.t0);
        assert_eq!(w.reg.lookup("alice@sip.example.com").len(), 2);
        w.events();
        // `*` needs Expires: 0, and to be alone.
        let m = w.authed(&Reg::new("alice", 2, &["*"]), w.at(1));
        assert_eq!(m.status(), Some(400));
        let m = w.authed(&Reg::new("alice", 2, &["*"]).expires(5), w.at(1));
        assert_eq!(m.status(), Some(400));
        let m = w.authed(
            &Reg::new("alice", 2, &["*", "<sip:a@192.0.2.6>"]).expires(0),
            w.at(1),
        );
        assert_eq!(m.status(), Some(400));
        assert_eq!(w.reg.counters().refusals.get(Refusal::Malformed), 3);
        // An old CSeq of the same call cannot remove them.
        let m = w.authed(&Reg::new("alice", 1, &["*"]).expires(0), w.at(1));
        assert_eq!(m.status(), Some(500));
        assert_eq!(w.reg.lookup("alice@sip.example.com").len(), 2);
        let m = w.authed(&Reg::new("alice", 2, &["*"]).expires(0), w.at(1));
        assert_eq!(m.status(), Some(200));
        assert!(contacts(&m).is_empty());
        let events = w.events();
        assert_eq!(events.len(), 2);
        assert!(events.iter().all(|e| matches!(
            e,
            RegistrarEvent::Unregistered {
                reason: UnregisterReason::Removed,
                ..
            }
        )));
        assert_eq!(w.reg.counters().registrations, 0);
    }

    #[test]
    fn expiry_bounds() {
        let mut w = world();
        let m = w.authed(
            &Reg::new("alice", 1, &["<sip:a@192.0.2.4>"]).expires(30),
            w.t0,
        );
        assert_eq!(m.status(), Some(423));
        assert_eq!(m.header_values("Min-Expires"), ["60"]);
        assert_eq!(w.reg.counters().refusals.get(Refusal::IntervalTooBrief), 1);
        // A too-brief param refuses the whole request.
        let r = Reg::new(
            "alice",
            2,
            &["<sip:a@192.0.2.4>", "<sip:a@192.0.2.5>;expires=59"],
        );
        assert_eq!(w.authed(&r, w.t0).status(), Some(423));
        assert!(w.reg.lookup("alice@sip.example.com").is_empty());
        // Over the maximum is cut; the param wins over the header.
        let r = Reg::new(
            "alice",
            3,
            &["<sip:a@192.0.2.4>", "<sip:a@192.0.2.5>;expires=120"],
        )
        .expires(100_000);
        let m = w.authed(&r, w.t0);
        assert_eq!(
            contacts(&m),
            [
                "<sip:a@192.0.2.4>;expires=7200",
                "<sip:a@192.0.2.5>;expires=120"
            ]
        );
        // Exactly the minimum is fine; a bare URI carries its param too.
        let r = Reg::new("bob", 1, &["sip:b@192.0.2.9;expires=60"]);
        assert_eq!(
            contacts(&w.authed(&r, w.t0)),
            ["<sip:b@192.0.2.9>;expires=60"]
        );
        // An expires that is not a number is malformed.
        let r = Reg::new("carol", 1, &["<sip:c@192.0.2.9>;expires=soon"]);
        assert_eq!(w.authed(&r, w.t0).status(), Some(400));
    }

    #[test]
    fn bindings_expire_in_simulated_time() {
        let mut w = world();
        w.authed(
            &Reg::new("alice", 1, &["<sip:a@192.0.2.4>"]).expires(60),
            w.t0,
        );
        w.authed(
            &Reg::new("bob", 1, &["<sip:b@192.0.2.5>"]).expires(120),
            w.t0,
        );
        w.events();
        assert_eq!(w.reg.next_timeout(), Some(w.at(60)));
        w.reg.handle_timeout(w.at(59));
        assert!(w.events().is_empty());
        w.reg.handle_timeout(w.at(60));
        let events = w.events();
        assert!(
            matches!(
                events.as_slice(),
                [RegistrarEvent::Unregistered { aor, reason: UnregisterReason::Expired, .. }]
                    if aor == "alice@sip.example.com"
            ),
            "{events:?}"
        );
        assert!(w.reg.lookup("alice@sip.example.com").is_empty());
        assert_eq!(w.reg.next_timeout(), Some(w.at(120)));
        // A REGISTER also sweeps first: Bob's 200 at 130 lists nothing of
        // his old binding, and the expiry event comes out.
        let m = w.authed(&Reg::new("bob", 2, &[]), w.at(130));
        assert_eq!(m.status(), Some(200));
        assert!(contacts(&m).is_empty());
        assert_eq!(w.events().len(), 1);
        assert_eq!(w.reg.counters().registrations, 0);
        assert_eq!(w.reg.next_timeout(), None);
    }

    #[test]
    fn a_query_lists_bindings_with_time_left() {
        let mut w = world();
        w.authed(&Reg::new("alice", 1, &["<sip:a@192.0.2.4>"]), w.t0);
        let m = w.authed(
            &Reg::new("alice", 2, &[]),
            w.t0 + Duration::from_millis(1500),
        );
        assert_eq!(contacts(&m), ["<sip:a@192.0.2.4>;expires=3599"]);
        w.events();
        assert!(w.events().is_empty());
    }

    #[test]
    fn cseq_ordering_per_call_id() {
        let mut w = world();
        w.authed(&Reg::new("alice", 5, &["<sip:a@192.0.2.4>"]), w.t0);
        w.events();
        for cseq in [5, 4] {
            let m = w.authed(
                &Reg::new("alice", cseq, &["<sip:a@192.0.2.4>"]).expires(0),
                w.at(1),
            );
            assert_eq!(m.status(), Some(500), "{cseq}");
        }
        assert_eq!(w.reg.counters().refusals.get(Refusal::OutOfOrder), 2);
        assert_eq!(w.reg.lookup("alice@sip.example.com")[0].cseq, 5);
        assert!(w.events().is_empty());
        // Another Call-ID (the phone restarted) may start lower.
        let r = Reg::new("alice", 1, &["<sip:a@192.0.2.4>"]).call_id("call-2");
        assert_eq!(w.authed(&r, w.at(2)).status(), Some(200));
        let b = &w.reg.lookup("alice@sip.example.com")[0];
        assert_eq!((b.call_id.as_str(), b.cseq), ("call-2", 1));
        assert!(matches!(
            w.events().as_slice(),
            [RegistrarEvent::Refreshed { .. }]
        ));
        // A higher CSeq of the same call goes through.
        let r = Reg::new("alice", 2, &["<sip:a@192.0.2.4>"])
            .call_id("call-2")
            .expires(0);
        assert_eq!(w.authed(&r, w.at(3)).status(), Some(200));
        assert!(w.reg.lookup("alice@sip.example.com").is_empty());
    }

    #[test]
    fn caps_on_bindings_and_aors() {
        let mut w = World::new(RegistrarConfig {
            max_bindings_per_aor: 2,
            max_aors: 2,
            ..RegistrarConfig::new(NODE)
        });
        let three = [
            "<sip:a@192.0.2.1>",
            "<sip:a@192.0.2.2>",
            "<sip:a@192.0.2.3>",
        ];
        let m = w.authed(&Reg::new("alice", 1, &three), w.t0);
        assert_eq!(m.status(), Some(403));
        assert!(w.reg.lookup("alice@sip.example.com").is_empty());
        w.authed(&Reg::new("alice", 2, &three[..2]), w.t0);
        // A third one is refused, but a swap (remove one, add one) fits.
        let m = w.authed(&Reg::new("alice", 3, &three[2..]), w.t0);
        assert_eq!(m.status(), Some(403));
        let swap = ["<sip:a@192.0.2.1>;expires=0", "<sip:a@192.0.2.3>"];
        assert_eq!(
            w.authed(&Reg::new("alice", 4, &swap), w.t0).status(),
            Some(200)
        );
        assert_eq!(w.reg.counters().refusals.get(Refusal::TooManyBindings), 2);
        // Two addresses-of-record at most.
        let r = Reg::new("bob", 1, &["<sip:b@192.0.2.9>"]).expires(60);
        assert_eq!(w.authed(&r, w.t0).status(), Some(200));
        let m = w.authed(&Reg::new("carol", 1, &["<sip:c@192.0.2.9>"]), w.t0);
        assert_eq!(m.status(), Some(503));
        assert_eq!(m.header_values("Retry-After"), ["60"]);
        assert_eq!(w.reg.counters().refusals.get(Refusal::TableFull), 1);
        // A query by Carol still works; her REGISTER does once Bob expired.
        assert_eq!(
            w.authed(&Reg::new("carol", 2, &[]), w.t0).status(),
            Some(200)
        );
        let m = w.authed(&Reg::new("carol", 3, &["<sip:c@192.0.2.9>"]), w.at(60));
        assert_eq!(m.status(), Some(200));
        assert_eq!(w.reg.counters().aors, 2);
    }

    #[test]
    fn session_ids_are_unique_and_carry_the_node() {
        let mut w = World::new(RegistrarConfig::new(0xbeef));
        for (i, user) in ["alice", "bob", "carol"].into_iter().enumerate() {
            let r = Reg::new(user, 1, &["<sip:x@192.0.2.1>", "<sip:x@192.0.2.2>"]);
            // Several in the same millisecond.
            w.authed(&r, w.at(i as u64 / 2));
        }
        let sessions: Vec<SessionId> = w
            .events()
            .into_iter()
            .map(|e| match e {
                RegistrarEvent::Registered { session, .. } => session,
                e => panic!("{e:?}"),
            })
            .collect();
        assert_eq!(sessions.len(), 6);
        for (i, s) in sessions.iter().enumerate() {
            assert_eq!(s.node, 0xbeef);
            assert!(sessions[..i].iter().all(|o| o != s), "{s}");
        }
        assert_eq!(sessions[0].unix_ms, 1_700_000_000_000);
        assert_eq!(sessions[5].unix_ms, 1_700_000_001_000);
        assert_eq!(sessions[0].to_string(), "beef-18bcfe56800-0");
    }

    #[test]
    fn a_pending_lookup_changes_nothing_and_is_fed_in_later() {
        let mut w = world();
        let nonce = w.authn.nonce(w.t0, 1);
        let header = authorization("alice", &ha1("alice"), &nonce);
        let request = Reg::new("alice", 1, &["<sip:a@192.0.2.4>"]).message(Some(&header));
        let src = addr("192.0.2.4:5060");
        let mut hook = |_: &str, _: Algorithm| UserAnswer::Pending;
        assert_eq!(
            w.send_with(&request, src, w.t0, &mut hook),
            Reply::Pending {
                username: "alice".into()
            }
        );
        assert!(w.events().is_empty());
        assert_eq!(w.reg.counters(), RegistrarCounters::default());
        assert_eq!(w.limiter.counters().failures, 0);
        // The hook answered: the same request again.
        let mut answered = |u: &str, _: Algorithm| UserAnswer::Found(ha1(u));
        let Reply::Respond(m) = w.send_with(&request, src, w.at(2), &mut answered) else {
            panic!();
        };
        assert_eq!(m.status(), Some(200));
        assert_eq!(w.events().len(), 1);
    }

    #[test]
    fn not_a_register() {
        let mut w = world();
        let headers = [
            ("Via", "SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bKo1"),
            ("To", "<sip:alice@sip.example.com>"),
            ("From", "<sip:alice@sip.example.com>;tag=1"),
            ("Call-ID", "o1"),
            ("CSeq", "1 OPTIONS"),
        ];
        let options = Message::request(Method::Options, RURI, &headers, None).unwrap();
        let m = w.send(&options, addr("192.0.2.4:5060"), w.t0);
        assert_eq!(m.status(), Some(405));
        assert_eq!(m.header_values("Allow"), ["REGISTER"]);
        assert_eq!(w.reg.counters().refusals.get(Refusal::NotRegister), 1);
    }

    #[test]
    fn aor_normalisation() {
        assert_eq!(
            aor_of("sip:alice@SIP.Example.COM:5070;transport=udp").as_deref(),
            Some("alice@sip.example.com")
        );
        assert_eq!(
            aor_of("sips:al%69ce@example.com").as_deref(),
            Some("alice@example.com")
        );
        assert_eq!(
            aor_of("sip:Alice@example.com").as_deref(),
            Some("Alice@example.com")
        );
        assert_eq!(aor_of("sip:example.com"), None);
        assert_eq!(aor_of("tel:+15551234"), None);
        // A To without a user: 404.
        let mut w = world();
        let nonce = w.authn.nonce(w.t0, 1);
        let header = authorization("alice", &ha1("alice"), &nonce);
        let headers = [
            ("Via", "SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bKn1"),
            ("To", "<sip:sip.example.com>"),
            ("From", "<sip:alice@sip.example.com>;tag=1"),
            ("Call-ID", "n1"),
            ("CSeq", "1 REGISTER"),
            ("Authorization", header.as_str()),
        ];
        let request = Message::request(Method::Register, RURI, &headers, None).unwrap();
        assert_eq!(
            w.send(&request, addr("192.0.2.4:5060"), w.t0).status(),
            Some(404)
        );
    }

    #[test]
    fn dates() {
        for (secs, want) in [
            (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
            (951_782_400, "Tue, 29 Feb 2000 00:00:00 GMT"),
            (1_700_000_000, "Tue, 14 Nov 2023 22:13:20 GMT"),
            (4_107_542_399, "Sun, 28 Feb 2100 23:59:59 GMT"),
            (4_107_542_400, "Mon, 01 Mar 2100 00:00:00 GMT"),
        ] {
            assert_eq!(http_date(Duration::from_secs(secs)), want);
        }
    }
}
