//! What shards and the control thread say to each other.

use std::net::SocketAddr;
use std::time::Instant;

use corecast_cluster::{ClusterView, NodeLoad, PeerRecord, RegistrationRecord};
use corecast_media::{
    ChannelId, CloseReason, CodecInfo, Endpoint, MediaPacket, Preference, Refusal, SlotId,
    TransportKind,
};

pub use corecast_media::ConnId;

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
        conn: ConnId,
        endpoint: Box<dyn Endpoint>,
        first: Datagram,
        subscriptions: Vec<(SlotId, ChannelId)>,
    },
    /// A datagram for an endpoint of this shard that arrived at another shard.
    Ingress { conn: ConnId, datagram: Datagram },
    /// Close an endpoint now (DELETE, replaced publisher).
    Close { conn: ConnId },
    /// Take a SIP call's endpoint, placed here by the control thread, with
    /// the call's own RTP and RTCP sockets (received and sent on this
    /// shard).
    Place {
        conn: ConnId,
        endpoint: Box<dyn Endpoint>,
        sockets: [std::net::UdpSocket; 2],
    },
    /// Datagrams from `addr` belong to `conn`, held by shard `owner`:
    /// forward them there over the ring instead of dropping them (a second
    /// address of a client that the kernel hashed to this shard).
    Route {
        conn: ConnId,
        addr: SocketAddr,
        owner: usize,
    },
    /// The conn ended: forget its routes.
    Unroute { conn: ConnId },
    /// Point a receive slot at another channel (or none).
    Subscribe {
        conn: ConnId,
        slot: SlotId,
        channel: Option<ChannelId>,
    },
    /// The viewer's preference for a receive slot (top layer, priority).
    Prefer {
        conn: ConnId,
        slot: SlotId,
        preference: Preference,
    },
    /// A message for the user on the connection's RPC stream.
    Rpc { conn: ConnId, text: String },
    /// The answer to a [`ControlEvent::PublishRequest`]: publish as this
    /// peer, or the refusal.
    Admit {
        conn: ConnId,
        answer: Result<String, Refusal>,
    },
    /// Which shards (bit per shard) hold subscribers of a channel.
    Fanout { channel: ChannelId, shards: u64 },
    /// Whether local publishers' packets of a channel also go to the
    /// cluster (through shard 0).
    Export { channel: ChannelId, on: bool },
    /// For shard 0, which drives the cluster.
    Cluster(ClusterCommand),
    /// Apply transport signalling (a PATCH body); the reply carries the
    /// answer (the fragment of an ICE restart).
    Signal {
        conn: ConnId,
        body: String,
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
    /// `layers`: the track's simulcast layers (those above 0 travel on
    /// channels of their own, received while a viewer wants them).
    Subscribe {
        channel: ChannelId,
        on: bool,
        layers: u8,
    },
    /// Set or delete this node's room entry of a peer.
    SetPeer(PeerRecord),
    DelPeer {
        room: String,
        peer: String,
    },
    SetLoad(NodeLoad),
    /// Set this node's entry of a SIP binding.
    SetRegistration(RegistrationRecord),
    /// Delete it.
    DelRegistration {
        aor: String,
        contact: String,
    },
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
    /// This shard took over the conn of an [`ShardCommand::Adopt`].
    Adopted { conn: ConnId, shard: usize },
    /// An endpoint ended on its own (consent, peer closed).
    Closed { conn: ConnId, reason: CloseReason },
    /// A publisher's track started sending a codec.
    ActiveCodec {
        conn: ConnId,
        channel: ChannelId,
        codec: CodecInfo,
    },
    /// A publisher's track turned out to carry SVC spatial layers.
    TrackLayers {
        conn: ConnId,
        channel: ChannelId,
        layers: u8,
    },
    /// A viewer's ICE restart changed its server ufrag.
    UfragChanged { conn: ConnId, ufrag: String },
    /// A message from the user on the connection's RPC stream.
    Rpc { conn: ConnId, text: String },
    /// A slot sent the first packet of the channel it plays.
    SlotLive { conn: ConnId, slot: SlotId },
    /// The mean audio levels (RFC 6464, -dBov) of the tracks a shard
    /// published over the last report interval.
    AudioLevels(Vec<(ChannelId, u8)>),
    /// The user of `conn` pressed a key (a phone's DTMF).
    Dtmf { conn: ConnId, digit: char },
    /// A connection the shard accepted itself (RTMP) asks to publish into
    /// `room`; answer with [`ShardCommand::Admit`].
    PublishRequest {
        conn: ConnId,
        shard: usize,
        transport: TransportKind,
        room: String,
        token: Option<String>,
    },
    /// A connection the shard accepted itself (MoQ) asks to watch `room`'s
    /// stream with these receive slots; answer with
    /// [`ShardCommand::Admit`] (and point its slots, as for a WHEP viewer).
    WatchRequest {
        conn: ConnId,
        shard: usize,
        transport: TransportKind,
        room: String,
        token: Option<String>,
        slots: Vec<corecast_media::Slot>,
    },
    /// A room peer on another node appeared (`up`) or went away.
    RemotePeer { up: bool, record: PeerRecord },
    /// A SIP binding on another node was set (`up`) or went away.
    RemoteRegistration {
        up: bool,
        record: RegistrationRecord,
    },
    /// The cluster as shard 0 sees it, every second.
    ClusterView(Box<ClusterView>),
}

/// Shard → shard, over the rings.
pub enum RingMsg {
    /// A packet published on a channel that has subscribers on the receiving shard.
    Media(MediaPacket),
    /// A viewer asks for a keyframe on a channel (of one spatial layer, or
    /// of every layer with `None`); the shard with its publisher acts.
    Keyframe(ChannelId, Option<u8>),
    /// A local publisher's packet for the cluster (toward shard 0).
    Export(MediaPacket),
    /// A datagram from a routed address of an endpoint that the receiving
    /// shard holds (see [`ShardCommand::Route`]); handled like
    /// [`ShardCommand::Ingress`].
    Ingress { conn: ConnId, datagram: Datagram },
    /// A datagram on the MoQ port for a QUIC connection that the receiving
    /// shard holds (its connection id names the shard): a client whose
    /// address changed, which `SO_REUSEPORT` hashed to another shard.
    MoqIngress(Datagram),
    /// The spatial layers of a channel that the sending shard's viewers
    /// want now, one bit per layer (toward shard 0, which carries only
    /// wanted layers of remote channels).
    LayerDemand {
        shard: usize,
        channel: ChannelId,
        layers: u8,
    },
}
