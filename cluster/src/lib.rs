//! corecast's cluster layer, sans-IO.
//!
//! Every media track is a global pub-sub channel and room state is a
//! cluster key-value store, both carried by atm0s-sdn; nodes find each other
//! and report their load with authenticated presence messages; gateways
//! choose a media node from that view. Nothing here reads a clock or opens a
//! socket: the engine passes time in and sends what [`Cluster::poll_output`]
//! returns.

mod bin;
pub mod envelope;
pub mod gateway;
mod node;
pub mod presence;
pub mod records;
pub mod registrations;
pub mod zones;

pub use node::{
    ChannelState, Cluster, ClusterConfig, ClusterEvent, ClusterOutput, ClusterStats, ClusterView,
    MemberView, Transmit, REFRESH, STALE,
};
pub use presence::{NodeLoad, NodeRole};
pub use records::{PeerRecord, TrackRecord};
pub use registrations::RegistrationRecord;
