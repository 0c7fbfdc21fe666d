//! The user-agent client side: calls we place (RFC 3261 §13.2, §9.1,
//! §12.1.2), in the same [`Calls`] table as the calls that come in.
//!
//! 1. [`Calls::prepare_invite`] builds our INVITE with an SDP offer (PCMU,
//!    PCMA, Opus, telephone-event) for the engine to send in a client
//!    transaction; [`Calls::invite_sent`] files the call under that
//!    transaction ([`CallState::Early`]).
//! 2. A provisional response with a To tag (180, 183) gives
//!    [`Event::Ringing`] once.
//! 3. A 2xx: we apply the answer, take the callee's tag, Contact and route
//!    set (the Record-Route in reverse, §12.1.2), ACK it
//!    ([`Output::SendAck`], a request outside any transaction; each
//!    retransmitted 2xx is ACKed again) and the call is
//!    [`CallState::Confirmed`] with [`Event::Established`]. An answer we
//!    cannot use is ACKed too, with [`Event::AnswerUnusable`]: the engine
//!    hangs up ([`Calls::hangup`], our BYE).
//! 4. 3xx–6xx (ACKed by the transaction layer): [`EndReason::Refused`] with
//!    the status, or [`EndReason::Cancelled`] for 487 after our CANCEL.
//!    No final response by timer B: [`EndReason::Unanswered`].
//! 5. [`Calls::hangup`] of an early outgoing call returns our CANCEL (same
//!    branch as the INVITE, §9.1); of a confirmed one, our BYE.
//!
//! In the dialog the callee's requests (BYE, re-INVITE, OPTIONS) are
//! handled as for calls that came in.

use std::time::Instant;

use super::{
    Bye, Call, CallHandle, CallState, Calls, DialogError, DialogKey, EndReason, Event, Output,
    ACCEPT, ALLOW, SUPPORTED,
};
use crate::message::{Message, Method, ParseError, MAGIC_COOKIE};
use crate::sdp::{LocalMedia, SdpSession};
use crate::transaction::{TxError, TxId};

/// Our INVITE, from [`Calls::prepare_invite`], to send and then file with
/// [`Calls::invite_sent`].
#[derive(Debug)]
pub struct Invite {
    /// The request.
    pub request: Message,
    /// The URI to send it to (the callee's contact).
    pub next_hop: String,
    call: Call,
}

impl Calls {
    /// Our INVITE of `target` (the Request-URI: a registered contact or a
    /// URI the engine was given), with `to` as the To header (the
    /// address-of-record called) and `from` as our From (without tag),
    /// offering media received at `local`.
    pub fn prepare_invite(
        &mut self,
        target: &str,
        to: &str,
        from: &str,
        local: LocalMedia,
    ) -> Result<Invite, DialogError> {
        let call_id = format!("{:016x}{:016x}@corecast", self.draw(), self.draw());
        let local_tag = format!("{:016x}", self.draw());
        let branch = self.draw();
        let mut sdp = SdpSession::new(self.draw() >> 1);
        let offer = sdp.offer(&local, &self.config.preference);
        let via = format!(
            "SIP/2.0/UDP {};branch={MAGIC_COOKIE}{branch:016x}",
            self.config.sent_by
        );
        let from_tagged = format!("{from};tag={local_tag}");
        let contact = format!("<{}>", self.config.contact);
        let headers = [
            ("Via", via.as_str()),
            ("Max-Forwards", "70"),
            ("From", from_tagged.as_str()),
            ("To", to),
            ("Call-ID", call_id.as_str()),
            ("CSeq", "1 INVITE"),
            ("Contact", contact.as_str()),
            ("Allow", ALLOW),
            ("Supported", SUPPORTED),
        ];
        let request = Message::request(
            Method::Invite,
            target,
            &headers,
            Some((ACCEPT, offer.as_bytes())),
        )?;
        let call = Call {
            key: DialogKey {
                call_id,
                local_tag,
                remote_tag: String::new(),
            },
            state: CallState::Early,
            invite: request.clone(),
            invite_tx: TxId::placeholder(),
            record_route: Vec::new(),
            route_set: Vec::new(),
            remote_target: target.to_owned(),
            remote_party: to.to_owned(),
            local_party: from.to_owned(),
            transport: "UDP".to_owned(),
            remote_cseq: 0,
            local_cseq: 1,
            sdp,
            local: Some(local),
            media: None,
            awaiting_ack: None,
            bye: None,
            txs: Vec::new(),
            established_at: None,
            outgoing: true,
            ringing_said: false,
            cancelled: false,
        };
        Ok(Invite {
            request,
            next_hop: target.to_owned(),
            call,
        })
    }

    /// Files a call whose INVITE went out in client transaction `tx` (or
    /// could not be sent: `None` is returned, nothing is kept).
    pub fn invite_sent(
        &mut self,
        invite: Invite,
        sent: Result<TxId, TxError>,
    ) -> Option<CallHandle> {
        if self.calls.len() >= self.config.max_calls {
            self.counters.refused_full += 1;
            return None;
        }
        let tx = sent.ok()?;
        let mut call = invite.call;
        call.invite_tx = tx;
        call.txs.push(tx);
        let handle = CallHandle(self.next_handle);
        self.next_handle += 1;
        self.by_tx.insert(tx, handle);
        self.calls.insert(handle, call);
        self.counters.outgoing += 1;
        Some(handle)
    }

    /// A response to our INVITE (or a retransmitted 2xx of it).
    pub(super) fn invite_response(&mut self, now: Instant, handle: CallHandle, response: &Message) {
        let status = response.status().unwrap_or(0);
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        let to_tag = response.summary().to.tag.clone();
        match status {
            100 => {}
            101..=199 => {
                if to_tag.is_some() && !call.ringing_said {
                    call.ringing_said = true;
                    self.out
                        .push_back(Output::Event(Event::Ringing { call: handle }));
                }
            }
            200..=299 => self.answered(now, handle, response),
            _ => {
                let reason = if status == 487 && call.cancelled {
                    EndReason::Cancelled
                } else {
                    EndReason::Refused(status)
                };
                self.end(now, handle, reason);
            }
        }
    }

    fn answered(&mut self, now: Instant, handle: CallHandle, response: &Message) {
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        if call.state == CallState::Early {
            let s = response.summary();
            call.key.remote_tag = s.to.tag.clone().unwrap_or_default();
            if let Some(to) = response.header_values("To").first() {
                call.remote_party = to.to_string();
            }
            if let Some(contact) = s.contact.clone().filter(|c| c != "*") {
                call.remote_target = contact;
            }
            // §12.1.2: the route set is the Record-Route in reverse.
            let mut routes: Vec<String> = response
                .header_values("Record-Route")
                .into_iter()
                .flat_map(super::split_list)
                .collect();
            routes.reverse();
            call.route_set = routes;
            call.state = CallState::Confirmed;
            call.established_at = Some(now);
            let media = call.sdp.apply_answer(response.body());
            call.media = media.as_ref().ok().cloned();
            let key = call.key.clone();
            self.by_dialog.insert(key, handle);
            self.counters.established += 1;
            if let Ok(media) = media {
                self.out.push_back(Output::Event(Event::Established {
                    call: handle,
                    media,
                }));
            } else {
                // Nothing we can play: ACK, then the engine hangs up.
                self.out
                    .push_back(Output::Event(Event::AnswerUnusable { call: handle }));
            }
        }
        let branch = self.draw();
        let Some(call) = self.calls.get(&handle) else {
            return;
        };
        if let Ok(ack) = build_ack(&self.config.sent_by, call, branch) {
            self.out.push_back(Output::SendAck {
                call: handle,
                request: ack.request,
                next_hop: ack.next_hop,
            });
        }
    }

    /// Gives up a call we placed and cancelled whose INVITE never got its
    /// final response (RFC 3261 §9.1: after 64 x T1 the UAC may consider
    /// it gone): it ends as [`EndReason::Unanswered`].
    pub fn abandon(&mut self, call: CallHandle, now: Instant) {
        if self
            .calls
            .get(&call)
            .is_some_and(|c| c.outgoing && c.state == CallState::Early)
        {
            self.end(now, call, EndReason::Unanswered);
        }
    }

    /// Our CANCEL of an early outgoing call (§9.1: the INVITE's Request-URI,
    /// Call-ID, From, To, CSeq number and top Via).
    pub(super) fn cancel_outgoing(&mut self, handle: CallHandle) -> Result<Bye, DialogError> {
        let call = self
            .calls
            .get_mut(&handle)
            .ok_or(DialogError::UnknownCall)?;
        let request = Message::cancel_for(&call.invite)?;
        call.cancelled = true;
        Ok(Bye {
            request,
            next_hop: call.remote_target.clone(),
        })
    }
}

/// The ACK of a 2xx (§13.2.2.4): to the remote target through the route
/// set, the INVITE's CSeq number, a new branch.
fn build_ack(sent_by: &str, call: &Call, branch: u64) -> Result<Bye, ParseError> {
    let via = format!("SIP/2.0/UDP {sent_by};branch={MAGIC_COOKIE}a{branch:015x}");
    let from = format!("{};tag={}", call.local_party.trim_end(), call.key.local_tag);
    let cseq = format!("{} ACK", call.invite.summary().cseq);
    let (uri, next_hop) = match call.route_set.first() {
        Some(first) => (call.remote_target.clone(), super::uri_of(first)),
        None => (call.remote_target.clone(), call.remote_target.clone()),
    };
    let mut headers = vec![
        ("Via", via.as_str()),
        ("Max-Forwards", "70"),
        ("From", from.as_str()),
        ("To", call.remote_party.as_str()),
        ("Call-ID", call.key.call_id.as_str()),
        ("CSeq", cseq.as_str()),
    ];
    headers.extend(call.route_set.iter().map(|r| ("Route", r.as_str())));
    let request = Message::request(Method::Ack, &uri, &headers, None)?;
    Ok(Bye { request, next_hop })
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;
    use crate::transaction::{Received, Transport};

    const ANSWER: &str = "v=0\r\no=alice 1 1 IN IP4 192.0.2.7\r\ns=-\r\n\
c=IN IP4 192.0.2.7\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n";

    /// The dialog tests' world, with what reached the callee in `sent`.
    use super::super::tests::World;

    fn callee() -> SocketAddr {
        World::phone()
    }

    /// Places a call to the callee; returns it and our INVITE.
    fn place(w: &mut World) -> (CallHandle, Message) {
        let local = LocalMedia {
            address: "192.0.2.10".parse().expect("ip"),
            rtp_port: 30000,
        };
        let invite = w
            .calls
            .prepare_invite(
                "sip:alice@192.0.2.7:5062",
                "<sip:alice@example.com>",
                "<sip:lobby@192.0.2.10:5060>",
                local,
            )
            .expect("invite");
        let request = invite.request.clone();
        let sent = w
            .txs
            .send_request(w.now, request.clone(), callee(), Transport::Unreliable);
        let call = w.calls.invite_sent(invite, sent).expect("filed");
        w.pump();
        (call, request)
    }

    /// The callee's response to our INVITE (its tag `alice1`).
    fn reply(invite: &Message, status: u16, extra: &[(&str, &str)], sdp: Option<&str>) -> Message {
        let mut m = Message::response(invite, status, None, Some("alice1")).expect("response");
        for (n, v) in extra {
            m = m.with_header(n, v).expect("header");
        }
        if let Some(sdp) = sdp {
            m = m
                .with_body(ACCEPT, bytes::Bytes::from(sdp.to_owned()))
                .expect("body");
        }
        m
    }

    fn method_of(m: &Message) -> Option<Method> {
        m.method().cloned()
    }

    #[test]
    fn an_answered_call_is_acked_established_and_ended_by_the_callee() {
        let mut w = World::new(8);
        let (call, invite) = place(&mut w);
        let sent = w.sent();
        assert_eq!(sent.len(), 1);
        assert_eq!(method_of(&sent[0]), Some(Method::Invite));
        assert!(std::str::from_utf8(sent[0].body())
            .expect("sdp")
            .contains("m=audio 30000 RTP/AVP"));
        // Retransmitted while unanswered (timer A), then 180 stops it.
        w.advance(Duration::from_millis(600));
        assert_eq!(w.sent().len(), 1, "one retransmission at T1");
        w.deliver(reply(&invite, 180, &[], None));
        w.deliver(reply(&invite, 180, &[], None));
        let ringing: Vec<_> = w
            .events()
            .into_iter()
            .filter(|e| matches!(e, Event::Ringing { .. }))
            .collect();
        assert_eq!(ringing.len(), 1, "ringing once");
        let ok = reply(
            &invite,
            200,
            &[
                ("Contact", "<sip:alice@192.0.2.7:5062;transport=udp>"),
                (
                    "Record-Route",
                    "<sip:p1.example.com;lr>, <sip:p2.example.com;lr>",
                ),
            ],
            Some(ANSWER),
        );
        w.deliver(ok.clone());
        let events = w.events();
        match events.as_slice() {
            [Event::Established { call: c, media }] => {
                assert_eq!(*c, call);
                assert_eq!(media.remote, Some("192.0.2.7:7000".parse().expect("addr")));
                assert_eq!(media.codec.pt, 0);
            }
            other => panic!("expected Established, got {other:?}"),
        }
        let acks = w.sent();
        assert_eq!(acks.len(), 1);
        let ack = &acks[0];
        assert_eq!(method_of(ack), Some(Method::Ack));
        assert_eq!(ack.summary().cseq, 1);
        assert_eq!(ack.summary().to.tag.as_deref(), Some("alice1"));
        // The route set is the Record-Route reversed.
        let routes = ack.header_values("Route");
        assert_eq!(
            routes,
            vec!["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]
        );
        assert_ne!(
            ack.summary().via.branch,
            invite.summary().via.branch,
            "an ACK of a 2xx is a new transaction"
        );
        // A retransmitted 200 is ACKed again; no second Established.
        w.deliver(ok);
        assert_eq!(
            w.sent()
                .iter()
                .filter(|m| method_of(m) == Some(Method::Ack))
                .count(),
            1
        );
        assert!(w.events().is_empty());
        // The callee hangs up in the dialog.
        let bye = Message::request(
            Method::Bye,
            "sip:corecast@192.0.2.10:5060",
            &[
                ("Via", "SIP/2.0/UDP 192.0.2.7:5062;branch=z9hG4bKbye1"),
                ("From", "<sip:alice@example.com>;tag=alice1"),
                (
                    "To",
                    &format!(
                        "<sip:lobby@192.0.2.10:5060>;tag={}",
                        invite.summary().from.tag.clone().expect("tag")
                    ),
                ),
                ("Call-ID", &invite.summary().call_id),
                ("CSeq", "1 BYE"),
            ],
            None,
        )
        .expect("bye");
        w.deliver(bye);
        assert!(w.sent().iter().any(|m| m.status() == Some(200)));
        assert!(matches!(
            w.events().as_slice(),
            [Event::Ended {
                reason: EndReason::RemoteBye,
                ..
            }]
        ));
        assert!(w.calls.is_empty());
    }

    #[test]
    fn a_refusal_ends_the_call_with_its_status_and_is_acked() {
        let mut w = World::new(8);
        let (_, invite) = place(&mut w);
        w.sent();
        w.deliver(reply(&invite, 486, &[], None));
        assert!(matches!(
            w.events().as_slice(),
            [Event::Ended {
                reason: EndReason::Refused(486),
                ..
            }]
        ));
        let acks = w.sent();
        assert_eq!(acks.len(), 1);
        assert_eq!(method_of(&acks[0]), Some(Method::Ack));
        assert_eq!(acks[0].summary().via.branch, invite.summary().via.branch);
        assert_eq!(w.calls.counters().ended_refused, 1);
    }

    #[test]
    fn hanging_up_before_the_answer_cancels() {
        let mut w = World::new(8);
        let (call, invite) = place(&mut w);
        w.sent();
        w.deliver(reply(&invite, 180, &[], None));
        w.events();
        let cancel = w.calls.hangup(call, w.now).expect("cancel");
        assert_eq!(method_of(&cancel.request), Some(Method::Cancel));
        assert_eq!(
            cancel.request.summary().via.branch,
            invite.summary().via.branch
        );
        assert_eq!(cancel.request.summary().cseq, 1);
        assert!(matches!(
            w.calls.hangup(call, w.now),
            Err(DialogError::WrongState(CallState::Terminating))
        ));
        w.deliver(reply(&invite, 487, &[], None));
        assert!(matches!(
            w.events().as_slice(),
            [Event::Ended {
                reason: EndReason::Cancelled,
                ..
            }]
        ));
    }

    #[test]
    fn a_cancel_that_gets_no_final_response_is_given_up() {
        let mut w = World::new(8);
        let (call, invite) = place(&mut w);
        w.deliver(reply(&invite, 180, &[], None));
        w.events();
        w.calls.hangup(call, w.now).expect("cancel");
        // The callee never answers the INVITE: the engine gives it up.
        w.calls.abandon(call, w.now);
        w.pump();
        assert!(matches!(
            w.events().as_slice(),
            [Event::Ended {
                reason: EndReason::Unanswered,
                ..
            }]
        ));
        assert!(w.calls.is_empty());
        // Only an early call of ours is abandoned.
        let (answered, invite) = place(&mut w);
        w.deliver(reply(
            &invite,
            200,
            &[("Contact", "<sip:a@192.0.2.7>")],
            Some(ANSWER),
        ));
        w.events();
        w.calls.abandon(answered, w.now);
        assert_eq!(w.calls.state(answered), Some(CallState::Confirmed));
    }

    #[test]
    fn no_answer_ends_the_call_at_timer_b() {
        let mut w = World::new(8);
        place(&mut w);
        w.advance(Duration::from_secs(33));
        assert!(matches!(
            w.events().as_slice(),
            [Event::Ended {
                reason: EndReason::Unanswered,
                ..
            }]
        ));
        assert!(w.calls.is_empty());
    }

    #[test]
    fn our_bye_after_the_answer_follows_the_route_set() {
        let mut w = World::new(8);
        let (call, invite) = place(&mut w);
        w.deliver(reply(
            &invite,
            200,
            &[
                ("Contact", "<sip:alice@192.0.2.7:5062>"),
                ("Record-Route", "<sip:p1.example.com;lr>"),
            ],
            Some(ANSWER),
        ));
        w.sent();
        w.events();
        let bye = w.calls.hangup(call, w.now).expect("bye");
        assert_eq!(method_of(&bye.request), Some(Method::Bye));
        assert_eq!(bye.next_hop, "sip:p1.example.com;lr");
        assert_eq!(bye.request.summary().cseq, 2);
        assert_eq!(bye.request.summary().to.tag.as_deref(), Some("alice1"));
        let sent = w
            .txs
            .send_request(w.now, bye.request.clone(), callee(), Transport::Unreliable);
        w.calls.bye_sent(call, w.now, sent);
        let ok = Message::response(&bye.request, 200, None, None).expect("200");
        let received = w.txs.receive(w.now, ok, callee(), Transport::Unreliable);
        assert!(matches!(received, Received::Response { .. }));
        w.calls.receive(w.now, received);
        w.pump();
        assert!(matches!(
            w.events().as_slice(),
            [Event::Ended {
                reason: EndReason::LocalBye,
                ..
            }]
        ));
    }
}
