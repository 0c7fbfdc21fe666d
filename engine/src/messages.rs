//! What shards and the control thread say to each other.

use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

use corecast_cluster::{ClusterView, NodeLoad, PeerRecord};
use corecast_media::{ChannelId, CodecInfo, MediaKind, MediaPacket};
use corecast_webrtc::{CloseReason, Endpoint, IceFragment};

/// A session's id: unique on this node, unguessable, and the last part of
/// its WHIP/WHEP resource URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(pub u64);

impl SessionId {
    pub fn random() -> SessionId {
        SessionId(rand::random::<u64>() | 1)
    }

    pub fn parse(s: &str) -> Option<SessionId> {
        u64::from_str_radix(s, 16).ok().map(SessionId)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// One received datagram, owned.
#[derive(Debug)]
pub struct Datagram {
    pub at: Instant,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

/// Control thread → shard.
pub enum ShardCommand {
    /// Take over a pending endpoint whose first STUN request this shard received.
    Adopt {
        session: SessionId,
        endpoint: Box<Endpoint>,
        first: Datagram,
        subscriptions: Vec<(MediaKind, ChannelId)>,
    },
    /// A datagram for an endpoint of this shard that arrived at another shard.
    Ingress {
        session: SessionId,
        datagram: Datagram,
    },
    /// Close an endpoint now (DELETE, replaced publisher).
    Close { session: SessionId },
    /// Datagrams from `addr` belong to `session`, held by shard `owner`:
    /// forward them there over the ring instead of dropping them (a second
    /// address of a client that the kernel hashed to this shard).
    Route {
        session: SessionId,
        addr: SocketAddr,
        owner: usize,
    },
    /// The session ended: forget its routes.
    Unroute { session: SessionId },
    /// Point a viewer's track at another channel (or none).
    Subscribe {
        session: SessionId,
        kind: MediaKind,
        channel: Option<ChannelId>,
    },
    /// Which shards (bit per shard) hold subscribers of a channel.
    Fanout { channel: ChannelId, shards: u64 },
    /// Whether local publishers' packets of a channel also go to the
    /// cluster (through shard 0).
    Export { channel: ChannelId, on: bool },
    /// For shard 0, which drives the cluster.
    Cluster(ClusterCommand),
    /// Apply a PATCH body; the reply carries the answer fragment of an ICE restart.
    Fragment {
        session: SessionId,
        fragment: IceFragment,
        reply: tokio::sync::oneshot::Sender<Result<Option<String>, String>>,
    },
}

/// Control thread → the cluster (on shard 0).
#[derive(Debug)]
pub enum ClusterCommand {
    /// Publish a local publisher's channel to the cluster, or stop.
    Publish {
        channel: ChannelId,
        on: bool,
    },
    /// Subscribe this node to a channel published on another node, or stop.
    Subscribe {
        channel: ChannelId,
        on: bool,
    },
    /// Set or delete this node's room entry of a peer.
    SetPeer(PeerRecord),
    DelPeer {
        room: String,
        peer: String,
    },
    SetLoad(NodeLoad),
}

/// Shard → control thread.
#[derive(Debug)]
pub enum ControlEvent {
    /// A STUN request for an endpoint this shard does not hold.
    Claim {
        shard: usize,
        ufrag: String,
        datagram: Datagram,
    },
    /// This shard took over the session of an [`ShardCommand::Adopt`].
    Adopted { session: SessionId, shard: usize },
    /// An endpoint ended on its own (consent, peer closed).
    Closed {
        session: SessionId,
        reason: CloseReason,
    },
    /// A publisher's track started sending a codec.
    ActiveCodec {
        session: SessionId,
        channel: ChannelId,
        codec: CodecInfo,
    },
    /// A viewer's ICE restart changed its server ufrag.
    UfragChanged { session: SessionId, ufrag: String },
    /// A room peer on another node appeared (`up`) or went away.
    RemotePeer { up: bool, record: PeerRecord },
    /// The cluster as shard 0 sees it, every second.
    ClusterView(Box<ClusterView>),
}

/// Shard → shard, over the rings.
pub enum RingMsg {
    /// A packet published on a channel that has subscribers on the receiving shard.
    Media(MediaPacket),
    /// A viewer asks for a keyframe on a channel; the shard with its publisher acts.
    Keyframe(ChannelId),
    /// A local publisher's packet for the cluster (toward shard 0).
    Export(MediaPacket),
    /// A datagram from a routed address of an endpoint that the receiving
    /// shard holds (see [`ShardCommand::Route`]); handled like
    /// [`ShardCommand::Ingress`].
    Ingress {
        session: SessionId,
        datagram: Datagram,
    },
}
