//! REGISTER: digest authentication against the `[[sip.users]]` table, the
//! registrar's bindings, and the per-source limit on failed attempts
//! (after 10 failures in 60 s a source is answered 403 for 10 minutes).
//!
//! Nonces are keyed with a secret derived from the cluster secret when the
//! node is clustered (any node checks any node's nonces), else with 32
//! random bytes of this process.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use corecast_media::SessionId;
use corecast_sip::digest::{Algorithm, Authenticator, DigestConfig, Ha1};
use corecast_sip::limits::{FailureLimiter, LimitConfig};
use corecast_sip::message::Message;
use corecast_sip::registrar::{
    self, Registrar, RegistrarConfig, RegistrarCounters, RegistrarEvent, Reply, UserAnswer,
};
use serde_json::{json, Value};

use corecast_cluster::RegistrationRecord;

use crate::config::SipUser;
use crate::messages::ClusterCommand;

/// The realm of challenges when the configuration names none.
pub const DEFAULT_REALM: &str = "corecast";

/// How long the hook's answer about a user is kept.
const HOOK_CACHE: Duration = Duration::from_secs(60);

/// What became of a REGISTER.
pub enum Outcome {
    /// Answer it so.
    Respond(Box<Message>),
    /// The user is not known yet: ask the hook, then handle it again.
    Pending(String),
    /// Nothing to send (a response could not be built).
    Nothing,
}

/// A binding as the API shows it.
#[derive(Debug, Clone)]
pub struct Registration {
    pub session: SessionId,
    pub expires_at: Instant,
    pub source: SocketAddr,
}

/// Registrations of this node.
pub struct Registrations {
    registrar: Registrar,
    authenticator: Authenticator,
    limiter: FailureLimiter,
    realm: String,
    users: HashMap<String, SipUser>,
    /// (address-of-record, contact) → binding, from the registrar's events.
    bindings: BTreeMap<(String, String), Registration>,
    /// Where the REGISTER being handled came from (for the events).
    source: Option<SocketAddr>,
    /// Bindings of other nodes (the cluster's key-value store), by key.
    remote: HashMap<u64, RegistrationRecord>,
    /// Changes of our bindings for the cluster, oldest first.
    pub cluster_out: Vec<ClusterCommand>,
    /// Unix time at `anchor`, for the records' expiry.
    anchor: (Instant, Duration),
    /// Whether a hook answers for users not in the table.
    hook: bool,
    /// The hook's answers: user → HA1 (MD5 hex; `None`: no such user), and
    /// until when they hold.
    hook_cache: HashMap<String, (Option<String>, Instant)>,
}

impl Registrations {
    /// `shared` is the cluster secret, when clustered.
    pub fn new(
        node: u32,
        users: &[SipUser],
        shared: Option<&[u8]>,
        hook: bool,
        now: Instant,
    ) -> Self {
        let realm = DEFAULT_REALM.to_string();
        let config = match shared {
            Some(secret) => DigestConfig::from_shared_secret(realm.clone(), secret),
            None => DigestConfig::new(realm.clone(), rand::random::<[u8; 32]>().to_vec()),
        };
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        let authenticator = match Authenticator::new(config, now, unix) {
            Ok(a) => a,
            // The realm is a constant and the secret 32 bytes: cannot fail.
            Err(e) => unreachable!("digest configuration: {e}"),
        };
        Registrations {
            registrar: Registrar::new(RegistrarConfig::new(node), now, unix),
            authenticator,
            limiter: FailureLimiter::new(LimitConfig::default()),
            realm,
            users: users.iter().map(|u| (u.user.clone(), u.clone())).collect(),
            bindings: BTreeMap::new(),
            source: None,
            remote: HashMap::new(),
            cluster_out: Vec::new(),
            anchor: (now, unix),
            hook,
            hook_cache: HashMap::new(),
        }
    }

    /// The hook's answer about `user`.
    pub fn hook_answer(&mut self, now: Instant, user: String, ha1: Option<String>) {
        if self.hook_cache.len() >= 10_000 {
            self.hook_cache.retain(|_, (_, until)| *until > now);
        }
        // Still full: one answer gives way (the REGISTER waiting for this
        // one must find it, or the hook would be asked again and again).
        if self.hook_cache.len() >= 10_000 {
            if let Some(k) = self.hook_cache.keys().next().cloned() {
                self.hook_cache.remove(&k);
            }
        }
        self.hook_cache.insert(user, (ha1, now + HOOK_CACHE));
    }

    /// Answers a REGISTER from `source`.
    pub fn register(&mut self, now: Instant, request: &Message, source: SocketAddr) -> Outcome {
        let realm = self.realm.clone();
        let users = &self.users;
        let cache = &self.hook_cache;
        let hook = self.hook;
        let mut lookup = |username: &str, algorithm: Algorithm| -> UserAnswer {
            let Some(u) = users.get(username) else {
                return match cache.get(username) {
                    Some((ha1, until)) if *until > now => ha1
                        .as_deref()
                        .and_then(|h| Ha1::from_hex(algorithm, h))
                        .map_or(UserAnswer::Unknown, UserAnswer::Found),
                    _ if hook => UserAnswer::Pending,
                    _ => UserAnswer::Unknown,
                };
            };
            if let Some(password) = &u.password {
                return UserAnswer::Found(Ha1::from_password(
                    algorithm, username, &realm, password,
                ));
            }
            match u.ha1.as_deref().and_then(|h| Ha1::from_hex(algorithm, h)) {
                Some(ha1) => UserAnswer::Found(ha1),
                None => UserAnswer::Unknown,
            }
        };
        let auth = registrar::Auth {
            authenticator: &self.authenticator,
            limiter: &mut self.limiter,
            users: &mut lookup,
        };
        let reply = self
            .registrar
            .register(request, source, now, rand::random(), auth);
        self.source = Some(source);
        self.take_events(now);
        match reply {
            Ok(Reply::Respond(response)) => Outcome::Respond(response),
            Ok(Reply::Pending { username }) => Outcome::Pending(username),
            Err(_) => Outcome::Nothing,
        }
    }

    /// Expires bindings.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.registrar.handle_timeout(now);
        self.source = None;
        self.take_events(now);
    }

    fn take_events(&mut self, now: Instant) {
        while let Some(event) = self.registrar.poll_event() {
            match event {
                RegistrarEvent::Registered {
                    aor,
                    contact,
                    session,
                    expires,
                }
                | RegistrarEvent::Refreshed {
                    aor,
                    contact,
                    session,
                    expires,
                } => {
                    let source = self
                        .source
                        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
                    tracing::info!("sip: {aor} registered at {contact} ({session}, {expires} s)");
                    let expires_at = now + Duration::from_secs(u64::from(expires));
                    self.cluster_out
                        .push(ClusterCommand::SetRegistration(RegistrationRecord {
                            aor: aor.clone(),
                            contact: contact.clone(),
                            session: session.to_string(),
                            node: 0,
                            expires_ms: self.unix_ms(expires_at),
                        }));
                    self.bindings.insert(
                        (aor, contact),
                        Registration {
                            session,
                            expires_at: now + Duration::from_secs(u64::from(expires)),
                            source,
                        },
                    );
                }
                RegistrarEvent::Unregistered {
                    aor,
                    contact,
                    reason,
                    ..
                } => {
                    tracing::info!("sip: {aor} at {contact} unregistered ({reason:?})");
                    self.cluster_out.push(ClusterCommand::DelRegistration {
                        aor: aor.clone(),
                        contact: contact.clone(),
                    });
                    self.bindings.remove(&(aor, contact));
                }
            }
        }
    }

    /// The bindings of `aor` (`user@host`), newest last: contact and the
    /// address its REGISTER came from.
    pub fn contacts(&self, aor: &str) -> Vec<(String, SocketAddr)> {
        self.registrar
            .lookup(aor)
            .iter()
            .map(|b| (b.contact.clone(), b.source))
            .collect()
    }

    /// The session of a binding of `aor` here, if any.
    pub fn session_of(&self, aor: &str) -> Option<String> {
        self.registrar
            .lookup(aor)
            .first()
            .map(|b| b.session.to_string())
    }

    /// The addresses-of-record of user `user` (any host).
    pub fn aors_of_user(&self, user: &str) -> Vec<String> {
        let prefix = format!("{user}@");
        let mut aors: Vec<String> = self
            .bindings
            .keys()
            .filter(|(aor, _)| aor.starts_with(&prefix))
            .map(|(aor, _)| aor.clone())
            .collect();
        aors.dedup();
        aors
    }

    fn unix_ms(&self, at: Instant) -> u64 {
        let (anchor, unix) = self.anchor;
        (unix + at.saturating_duration_since(anchor)).as_millis() as u64
    }

    /// Another node's binding was set or went.
    pub fn on_remote(&mut self, up: bool, record: RegistrationRecord) {
        if up {
            self.remote.insert(record.key(), record);
        } else {
            self.remote.remove(&record.key());
        }
    }

    /// The node that holds a live binding of `to` (a user name or an
    /// address-of-record), when another node does.
    pub fn remote_node(&self, to: &str, now: Instant) -> Option<u32> {
        let now_ms = self.unix_ms(now);
        let user = format!("{to}@");
        self.remote
            .values()
            .filter(|r| r.expires_ms > now_ms)
            .filter(|r| r.aor == to.to_ascii_lowercase() || r.aor.starts_with(&user))
            .max_by_key(|r| r.expires_ms)
            .map(|r| r.node)
    }

    pub fn counters(&self) -> RegistrarCounters {
        self.registrar.counters()
    }

    /// Whether a request from `ip` may be handled (counts the blocked).
    pub fn allow(&mut self, ip: std::net::IpAddr, now: Instant) -> bool {
        matches!(
            self.limiter.check(ip, now),
            corecast_sip::limits::Verdict::Allow
        )
    }

    /// A refused call from `ip` (no such room, not allowed): counted like
    /// a failed authentication.
    pub fn failed(&mut self, ip: std::net::IpAddr, now: Instant) {
        let _ = self.limiter.record_failure(ip, now);
    }

    pub fn blocked_requests(&self) -> u64 {
        self.limiter.counters().blocked_requests
    }

    /// `/api/sip/registrations`: ours, then other nodes' (with `node`).
    pub fn json(&self, now: Instant) -> Vec<Value> {
        let mut out: Vec<Value> = self
            .bindings
            .iter()
            .map(|((aor, contact), r)| {
                json!({
                    "aor": aor,
                    "contact": contact,
                    "session": r.session.to_string(),
                    "expires_in": r.expires_at.saturating_duration_since(now).as_secs(),
                    "source": r.source.to_string(),
                })
            })
            .collect();
        let now_ms = self.unix_ms(now);
        out.extend(
            self.remote
                .values()
                .filter(|r| r.expires_ms > now_ms)
                .map(|r| {
                    json!({
                        "aor": r.aor,
                        "contact": r.contact,
                        "session": r.session,
                        "expires_in": (r.expires_ms - now_ms) / 1000,
                        "node": r.node,
                    })
                }),
        );
        out
    }
}
