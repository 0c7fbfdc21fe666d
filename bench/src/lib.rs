//! The corecast load generator and benchmarks.
//!
//! - [`load`]: WHIP publishers and WHEP viewers, each a real WebRTC peer
//!   (str0m, DTLS-SRTP) on its own UDP socket, driven by glommio shards;
//!   viewers verify every payload and measure added latency, loss,
//!   reordering, jitter and join time.
//! - [`floor`]: a plain UDP forwarder at the same packet sizes, so a run can
//!   report its ratio to what this machine does without WebRTC.

pub mod accounting;
pub mod floor;
pub mod load;
pub mod payload;
pub mod procfs;
pub mod rooms;
pub mod rxstamp;
pub mod url;
