//! A shard: one pinned core's endpoints, subscriber lists and sockets.
//!
//! [`Shard`] is the state and its handlers (no awaits, no clock reads: every
//! handler takes `now`); `run.rs` is the glommio loop that feeds it.

mod cluster;
mod demand;
mod levels;
mod relay_layers;
mod run;
mod state;

pub use cluster::ClusterPort;
pub use corecast_media::TokenBucket;
pub use run::{spawn_shard, ClusterSetup, MoqSetup, ShardSetup};
pub use state::{Shard, StreamSettings};
