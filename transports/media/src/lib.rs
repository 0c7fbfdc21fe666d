//! Shared media types of corecast.
//!
//! Every transport turns what it receives into [`MediaPacket`]s published on a
//! track's [`ChannelId`], and every transport that delivers media takes
//! [`MediaPacket`]s from a channel. This crate holds only plain data and pure
//! logic: no I/O, no clock reads (time comes in as [`std::time::Instant`]).
//!
//! - [`ChannelId`]: the global pub-sub channel of one track, a fixed hash of
//!   `(room, peer, track name)` that is identical on every node and build.
//! - [`MediaPacket`]: one RTP payload with the header fields an SFU needs.
//! - [`CodecInfo`]: which codec a packet carries, independent of payload types.
//! - [`is_keyframe_start`]: whether an RTP payload is the first packet of a
//!   keyframe, where a new viewer can start.
//! - [`Rewriter`]: keeps the sequence numbers and timestamps toward one
//!   subscriber continuous when the publisher behind a track changes.
//! - [`LayerSelector`]: which simulcast layer of a track one viewer gets,
//!   from its bandwidth estimate, switching only at keyframes.
//! - [`h264`]: H.264 access units to RTP payloads and back (RFC 6184 mode
//!   1), for the transports that carry frames.
//! - [`endpoint`]: the one interface a shard drives every transport through
//!   ([`Endpoint`], [`ConnId`], slots, published tracks, inputs and outputs).

pub mod av1;
mod channel;
mod codec;
pub mod dd;
pub mod endpoint;
pub mod h264;
mod keyframe;
pub mod layers;
mod packet;
mod ratelimit;
mod rewrite;
pub mod speakers;
pub mod vp8;
pub mod vp9;
mod wire;

pub use channel::ChannelId;
pub use codec::{Codec, CodecInfo, MediaKind};
pub use endpoint::{
    CloseReason, Command, ConnId, Endpoint, EndpointStats, Event, FramesOutStats, IngestStats,
    Input, InputError, LayerStats, Output, Preference, PublishedTrack, Refusal, RouteKey,
    SessionId, Slot, SlotId, Transmit, TransportKind,
};
pub use keyframe::is_keyframe_start;
pub use layers::{
    Layer, LayerPacket, LayerSelector, SelectorConfig, SelectorStats, Verdict, MAX_SPATIAL,
    MAX_TEMPORAL,
};
pub use packet::{Dependency, MediaPacket};
pub use ratelimit::TokenBucket;
pub use rewrite::{Rewriter, Rewritten};
pub use wire::{decode_media, encode_media, WireError};
