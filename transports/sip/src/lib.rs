//! SIP for corecast, sans-IO: no sockets, no clock reads (time comes in as
//! [`std::time::Instant`]). The engine drives it from a shard's loop.
//!
//! The pieces, each in its own module:
//! - [`message`]: parsing a datagram or framed stream message into a SIP
//!   request or response (size limits, clear errors), an owned summary of
//!   the header fields, building responses (§8.2.6), ACK and CANCEL, and
//!   printing back to bytes.
//! - [`transaction`]: the RFC 3261 §17 transaction layer (client and server,
//!   INVITE and non-INVITE, UDP and TCP), driven by `Instant`s.
//! - [`digest`]: digest authentication as a registrar/UAS (RFC 3261 §22,
//!   RFC 2617, SHA-256 per RFC 7616/8760): challenges with stateless
//!   nonces any node holding the secret can check, parsing and verifying
//!   `Authorization` values against a user's HA1.
//! - [`limits`]: per-source limits on failed authentication (blocking a
//!   source address after too many failures), in bounded memory.
//! - [`registrar`]: the REGISTER side of a registrar (RFC 3261 §10.3):
//!   digest authentication, bindings per address-of-record with their
//!   expiry, caps, cluster-wide session ids, and events for the cluster's
//!   key-value store.
//! - [`g711`]: G.711 μ-law (PCMU) and A-law (PCMA), per sample and per
//!   slice.
//! - [`mixer`]: the mix-minus a phone hears: the loudest other speakers of
//!   a room, summed per 20 ms frame.
//! - [`jitter`]: the jitter buffer for a phone's incoming RTP audio: frames
//!   out at playout times, with missing slots, late, duplicate and restart
//!   handling.
//! - [`sdp`]: SDP offer/answer for a call (RFC 3264, RFC 4566), audio
//!   only: parsing a phone's offer or answer, choosing PCMU, PCMA or Opus,
//!   building our answer or offer, hold, and the media agreed.
//! - [`dialog`]: the user-agent server side of a call that comes in
//!   (RFC 3261 §12–§15, §9.2): dialogs keyed by Call-ID and tags, INVITE
//!   answered with our SDP, ACK, CANCEL, BYE both ways, re-INVITE (hold),
//!   OPTIONS, 481 for unknown dialogs, a cap on calls, and events for the
//!   engine.
//! - [`call`]: a call's media as a room peer ([`call::SipEndpoint`], a
//!   `corecast_media::Endpoint`): RTP from the phone through the jitter
//!   buffer to Opus in the room, the room's loudest speakers mixed back in
//!   the call's codec every 20 ms, DTMF key presses ([`dtmf`]).

pub mod call;
pub mod dialog;
pub mod digest;
pub mod dtmf;
pub mod g711;
pub mod jitter;
pub mod limits;
pub mod message;
pub mod mixer;
pub mod registrar;
pub mod rtcp;
pub mod sdp;
pub mod transaction;
