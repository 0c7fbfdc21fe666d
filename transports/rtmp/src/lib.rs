//! RTMP ingest for corecast, sans-IO: encoders (OBS, ffmpeg, GStreamer)
//! publish H.264 and AAC (or, with Enhanced RTMP, AV1, VP9 and Opus) into a
//! room.
//!
//! - [`handshake`], [`chunk`] and [`amf0`]: the wire protocol;
//! - [`session`]: the server side of a publishing connection;
//! - [`flv`]: the audio and video tag bodies;
//! - [`audio`]: AAC to Opus;
//! - [`endpoint`]: all of it as a [`corecast_media::Endpoint`] the shard drives;
//! - [`client`]: a publishing client for tests and the load generator.
//!
//! Why not an RTMP crate: rml_rtmp (the sans-IO one) reassembles one
//! message at a time (chunks of two chunk streams may not interleave),
//! does unchecked arithmetic on header fields a peer controls, and has no
//! bounds on what a peer makes it hold; its AMF0 reader recurses without a
//! depth limit. The parts here are small, bounded and fuzzed
//! (`transports/rtmp/fuzz`).

pub mod amf0;
pub mod audio;
pub mod chunk;
pub mod client;
pub mod endpoint;
pub mod flv;
pub mod handshake;
pub mod session;

pub use endpoint::{RtmpConfig, RtmpEndpoint};
