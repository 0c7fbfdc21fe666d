//! Command line and TOML configuration of `corecast serve`.
//!
//! Every flag can also be set in the file given with `--config`, under the
//! same name with `_` for `-`; a flag on the command line wins over the file.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use corecast_cluster::zones::ZoneSpec;
use corecast_cluster::NodeRole;
use serde::Deserialize;

/// Flags of `corecast serve`.
#[derive(Debug, Default, Clone, Args)]
pub struct ServeArgs {
    /// TOML file with any of these settings.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address of the HTTP control plane (WHIP, WHEP, metrics). [default: 0.0.0.0:8080]
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// UDP port every shard binds with SO_REUSEPORT (0 picks a free one). [default: 9000]
    #[arg(long)]
    pub media_port: Option<u16>,
    /// Number of shards (pinned media threads). [default: the available cores]
    #[arg(long)]
    pub shards: Option<usize>,
    /// Do not pin shards to cores (laptops, CI, shared machines).
    #[arg(long)]
    pub no_pin: bool,
    /// First core to pin shard 0 to; shard i goes to core first_core + i. [default: 0]
    #[arg(long)]
    pub first_core: Option<usize>,
    /// IP advertised in ICE candidates and bound by the media sockets
    /// (repeatable). [default: this host's non-loopback IPv4 addresses, or 127.0.0.1]
    #[arg(long = "ice-ip")]
    pub ice_ip: Vec<IpAddr>,
    /// Bearer token WHIP and WHEP requests must carry (allows everything).
    #[arg(long, env = "CORECAST_TOKEN")]
    pub token: Option<String>,
    /// Secret (at least 16 bytes) that signs room tokens (JWT, HS256; mint
    /// them with `corecast token`): requests must then carry one that
    /// allows their room and action, or the static --token.
    #[arg(long, env = "CORECAST_AUTH_SECRET")]
    pub auth_secret: Option<String>,
    /// SO_RCVBUF and SO_SNDBUF of each media socket, in bytes. [default: 8388608]
    #[arg(long)]
    pub socket_buffer: Option<usize>,
    /// Send one datagram per message instead of UDP GSO runs (GSO is
    /// switched off by itself where the kernel or device refuses it).
    #[arg(long)]
    pub no_gso: bool,
    /// Endpoints per shard before new sessions are refused with 503. [default: 10000]
    #[arg(long)]
    pub max_endpoints_per_shard: Option<usize>,
    /// Endpoints answered but not yet connected (each holds a full WebRTC
    /// state for up to the consent timeout), node-wide, before new sessions
    /// are refused with 503 and Retry-After. [default: 2000]
    #[arg(long)]
    pub max_pending: Option<usize>,
    /// STUN requests for unknown ufrags (first packets of new sessions) each
    /// shard passes to the control thread per second; the rest are dropped
    /// and counted, and clients retransmit. 0: no limit. [default: 1000]
    #[arg(long)]
    pub stun_claims_per_second: Option<u32>,
    /// This node's id in the cluster; keep it across restarts. [default: random]
    #[arg(long)]
    pub node_id: Option<u32>,
    /// The zone this node belongs to (gateways route users by zone). [default: default]
    #[arg(long)]
    pub zone: Option<String>,
    /// Cluster nodes to join through, HOST:PORT of their --sdn-port (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub seeds: Vec<String>,
    /// UDP port of the cluster (atm0s-sdn). Setting it (or --seeds) turns the cluster on.
    #[arg(long)]
    pub sdn_port: Option<u16>,
    /// Secret every node of the cluster shares; required with the cluster.
    #[arg(long, env = "CORECAST_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// media: serve endpoints; gateway: redirect to a media node; all: both. [default: all]
    #[arg(long, value_parser = parse_role)]
    pub role: Option<NodeRole>,
    /// TCP port of RTMP ingest (`rtmp://HOST:PORT/live/STREAM`); every shard
    /// listens on it with SO_REUSEPORT. 0 turns RTMP off. [default: 1935]
    #[arg(long)]
    pub rtmp_port: Option<u16>,
    /// Opus bitrate of audio transcoded from RTMP publishers' AAC, bit/s. [default: 128000]
    #[arg(long)]
    pub rtmp_audio_bitrate: Option<u32>,
    /// Speakers an SDK connection that follows a room's speakers hears at
    /// once, at most (the loudest; 1 to 16). [default: 3]
    #[arg(long)]
    pub top_audio: Option<usize>,
    /// How long each viewer's video packets are kept for retransmission
    /// (NACK), in ms: at least the viewers' round-trip time plus a retry;
    /// memory per viewer grows with it (bitrate × window). 50 to 10000.
    /// [default: 3000, str0m's own]
    #[arg(long)]
    pub nack_window_ms: Option<u64>,
    /// UDP port of Media over QUIC (`moql://HOST:PORT`, broadcast = the
    /// room's name); every shard reads it with SO_REUSEPORT. Off unless set;
    /// 0 picks a free port.
    #[arg(long)]
    pub moq_port: Option<u16>,
    /// PEM certificate chain of the MoQ port. Without it (and --moq-key) a
    /// self-signed ECDSA certificate valid 14 days is generated at start;
    /// its SHA-256 is served at /certificate.sha256 for clients to pin.
    #[arg(long, requires = "moq_key")]
    pub moq_cert: Option<std::path::PathBuf>,
    /// PEM private key of --moq-cert.
    #[arg(long, requires = "moq_cert")]
    pub moq_key: Option<std::path::PathBuf>,
    /// UDP port of SIP signalling (phones call `sip:ROOM@HOST:PORT`). Off
    /// unless set; 0 picks a free port.
    #[arg(long)]
    pub sip_port: Option<u16>,
    /// UDP ports of SIP calls' media, FIRST-LAST: each call takes an even
    /// port for RTP and the next for RTCP, on the shard that holds the
    /// call. [default: 30000-30999]
    #[arg(long, value_parser = parse_port_range)]
    pub rtp_ports: Option<(u16, u16)>,
    /// Base URL of the application's SIP hook (http://): POST
    /// {hook}/sip/auth for users not in [[sip.users]], {hook}/sip/invite
    /// for where a call goes, {hook}/sip/event for what became of calls.
    #[arg(long)]
    pub sip_hook: Option<String>,
    /// Base URL other nodes and gateways use for this node's HTTP API.
    /// [default: http, the first --ice-ip and the --http port]
    #[arg(long)]
    pub public_url: Option<String>,
}

fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("{s:?} is not FIRST-LAST, two ports with FIRST <= LAST");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b): (u16, u16) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if a == 0 || a > b {
        return Err(bad());
    }
    // A call takes an even RTP port and the odd one after it.
    if u32::from(a) + u32::from(a % 2) + 1 > u32::from(b) {
        return Err(format!(
            "{s:?} holds no RTP/RTCP pair (an even port and the next one)"
        ));
    }
    Ok((a, b))
}

fn parse_role(s: &str) -> Result<NodeRole, String> {
    match s {
        "media" => Ok(NodeRole::Media),
        "gateway" => Ok(NodeRole::Gateway),
        "all" => Ok(NodeRole::All),
        _ => Err(format!("unknown role {s:?}: media, gateway or all")),
    }
}

/// The same settings as read from a TOML file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    http: Option<SocketAddr>,
    media_port: Option<u16>,
    shards: Option<usize>,
    no_pin: Option<bool>,
    first_core: Option<usize>,
    ice_ip: Option<Vec<IpAddr>>,
    token: Option<String>,
    auth_secret: Option<String>,
    socket_buffer: Option<usize>,
    no_gso: Option<bool>,
    max_endpoints_per_shard: Option<usize>,
    max_pending: Option<usize>,
    stun_claims_per_second: Option<u32>,
    node_id: Option<u32>,
    zone: Option<String>,
    seeds: Option<Vec<String>>,
    sdn_port: Option<u16>,
    cluster_secret: Option<String>,
    role: Option<NodeRole>,
    public_url: Option<String>,
    rtmp_port: Option<u16>,
    rtmp_audio_bitrate: Option<u32>,
    top_audio: Option<usize>,
    nack_window_ms: Option<u64>,
    moq_port: Option<u16>,
    moq_cert: Option<std::path::PathBuf>,
    moq_key: Option<std::path::PathBuf>,
    sip_port: Option<u16>,
    rtp_ports: Option<String>,
    /// `[sip]`: users who may register (`[[sip.users]]`).
    #[serde(default)]
    sip: SipFile,
    /// The gateways' table of zones: `[[zones]] name, cidrs, location`.
    #[serde(default)]
    zones: Vec<ZoneSpec>,
}

/// The `[sip]` table of the configuration file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SipFile {
    #[serde(default)]
    users: Vec<SipUser>,
    hook: Option<String>,
}

/// A user who may register and be called (`[[sip.users]]`): `user` and
/// `password`, or `ha1` (the hex MD5 of `user:realm:password`) to keep the
/// password out of the file.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SipUser {
    pub user: String,
    pub password: Option<String>,
    pub ha1: Option<String>,
}

/// Media over QUIC: the port and the certificate.
#[derive(Debug, Clone)]
pub struct MoqSettings {
    /// The UDP port (0: any).
    pub port: u16,
    /// PEM files of the certificate and key; None: generate one.
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
}

/// SIP: signalling port, calls' RTP ports, users.
#[derive(Debug, Clone)]
pub struct SipSettings {
    /// The UDP port of SIP signalling (0: any).
    pub port: u16,
    /// The calls' RTP ports, inclusive.
    pub rtp_ports: (u16, u16),
    pub users: Vec<SipUser>,
    /// How long a call we place may ring unanswered before we cancel it.
    pub ring_timeout: Duration,
    /// The application's hook, base URL.
    pub hook: Option<String>,
}

/// How a node takes part in a cluster.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub node_id: u32,
    pub zone: String,
    pub seeds: Vec<SocketAddr>,
    /// Where the cluster socket binds (all addresses, --sdn-port).
    pub sdn_bind: SocketAddr,
    pub secret: String,
    pub role: NodeRole,
    pub public_url: String,
    pub zones: Vec<ZoneSpec>,
}

/// Resolved settings of a node.
#[derive(Debug, Clone)]
pub struct Settings {
    pub http: SocketAddr,
    pub media_port: u16,
    pub shards: usize,
    pub pin: bool,
    pub first_core: usize,
    pub ice_ips: Vec<IpAddr>,
    pub token: Option<String>,
    /// Signs and checks room tokens (JWT, HS256).
    pub auth_secret: Option<String>,
    pub socket_buffer: usize,
    /// Runs of datagrams to one peer leave as UDP GSO messages.
    pub gso: bool,
    /// Capacity of the node: `shards × max_endpoints_per_shard` endpoints,
    /// connected and pending together.
    pub max_endpoints_per_shard: usize,
    /// Pending endpoints (answered, not yet claimed by a shard), node-wide.
    pub max_pending: usize,
    /// STUN claims per second and shard passed to the control thread (0: no limit).
    pub stun_claims_per_second: u32,
    pub consent_timeout: Duration,
    /// RTMP ingest's TCP port; None: off.
    pub rtmp_port: Option<u16>,
    /// Opus bitrate of transcoded AAC, bit/s.
    pub rtmp_audio_bitrate: u32,
    /// RTMP: from accept to `publish`, at most.
    pub rtmp_handshake_timeout: Duration,
    /// RTMP: nothing received for this long closes the connection.
    pub rtmp_idle_timeout: Duration,
    /// Loudest speakers a connection that follows the speakers hears.
    pub top_audio: usize,
    /// How long a viewer's video packets are kept for retransmission.
    pub nack_window: Duration,
    /// Media over QUIC; None: off.
    pub moq: Option<MoqSettings>,
    /// SIP, when `--sip-port` is set.
    pub sip: Option<SipSettings>,
    /// None: a single node, no cluster port.
    pub cluster: Option<ClusterSettings>,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("invalid config file {0}: {1}")]
    Parse(PathBuf, String),
    #[error("--shards must be between 1 and 64, got {0}")]
    Shards(usize),
    #[error("the cluster needs --cluster-secret (or CORECAST_CLUSTER_SECRET): nodes without it are refused")]
    ClusterSecret,
    #[error("--role gateway needs the cluster (--sdn-port and --seeds)")]
    GatewayAlone,
    #[error("seed {0:?} is not HOST:PORT that resolves: {1}")]
    Seed(String, String),
    #[error("zones table: {0}")]
    Zones(String),
    #[error("--auth-secret must be at least 16 bytes (32 random bytes recommended), got {0}")]
    AuthSecret(usize),
    #[error("--rtmp-audio-bitrate must be between 6000 and 510000 bit/s (Opus), got {0}")]
    AudioBitrate(u32),
    #[error("--top-audio must be between 1 and 16 speakers, got {0}")]
    TopAudio(usize),
    #[error("--nack-window-ms must be between 50 and 10000, got {0}")]
    NackWindow(u64),
    #[error("rtp_ports: {0}")]
    RtpPorts(String),
    #[error("[[sip.users]] {0:?}: give password or ha1 (32 hex digits)")]
    SipUser(String),
    #[error("--sip-hook {0:?}: an http:// URL")]
    SipHook(String),
    #[error("--sip-hook needs --sip-port (SIP is off without it)")]
    SipHookAlone,
}

impl Settings {
    /// Defaults for a laptop: every core, unpinned only if asked.
    pub fn from_args(args: &ServeArgs) -> Result<Settings, ConfigError> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::Read(path.clone(), e))?;
                toml::from_str::<FileConfig>(&text)
                    .map_err(|e| ConfigError::Parse(path.clone(), e.to_string()))?
            }
            None => FileConfig::default(),
        };
        // The cluster part is read after the rest has been taken apart.
        let file_cluster = file.clone();
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let shards = args.shards.or(file.shards).unwrap_or(cores);
        if shards == 0 || shards > 64 {
            return Err(ConfigError::Shards(shards));
        }
        let ice_ips = if !args.ice_ip.is_empty() {
            args.ice_ip.clone()
        } else {
            file.ice_ip.unwrap_or_else(crate::socket::host_addresses)
        };
        Ok(Settings {
            http: args
                .http
                .or(file.http)
                .unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 8080))),
            media_port: args.media_port.or(file.media_port).unwrap_or(9000),
            shards,
            pin: !(args.no_pin || file.no_pin.unwrap_or(false)),
            first_core: args.first_core.or(file.first_core).unwrap_or(0),
            ice_ips,
            token: args.token.clone().or(file.token),
            auth_secret: match args.auth_secret.clone().or(file.auth_secret) {
                Some(s) if s.len() < crate::control::auth::MIN_SECRET_LEN => {
                    return Err(ConfigError::AuthSecret(s.len()))
                }
                other => other,
            },
            socket_buffer: args
                .socket_buffer
                .or(file.socket_buffer)
                .unwrap_or(8 * 1024 * 1024),
            gso: !(args.no_gso || file.no_gso.unwrap_or(false)),
            max_endpoints_per_shard: args
                .max_endpoints_per_shard
                .or(file.max_endpoints_per_shard)
                .unwrap_or(10_000),
            max_pending: args.max_pending.or(file.max_pending).unwrap_or(2000),
            stun_claims_per_second: args
                .stun_claims_per_second
                .or(file.stun_claims_per_second)
                .unwrap_or(1000),
            consent_timeout: Duration::from_secs(20),
            rtmp_port: Some(args.rtmp_port.or(file.rtmp_port).unwrap_or(1935)).filter(|p| *p != 0),
            rtmp_audio_bitrate: match args
                .rtmp_audio_bitrate
                .or(file.rtmp_audio_bitrate)
                .unwrap_or(128_000)
            {
                b @ 6_000..=510_000 => b,
                b => return Err(ConfigError::AudioBitrate(b)),
            },
            rtmp_handshake_timeout: Duration::from_secs(10),
            rtmp_idle_timeout: Duration::from_secs(30),
            moq: args.moq_port.or(file.moq_port).map(|port| MoqSettings {
                port,
                cert: args.moq_cert.clone().or(file.moq_cert.clone()),
                key: args.moq_key.clone().or(file.moq_key.clone()),
                idle_timeout: Duration::from_secs(30),
            }),
            top_audio: match args.top_audio.or(file.top_audio).unwrap_or(3) {
                n @ 1..=16 => n,
                n => return Err(ConfigError::TopAudio(n)),
            },
            nack_window: match args.nack_window_ms.or(file.nack_window_ms).unwrap_or(3000) {
                ms @ 50..=10_000 => Duration::from_millis(ms),
                ms => return Err(ConfigError::NackWindow(ms)),
            },
            sip: None,
            cluster: None,
        })
        .and_then(|mut settings| {
            settings.sip = sip_settings(args, &file_cluster)?;
            settings.cluster = cluster_settings(args, file_cluster, &settings)?;
            Ok(settings)
        })
    }
}

fn sip_settings(args: &ServeArgs, file: &FileConfig) -> Result<Option<SipSettings>, ConfigError> {
    let Some(port) = args.sip_port.or(file.sip_port) else {
        if args.sip_hook.is_some() || file.sip.hook.is_some() {
            return Err(ConfigError::SipHookAlone);
        }
        return Ok(None);
    };
    let rtp_ports = match (args.rtp_ports, &file.rtp_ports) {
        (Some(r), _) => r,
        (None, Some(text)) => parse_port_range(text).map_err(ConfigError::RtpPorts)?,
        (None, None) => (30_000, 30_999),
    };
    for u in &file.sip.users {
        let ha1_ok = u
            .ha1
            .as_ref()
            .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()));
        if u.user.is_empty() || !(u.password.is_some() || ha1_ok) {
            return Err(ConfigError::SipUser(u.user.clone()));
        }
    }
    Ok(Some(SipSettings {
        port,
        rtp_ports,
        users: file.sip.users.clone(),
        ring_timeout: Duration::from_secs(60),
        hook: match args.sip_hook.clone().or(file.sip.hook.clone()) {
            Some(h) if !h.starts_with("http://") => return Err(ConfigError::SipHook(h)),
            h => h.map(|h| h.trim_end_matches('/').to_string()),
        },
    }))
}

fn cluster_settings(
    args: &ServeArgs,
    file: FileConfig,
    settings: &Settings,
) -> Result<Option<ClusterSettings>, ConfigError> {
    let seeds_text = if args.seeds.is_empty() {
        file.seeds.unwrap_or_default()
    } else {
        args.seeds.clone()
    };
    let sdn_port = args.sdn_port.or(file.sdn_port);
    let role = args.role.or(file.role).unwrap_or(NodeRole::All);
    if sdn_port.is_none() && seeds_text.is_empty() {
        if role == NodeRole::Gateway {
            return Err(ConfigError::GatewayAlone);
        }
        return Ok(None);
    }
    let secret = args
        .cluster_secret
        .clone()
        .or(file.cluster_secret)
        .filter(|s| !s.is_empty())
        .ok_or(ConfigError::ClusterSecret)?;
    let mut seeds = Vec::new();
    for text in seeds_text
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        let mut addrs = std::net::ToSocketAddrs::to_socket_addrs(text)
            .map_err(|e| ConfigError::Seed(text.to_string(), e.to_string()))?;
        let addr = addrs
            .next()
            .ok_or_else(|| ConfigError::Seed(text.to_string(), "no address".into()))?;
        seeds.push(addr);
    }
    if !file.zones.is_empty() {
        corecast_cluster::zones::ZoneTable::new(file.zones.clone())
            .map_err(|e| ConfigError::Zones(e.to_string()))?;
    }
    let advertised = settings
        .ice_ips
        .first()
        .copied()
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let http_ip = if settings.http.ip().is_unspecified() {
        advertised
    } else {
        settings.http.ip()
    };
    Ok(Some(ClusterSettings {
        node_id: args
            .node_id
            .or(file.node_id)
            .unwrap_or_else(|| rand::random::<u32>().max(1)),
        zone: args
            .zone
            .clone()
            .or(file.zone)
            .unwrap_or_else(|| "default".to_string()),
        seeds,
        sdn_bind: SocketAddr::from((Ipv4Addr::UNSPECIFIED, sdn_port.unwrap_or(0))),
        secret,
        role,
        public_url: args
            .public_url
            .clone()
            .or(file.public_url)
            .unwrap_or_else(|| {
                format!("http://{}", SocketAddr::new(http_ip, settings.http.port()))
            }),
        zones: file.zones,
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn rtp_port_ranges_must_hold_a_pair() {
        use super::parse_port_range;
        assert_eq!(parse_port_range("30000-30999"), Ok((30000, 30999)));
        assert_eq!(parse_port_range("65534-65535"), Ok((65534, 65535)));
        assert!(parse_port_range("65535-65535").is_err());
        assert!(parse_port_range("30001-30002").is_err(), "no even/odd pair");
        assert!(parse_port_range("30002-30001").is_err());
        assert!(parse_port_range("0-10").is_err());
        assert!(parse_port_range("x").is_err());
    }

    use super::*;

    #[test]
    fn flags_win_over_the_file() {
        let dir = std::env::temp_dir().join(format!("corecast-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "media_port = 7000\nshards = 3\nice_ip = [\"127.0.0.2\"]\nno_pin = true\nno_gso = true\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            shards: Some(2),
            ..ServeArgs::default()
        };
        let s = Settings::from_args(&args).unwrap();
        assert_eq!(s.media_port, 7000);
        assert_eq!(s.shards, 2);
        assert!(!s.pin);
        assert!(!s.gso);
        assert_eq!(s.ice_ips, vec!["127.0.0.2".parse::<IpAddr>().unwrap()]);
        std::fs::write(&path, "media_prot = 1\n").unwrap();
        assert!(matches!(
            Settings::from_args(&args),
            Err(ConfigError::Parse(..))
        ));
    }

    #[test]
    fn the_sample_config_in_tuning_is_valid() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tuning/corecast.toml");
        let args = ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        };
        let s = Settings::from_args(&args).expect("tuning/corecast.toml parses");
        assert_eq!(s.shards, 14);
        assert_eq!(s.first_core, 2);
        assert!(s.pin);
        assert!(s.gso);
        assert_eq!(s.socket_buffer, 8 << 20);
        assert_eq!(s.max_pending, 2000);
        assert_eq!(s.stun_claims_per_second, 1000);
        assert_eq!(s.rtmp_port, Some(1935));
        assert_eq!(s.rtmp_audio_bitrate, 128_000);
        assert!(s.cluster.is_none());
    }

    #[test]
    fn rtmp_is_on_by_default_and_zero_turns_it_off() {
        let s = Settings::from_args(&ServeArgs::default()).unwrap();
        assert_eq!(s.rtmp_port, Some(1935));
        let off = ServeArgs {
            rtmp_port: Some(0),
            ..ServeArgs::default()
        };
        assert_eq!(Settings::from_args(&off).unwrap().rtmp_port, None);
        let bad = ServeArgs {
            rtmp_audio_bitrate: Some(1_000_000),
            ..ServeArgs::default()
        };
        assert!(matches!(
            Settings::from_args(&bad),
            Err(ConfigError::AudioBitrate(1_000_000))
        ));
    }

    #[test]
    fn the_nack_window_defaults_to_3_s_and_is_bounded() {
        let s = Settings::from_args(&ServeArgs::default()).unwrap();
        assert_eq!(s.nack_window, Duration::from_secs(3));
        let args = |ms| ServeArgs {
            nack_window_ms: Some(ms),
            ..ServeArgs::default()
        };
        assert_eq!(
            Settings::from_args(&args(2000)).unwrap().nack_window,
            Duration::from_secs(2)
        );
        for bad in [0, 49, 10_001] {
            assert!(matches!(
                Settings::from_args(&args(bad)),
                Err(ConfigError::NackWindow(_))
            ));
        }
    }

    #[test]
    fn defaults_work_without_flags() {
        let s = Settings::from_args(&ServeArgs::default()).unwrap();
        assert_eq!(s.http.port(), 8080);
        assert_eq!(s.media_port, 9000);
        assert!(s.shards >= 1);
        assert!(s.gso);
        assert!(!s.ice_ips.is_empty());
        assert_eq!(s.max_pending, 2000);
        assert_eq!(s.stun_claims_per_second, 1000);
    }

    #[test]
    fn the_cluster_is_off_unless_asked_and_needs_a_secret() {
        assert!(Settings::from_args(&ServeArgs::default())
            .unwrap()
            .cluster
            .is_none());
        let mut args = ServeArgs {
            sdn_port: Some(7001),
            ..ServeArgs::default()
        };
        if std::env::var_os("CORECAST_CLUSTER_SECRET").is_none() {
            assert!(matches!(
                Settings::from_args(&args),
                Err(ConfigError::ClusterSecret)
            ));
        }
        args.cluster_secret = Some("s".into());
        args.seeds = vec!["127.0.0.1:7002".into()];
        args.role = Some(NodeRole::Media);
        let c = Settings::from_args(&args).unwrap().cluster.unwrap();
        assert_eq!(c.seeds, vec!["127.0.0.1:7002".parse().unwrap()]);
        assert_eq!(c.sdn_bind.port(), 7001);
        assert_eq!(c.zone, "default");
        assert!(c.node_id > 0);
        args.seeds = vec!["not an address".into()];
        assert!(matches!(
            Settings::from_args(&args),
            Err(ConfigError::Seed(..))
        ));
        let gateway = ServeArgs {
            role: Some(NodeRole::Gateway),
            ..ServeArgs::default()
        };
        assert!(matches!(
            Settings::from_args(&gateway),
            Err(ConfigError::GatewayAlone)
        ));
    }

    #[test]
    fn zones_come_from_the_file_and_bad_tables_are_refused() {
        let dir = std::env::temp_dir().join(format!("corecast-zones-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("z.toml");
        std::fs::write(
            &path,
            "sdn_port = 7001\ncluster_secret = \"s\"\nzone = \"eu\"\n[[zones]]\nname = \"eu\"\ncidrs = [\"10.0.0.0/8\"]\nlocation = [50.0, 8.0]\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        };
        let c = Settings::from_args(&args).unwrap().cluster.unwrap();
        assert_eq!(c.zone, "eu");
        assert_eq!(c.zones.len(), 1);
        std::fs::write(
            &path,
            "sdn_port = 7001\ncluster_secret = \"s\"\n[[zones]]\nname = \"a\"\n[[zones]]\nname = \"a\"\n",
        )
        .unwrap();
        assert!(matches!(
            Settings::from_args(&args),
            Err(ConfigError::Zones(_))
        ));
    }
}
