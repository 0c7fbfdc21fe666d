//! Sans-IO WebRTC endpoints of corecast, on top of [str0m].
//!
//! An [`Endpoint`] is one WebRTC leg of the SFU: a WHIP publisher whose RTP
//! becomes [`MediaPacket`]s on its tracks' channels, or a WHEP viewer that
//! receives [`MediaPacket`]s and sends them on with its own SSRCs, continuous
//! sequence numbers and its own SRTP keys.
//!
//! The crate never reads the clock, opens a socket or spawns: every call takes
//! `now`, and the rule is the one str0m sets. **After every input, drain
//! [`Endpoint::poll_output`] until it returns [`Output::Timeout`].**
//!
//! ```no_run
//! # use std::time::Instant;
//! # use corecast_webrtc::{Endpoint, EndpointConfig, Output, PublisherInfo};
//! # fn example(now: Instant) {
//! let config = EndpointConfig::new(vec!["127.0.0.1:9000".parse().unwrap()]);
//! let offer = "v=0 ..."; // from the WHIP POST body
//! let info = PublisherInfo { room: "live".into(), peer: "abc".into() };
//! let (mut endpoint, answer) = Endpoint::publisher(&config, now, offer, info).unwrap();
//! // send `answer` back in the 201 response, then run the loop:
//! loop {
//!     match endpoint.poll_output(now) {
//!         Output::Transmit(t) => { /* send t.contents to t.destination */ }
//!         Output::Event(e) => { /* publish media, route keyframe requests */ }
//!         Output::Timeout(at) => break, // call handle_timeout(at) then
//!     }
//! }
//! # }
//! ```
//!
//! The engine routes datagrams to endpoints: [`stun_local_ufrag`] extracts the
//! ICE username an endpoint is known by from a STUN binding request.

mod client;
mod codecs;
mod config;
mod demux;
mod dependency;
mod dtls;
mod endpoint;
mod error;
mod lipsync;
mod room_client;
mod rpclimit;
mod sdpfrag;

pub use client::{
    av1_svc_frame, h264_l1t3_frame, read_av1_svc_frame, read_h264_l1t3_frame, read_simulcast_frame,
    read_svc_frame, simulcast_frame, svc_frame, vp8_frame, Client, ClientEvent, ClientOutput,
    SendMeta, Temporal,
};
pub use codecs::{codec_info, server_codecs};
pub use config::{EndpointConfig, DEFAULT_NACK_WINDOW};
pub use corecast_media::{CloseReason, EndpointStats, Output, Transmit};
pub use demux::{classify, stun_local_ufrag, PacketClass};
pub use endpoint::{
    Endpoint, EndpointEvent, PublisherInfo, Role, ViewerOptions, MAX_RPC_MESSAGE,
    MAX_SLOTS_PER_KIND, RPC_BURST, RPC_RATE,
};
pub use error::Error;
pub use room_client::{RoomClient, RoomEvent};
pub use sdpfrag::{parse_sdpfrag, IceFragment};

pub use corecast_media::{ChannelId, CodecInfo, MediaKind, MediaPacket};
