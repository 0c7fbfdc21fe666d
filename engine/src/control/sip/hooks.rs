//! The application's SIP hook (`--sip-hook URL`), three JSON POSTs:
//!
//! - `{hook}/sip/auth` `{"user", "realm"}` for a REGISTER of a user not in
//!   `[[sip.users]]`: 200 `{"ha1": "<hex MD5 of user:realm:password>"}`, or
//!   404 for no such user. Answers are kept 60 s. The REGISTER waits for
//!   the answer (its retransmissions are absorbed); when the hook cannot
//!   be asked, the waiting REGISTERs get 503.
//! - `{hook}/sip/invite` `{"from", "to", "request_uri", "session"}` for
//!   every call in (`session`: the caller's registration here, if any).
//!   The caller hears ringing meanwhile. 200 `{"action": "accept", "room",
//!   "peer"}` answers it into that room (as that peer, default its
//!   connection id); `{"action": "reject", "status": 486}` refuses it (403
//!   without a status). No decision within [`INVITE_LIMIT`], or a hook
//!   that cannot be asked: 480.
//! - `{hook}/sip/event` `{"event": "sip_call", "id", "room", "peer",
//!   "state", "reason"}` for the calls placed through the API, as the room
//!   gets them (the answer is not read).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use corecast_sip::dialog::CallHandle;
use corecast_sip::message::Message;
use corecast_sip::sdp::{NegotiatedMedia, SdpError};
use corecast_sip::transaction::TxId;
use serde_json::{json, Value};

use super::super::hook::post_json;
use super::register::{Outcome, DEFAULT_REALM};
use super::{Service, SipCommand};

/// How long the hook may take to say who a user is.
const AUTH_LIMIT: Duration = Duration::from_secs(5);
/// How long the hook may take to decide about a call (the caller hears
/// ringing meanwhile).
pub const INVITE_LIMIT: Duration = Duration::from_secs(20);
/// How long an event may take to be delivered.
const EVENT_LIMIT: Duration = Duration::from_secs(5);

/// A call in waiting for the hook.
pub struct PendingInvite {
    from: String,
    source: Option<SocketAddr>,
    /// The transport its INVITE came over (our BYE uses it).
    transport: corecast_sip::transaction::Transport,
}

impl Service {
    /// A REGISTER: answered now, or once the hook says who its user is.
    pub(super) fn register(&mut self, now: Instant, id: TxId, request: Message, from: SocketAddr) {
        match self.registrations.register(now, &request, from) {
            Outcome::Respond(response) => {
                if let Err(e) = self.txs.respond(now, id, *response) {
                    tracing::debug!("sip: REGISTER answer not sent: {e}");
                }
            }
            Outcome::Pending(user) => {
                let waiting = self.waiting_auth.entry(user.clone()).or_default();
                // At most a few REGISTERs wait per user; more are dropped
                // (their retransmissions come back).
                if waiting.len() < 16 {
                    waiting.push((id, request, from));
                }
                if waiting.len() == 1 {
                    self.ask_hook_auth(user);
                }
            }
            Outcome::Nothing => {}
        }
    }

    fn ask_hook_auth(&self, user: String) {
        let (Some(hook), Some(tx)) = (self.hook.clone(), self.control.sip_commands.clone()) else {
            return;
        };
        tokio::spawn(async move {
            let body = json!({"user": user, "realm": DEFAULT_REALM}).to_string();
            let url = format!("{hook}/sip/auth");
            let ha1 = match post_json(&url, Bytes::from(body), &[], AUTH_LIMIT).await {
                Ok(a) if a.status.is_success() => serde_json::from_slice::<Value>(&a.body)
                    .ok()
                    .and_then(|v| v["ha1"].as_str().map(str::to_string))
                    .filter(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                    .ok_or_else(|| format!("{url}: 2xx without an \"ha1\" of 32 hex digits"))
                    .map(Some),
                Ok(a) if a.status.as_u16() == 404 => Ok(None),
                Ok(a) => Err(format!("{url}: status {}", a.status)),
                Err(e) => Err(format!("{url}: {e}")),
            };
            let _ = tx.send(SipCommand::AuthAnswer { user, ha1 }).await;
        });
    }

    pub(super) fn on_auth_answer(
        &mut self,
        now: Instant,
        user: String,
        ha1: Result<Option<String>, String>,
    ) {
        let waiting = self.waiting_auth.remove(&user).unwrap_or_default();
        match ha1 {
            Ok(ha1) => {
                self.registrations.hook_answer(now, user, ha1);
                for (id, request, from) in waiting {
                    self.register(now, id, request, from);
                }
            }
            Err(e) => {
                tracing::warn!("sip: the hook cannot say who {user} is: {e}");
                for (id, request, _) in waiting {
                    let response = Message::response(&request, 503, None, None)
                        .and_then(|m| m.with_header("Retry-After", "5"));
                    if let Ok(response) = response {
                        let _ = self.txs.respond(now, id, response);
                    }
                }
            }
        }
    }

    /// A call in: ringing, and the hook decides.
    pub(super) fn ask_hook_invite(
        &mut self,
        call: CallHandle,
        from: &str,
        to: &str,
        request_uri: &str,
        offer: Result<NegotiatedMedia, SdpError>,
        source: Option<SocketAddr>,
    ) {
        if let Err(e) = offer {
            self.stats.calls_refused += 1;
            let _ = self.calls.reject(call, e.status(), Instant::now());
            return;
        }
        let (Some(hook), Some(tx)) = (self.hook.clone(), self.control.sip_commands.clone()) else {
            return;
        };
        let _ = self.calls.ringing(call);
        let session =
            corecast_sip::registrar::aor_of(from).and_then(|a| self.registrations.session_of(&a));
        self.invites.insert(
            call,
            PendingInvite {
                from: from.to_string(),
                source,
                transport: self.last_transport,
            },
        );
        let body = json!({
            "from": from,
            "to": to,
            "request_uri": request_uri,
            "session": session,
        })
        .to_string();
        tokio::spawn(async move {
            let url = format!("{hook}/sip/invite");
            let answer = match post_json(&url, Bytes::from(body), &[], INVITE_LIMIT).await {
                Ok(a) if a.status.is_success() => serde_json::from_slice::<Value>(&a.body)
                    .map_err(|e| format!("{url}: answer is not JSON: {e}")),
                Ok(a) => Err(format!("{url}: status {}", a.status)),
                Err(e) => Err(format!("{url}: {e}")),
            };
            let _ = tx.send(SipCommand::InviteAnswer { call, answer }).await;
        });
    }

    pub(super) fn on_invite_answer(
        &mut self,
        now: Instant,
        call: CallHandle,
        answer: Result<Value, String>,
    ) {
        // Gone meanwhile (CANCEL): nothing to decide.
        let Some(p) = self.invites.remove(&call) else {
            return;
        };
        let status = match answer {
            Ok(v) if v["action"] == "accept" => {
                let room = v["room"].as_str().unwrap_or_default().to_string();
                let peer = v["peer"].as_str().map(str::to_string);
                // The call keeps the transport of its INVITE.
                let was = std::mem::replace(&mut self.last_transport, p.transport);
                let placed = self.answer_into(now, call, &room, peer, &p.from, p.source, true);
                self.last_transport = was;
                match placed {
                    Ok(()) => return,
                    Err(status) => status,
                }
            }
            Ok(v) if v["action"] == "reject" => v["status"]
                .as_u64()
                .and_then(|s| u16::try_from(s).ok())
                .filter(|s| (300..=699).contains(s))
                .unwrap_or(403),
            Ok(v) => {
                tracing::warn!("sip: the hook's answer has no known action: {v}");
                480
            }
            Err(e) => {
                tracing::warn!("sip: the hook cannot decide a call: {e}");
                480
            }
        };
        self.stats.calls_refused += 1;
        let _ = self.calls.reject(call, status, now);
    }

    /// A call's event for the hook (not waited for).
    pub(super) fn hook_event(&self, event: &Value, room: &str) {
        let Some(hook) = self.hook.clone() else {
            return;
        };
        let mut event = event.clone();
        event["room"] = room.into();
        tokio::spawn(async move {
            let url = format!("{hook}/sip/event");
            if let Err(e) = post_json(&url, Bytes::from(event.to_string()), &[], EVENT_LIMIT).await
            {
                tracing::debug!("sip: event not delivered to {url}: {e}");
            }
        });
    }
}
