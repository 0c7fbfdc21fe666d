//! The corecast engine: the only place with threads, sockets, clocks and CPU
//! pinning. It composes the sans-IO transports into a running node:
//!
//! - [`shard`]: one pinned glommio executor per core that owns its UDP
//!   sockets, its endpoints and its subscriber lists;
//! - [`mesh`]: the rtrb rings between every ordered pair of shards;
//! - [`control`]: the HTTP control plane (WHIP, WHEP, metrics) on its own
//!   thread, talking to shards over bounded channels;
//! - [`udp_send`]: batched sends (`sendmmsg`, UDP GSO for runs to one peer);
//! - [`node`]: start-up and shutdown of all of it.

pub mod config;
pub mod control;
pub mod mesh;
pub mod messages;
pub mod metrics;
pub mod node;
pub mod shard;
pub mod socket;
pub mod udp_send;

pub use config::Settings;
pub use node::{Node, NodeError};
