//! Start-up and shutdown of a node: sockets, shards, mesh, control plane.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use corecast_webrtc::EndpointConfig;

use corecast_cluster::ClusterConfig;

use crate::config::{ClusterSettings, Settings};
use crate::control::{self, ControlHandle};
use crate::mesh;
use crate::metrics::ShardMetrics;
use crate::shard::{spawn_shard, ClusterSetup, MoqSetup, ShardSetup, StreamSettings};
use crate::socket::{bind_cluster_socket, bind_media_socket, bind_stream_listener};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    #[error("cannot bind media port {addr}: {source}")]
    Media {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot bind HTTP {addr}: {source}")]
    Http {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot bind the cluster port {addr}: {source}")]
    Cluster {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen on the RTMP port {addr} (--rtmp-port; 0 turns RTMP off): {source}")]
    Rtmp {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot bind the MoQ port {addr} (--moq-port): {source}")]
    Moq {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("MoQ certificate: {0}")]
    MoqCertificate(String),
    #[error("cannot bind the SIP port {addr} (--sip-port): {source}")]
    Sip {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start shard {shard}: {source}")]
    Shard {
        shard: usize,
        source: std::io::Error,
    },
}

/// A running node.
pub struct Node {
    pub http_addr: SocketAddr,
    pub media_addrs: Vec<SocketAddr>,
    /// The cluster socket's address, when clustered.
    pub cluster_addr: Option<SocketAddr>,
    /// The RTMP listeners' address, when RTMP is on.
    pub rtmp_addr: Option<SocketAddr>,
    /// The SIP socket's address, when SIP is on.
    pub sip_addr: Option<SocketAddr>,
    /// The MoQ sockets' address and the SHA-256 of the certificate, when
    /// MoQ is on.
    pub moq_addr: Option<SocketAddr>,
    pub moq_fingerprint: Option<String>,
    control: ControlHandle,
    shards: Vec<glommio::ExecutorJoinHandle<()>>,
}

impl Node {
    pub fn start(settings: &Settings) -> Result<Node, NodeError> {
        // Bind shard 0 first (it may pick the port), then the rest on the same port.
        let mut port = settings.media_port;
        let mut sockets: Vec<Vec<std::net::UdpSocket>> = Vec::new();
        let mut media_addrs = Vec::new();
        for shard in 0..settings.shards {
            let mut mine = Vec::new();
            for ip in &settings.ice_ips {
                let addr = SocketAddr::new(*ip, port);
                let socket = bind_media_socket(addr, settings.socket_buffer)
                    .map_err(|source| NodeError::Media { addr, source })?;
                let local = socket
                    .local_addr()
                    .map_err(|source| NodeError::Media { addr, source })?;
                port = local.port();
                if shard == 0 {
                    media_addrs.push(local);
                }
                mine.push(socket);
            }
            sockets.push(mine);
        }
        let mut rtmp: Vec<Option<std::net::TcpListener>> = Vec::new();
        let mut rtmp_addr = None;
        if let Some(mut port) = settings.rtmp_port {
            if port != 0 {
                // SO_REUSEPORT would let this node share the port with
                // another process that holds it (another corecast): each
                // would get half the encoders. Bind it alone first.
                let addr = SocketAddr::from(([0, 0, 0, 0], port));
                drop(
                    std::net::TcpListener::bind(addr)
                        .map_err(|source| NodeError::Rtmp { addr, source })?,
                );
            }
            for _ in 0..settings.shards {
                let addr = SocketAddr::from(([0, 0, 0, 0], port));
                let l = bind_stream_listener(addr)
                    .map_err(|source| NodeError::Rtmp { addr, source })?;
                let local = l
                    .local_addr()
                    .map_err(|source| NodeError::Rtmp { addr, source })?;
                port = local.port();
                rtmp_addr = Some(local);
                rtmp.push(Some(l));
            }
        } else {
            rtmp.resize_with(settings.shards, || None);
        }
        let (mut moq, moq_addr, moq_fingerprint) = moq_sockets(settings)?;
        let node16 = settings.cluster.as_ref().map_or(0, |c| c.node_id as u16);
        let rtmp_config = corecast_rtmp::RtmpConfig {
            audio_bitrate: settings.rtmp_audio_bitrate,
            handshake_timeout: settings.rtmp_handshake_timeout,
            idle_timeout: settings.rtmp_idle_timeout,
            // Times the transcoder for corecast_rtmp_transcode_microseconds_total.
            cpu_clock: Some(Instant::now),
            ..Default::default()
        };
        let addr = settings.http;
        let listener =
            std::net::TcpListener::bind(addr).map_err(|source| NodeError::Http { addr, source })?;
        let http_addr = listener
            .local_addr()
            .map_err(|source| NodeError::Http { addr, source })?;
        let mut cluster = match &settings.cluster {
            Some(c) => Some(cluster_setup(c, http_addr, settings)?),
            None => None,
        };
        let cluster_addr = cluster.as_ref().map(|c| c.config.local);
        let mut config = EndpointConfig::new(media_addrs.clone());
        config.consent_timeout = settings.consent_timeout;
        config.nack_window = settings.nack_window;

        let metrics: Vec<Arc<ShardMetrics>> =
            (0..settings.shards).map(|_| Arc::default()).collect();
        let (control_tx, control_rx) = flume::bounded(4096);
        let mut command_txs = Vec::new();
        let mut shards = Vec::new();
        for (id, ((links, sockets), rtmp)) in mesh::wire(settings.shards)
            .into_iter()
            .zip(sockets)
            .zip(rtmp)
            .enumerate()
        {
            let (tx, rx) = flume::bounded(1024);
            command_txs.push(tx);
            let setup = ShardSetup {
                id,
                core: settings.pin.then_some(settings.first_core + id),
                sockets,
                gso: settings.gso,
                links,
                commands: rx,
                control: control_tx.clone(),
                metrics: metrics[id].clone(),
                cluster: if id == 0 { cluster.take() } else { None },
                claims_per_second: settings.stun_claims_per_second,
                rtmp,
                moq: moq.as_mut().map(|(sockets, config)| MoqSetup {
                    socket: sockets.remove(0),
                    config: config.clone(),
                }),
                streams: StreamSettings {
                    node: node16,
                    rtmp: rtmp_config.clone(),
                    max_endpoints: settings.max_endpoints_per_shard,
                    clustered: settings.cluster.is_some(),
                },
            };
            shards
                .push(spawn_shard(setup).map_err(|source| NodeError::Shard { shard: id, source })?);
        }
        let (sip, sip_addr) = match &settings.sip {
            Some(sip) => {
                let addr = SocketAddr::from(([0, 0, 0, 0], sip.port));
                let socket = std::net::UdpSocket::bind(addr)
                    .map_err(|source| NodeError::Sip { addr, source })?;
                let local = socket
                    .local_addr()
                    .map_err(|source| NodeError::Sip { addr, source })?;
                let media_ip = settings
                    .ice_ips
                    .first()
                    .copied()
                    .unwrap_or(IpAddr::from([127, 0, 0, 1]));
                let advertised = SocketAddr::new(media_ip, local.port());
                // TCP on the same port (the UDP socket's, when it was 0).
                let tcp_addr = SocketAddr::from(([0, 0, 0, 0], local.port()));
                let tcp =
                    std::net::TcpListener::bind(tcp_addr).map_err(|source| NodeError::Sip {
                        addr: tcp_addr,
                        source,
                    })?;
                let setup = control::sip::SipSetup {
                    socket,
                    tcp: Some(tcp),
                    advertised,
                    media_ip,
                    rtp_ports: sip.rtp_ports,
                    ring_timeout: sip.ring_timeout,
                    hook: sip.hook.clone(),
                    users: sip.users.clone(),
                    node: settings.cluster.as_ref().map_or(0, |c| c.node_id),
                    shared_secret: settings.cluster.as_ref().map(|c| c.secret.clone()),
                };
                (Some(setup), Some(advertised))
            }
            None => (None, None),
        };
        let control = control::start(
            settings,
            listener,
            config,
            command_txs,
            control_rx,
            metrics,
            sip,
            moq_fingerprint.clone(),
        )?;
        Ok(Node {
            http_addr,
            media_addrs,
            cluster_addr,
            rtmp_addr,
            sip_addr,
            moq_addr,
            moq_fingerprint,
            control,
            shards,
        })
    }

    /// Blocks until the node stops.
    pub fn wait(self) {
        self.control.join();
        for s in self.shards {
            let _ = s.join();
        }
    }

    /// Stops the control plane and the shards.
    pub fn shutdown(self) {
        self.control.stop();
        for s in self.shards {
            let _ = s.join();
        }
    }
}

/// Binds the cluster socket and fills in the cluster's configuration.
fn cluster_setup(
    c: &ClusterSettings,
    http_addr: SocketAddr,
    settings: &Settings,
) -> Result<ClusterSetup, NodeError> {
    let addr = c.sdn_bind;
    let socket = bind_cluster_socket(addr, settings.socket_buffer)
        .map_err(|source| NodeError::Cluster { addr, source })?;
    let local = socket
        .local_addr()
        .map_err(|source| NodeError::Cluster { addr, source })?;
    // An HTTP port picked by the OS is known only now.
    let public_url = if settings.http.port() == 0 {
        c.public_url
            .replace(":0", &format!(":{}", http_addr.port()))
    } else {
        c.public_url.clone()
    };
    let epoch_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    tracing::info!(
        "cluster: node {} zone {} role {:?} on {local}, seeds {:?}",
        c.node_id,
        c.zone,
        c.role,
        c.seeds
    );
    Ok(ClusterSetup {
        socket,
        config: ClusterConfig {
            node_id: c.node_id,
            zone: c.zone.clone(),
            role: c.role,
            secret: c.secret.clone(),
            local,
            seeds: c.seeds.clone(),
            http_url: public_url,
            session: rand::random::<u64>(),
            epoch_ms,
            start: std::time::Instant::now(),
        },
    })
}

/// The IPs a node advertises, for logs.
pub fn describe(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

type MoqSockets = (
    Option<(
        Vec<std::net::UdpSocket>,
        corecast_moq::quic::QuicServerConfig,
    )>,
    Option<SocketAddr>,
    Option<String>,
);

/// The MoQ port's sockets (one per shard, `SO_REUSEPORT`), the QUIC
/// configuration they share, and the certificate's SHA-256.
fn moq_sockets(settings: &Settings) -> Result<MoqSockets, NodeError> {
    let Some(moq) = &settings.moq else {
        return Ok((None, None, None));
    };
    let cert = match (&moq.cert, &moq.key) {
        (Some(cert), Some(key)) => {
            let read = |p: &std::path::Path| {
                std::fs::read_to_string(p)
                    .map_err(|e| NodeError::MoqCertificate(format!("{}: {e}", p.display())))
            };
            let what = format!("{} and {}", cert.display(), key.display());
            corecast_moq::cert::Certificate::from_pem(&read(cert)?, &read(key)?, &what)
                .map_err(|e| NodeError::MoqCertificate(e.to_string()))?
        }
        _ => {
            let mut names = vec!["localhost".to_string()];
            names.extend(settings.ice_ips.iter().map(|ip| ip.to_string()));
            corecast_moq::cert::Certificate::generate(&names, std::time::SystemTime::now())
                .map_err(|e| NodeError::MoqCertificate(e.to_string()))?
        }
    };
    let config = corecast_moq::quic::QuicServerConfig::new(
        &cert,
        corecast_moq::SERVER_ALPNS,
        corecast_moq::MAX_STREAMS,
        moq.idle_timeout,
    )
    .map_err(NodeError::MoqCertificate)?;
    let mut port = moq.port;
    let mut sockets = Vec::new();
    let mut local_addr = None;
    if port != 0 {
        // As for RTMP: fail if another process holds the port, instead of
        // sharing it through SO_REUSEPORT.
        let addr = SocketAddr::from(([0, 0, 0, 0], port));
        drop(std::net::UdpSocket::bind(addr).map_err(|source| NodeError::Moq { addr, source })?);
    }
    for _ in 0..settings.shards {
        let addr = SocketAddr::from(([0, 0, 0, 0], port));
        let socket = bind_media_socket(addr, settings.socket_buffer)
            .map_err(|source| NodeError::Moq { addr, source })?;
        let local = socket
            .local_addr()
            .map_err(|source| NodeError::Moq { addr, source })?;
        port = local.port();
        local_addr = Some(local);
        sockets.push(socket);
    }
    let fingerprint = cert.fingerprint();
    Ok((Some((sockets, config)), local_addr, Some(fingerprint)))
}
