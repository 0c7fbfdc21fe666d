//! The glommio loop of one shard.
//!
//! Tasks on the shard's executor, all sharing the [`Shard`] through a
//! `RefCell` that is never borrowed across an await:
//! - one receive task per media socket (io_uring `recv_from`);
//! - a timer task that gives endpoints their timeouts;
//! - a command task (control thread → shard, bounded flume channel);
//! - a ring task woken by the doorbell when another shard pushed media;
//! - with `--rtmp-port`, an accept task on the shard's own RTMP listener
//!   (`SO_REUSEPORT`: the kernel spreads connections over the shards) and a
//!   reader task per connection, so a publisher's media is read and
//!   published on the shard that holds it.
//!
//! - a receive task per SIP call's RTP and RTCP socket, from the call's
//!   [`ShardCommand::Place`] until the shard no longer holds the call.
//!
//! Sends are batched `sendmmsg` calls (non-blocking, UDP GSO for each
//! viewer's run of packets; see [`crate::udp_send`]) on the socket whose
//! address the datagram comes from; a full socket buffer drops the datagram
//! and counts it.

use std::cell::RefCell;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};

use corecast_cluster::{Cluster, ClusterConfig};

use super::{ClusterPort, Shard, StreamSettings};
use crate::mesh::ShardLinks;
use crate::messages::{ControlEvent, ShardCommand};
use crate::metrics::{add, ShardMetrics};
use crate::udp_send::UdpSender;

/// Datagrams handled as one batch before the shard flushes and sends.
const RECV_BATCH: usize = 32;
/// Viewers whose queued media is released before the shard sends.
const FLUSH_GROUP: usize = 8;
/// Bytes read from a stream connection at once: the bound of what one
/// connection makes the shard buffer before its endpoint has parsed it
/// (16 KiB: 50 reads a second carry a 6 Mbit/s stream; 10,000 idle
/// connections hold 160 MiB until their handshake timeout).
const STREAM_READ: usize = 16 * 1024;

/// Everything a shard thread is started with.
pub struct ShardSetup {
    pub id: usize,
    pub core: Option<usize>,
    pub sockets: Vec<UdpSocket>,
    /// Send runs of datagrams to one peer as UDP GSO messages (media and
    /// cluster sockets).
    pub gso: bool,
    pub links: ShardLinks,
    pub commands: flume::Receiver<ShardCommand>,
    pub control: flume::Sender<ControlEvent>,
    pub metrics: Arc<ShardMetrics>,
    /// Shard 0 of a clustered node: the cluster socket and configuration.
    pub cluster: Option<ClusterSetup>,
    /// STUN claims for unknown ufrags passed to the control thread per
    /// second (0: no limit).
    pub claims_per_second: u32,
    /// The shard's RTMP listener (`SO_REUSEPORT`, listening), if RTMP is on.
    pub rtmp: Option<std::net::TcpListener>,
    /// The shard's MoQ socket (`SO_REUSEPORT`) and QUIC configuration, if
    /// MoQ is on.
    pub moq: Option<MoqSetup>,
    pub streams: StreamSettings,
}

/// A shard's share of the MoQ port.
pub struct MoqSetup {
    pub socket: UdpSocket,
    pub config: corecast_moq::quic::QuicServerConfig,
}

/// What shard 0 needs to drive the cluster.
pub struct ClusterSetup {
    pub socket: UdpSocket,
    pub config: ClusterConfig,
}

/// Starts a shard on its own (pinned) thread.
pub fn spawn_shard(setup: ShardSetup) -> std::io::Result<glommio::ExecutorJoinHandle<()>> {
    let placement = match setup.core {
        Some(core) => Placement::Fixed(core),
        None => Placement::Unbound,
    };
    LocalExecutorBuilder::new(placement)
        .name(&format!("shard-{}", setup.id))
        .spawn(move || run(setup))
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// Sockets for sending, by local address.
struct Senders {
    sockets: Vec<(SocketAddr, UdpSender)>,
    cluster: Option<UdpSender>,
    /// SIP calls' RTP and RTCP sockets (two per call, added and removed as
    /// calls come and go).
    calls: RefCell<std::collections::HashMap<SocketAddr, UdpSender>>,
}

impl Senders {
    /// Releases the batch's queued media a few viewers at a time, sending
    /// after each group, then sends the rest of the shard's datagrams.
    /// Also retries the lifecycle events waiting for the control queue.
    fn send_all(&self, shard: &mut Shard) {
        shard.flush_control();
        while shard.flush_media(Instant::now(), FLUSH_GROUP) {
            self.send_media(shard);
        }
        shard.record_forward_latency(Instant::now());
        self.send_cluster(shard);
        self.send_media(shard);
    }

    /// Sends the shard's queued datagrams, batched per socket.
    fn send_media(&self, shard: &mut Shard) {
        if shard.out.is_empty() {
            return;
        }
        let out = std::mem::take(&mut shard.out);
        let calls = self.calls.borrow();
        if !calls.is_empty() {
            // One pass over the datagrams, grouped by the call socket they
            // leave from (a call sends one or two per 20 ms).
            let mut by_call: std::collections::HashMap<SocketAddr, Vec<(SocketAddr, &[u8])>> =
                std::collections::HashMap::new();
            for t in out.iter().filter(|t| calls.contains_key(&t.source)) {
                by_call
                    .entry(t.source)
                    .or_default()
                    .push((t.destination, t.contents.as_slice()));
            }
            for (local, batch) in &by_call {
                let Some(socket) = calls.get(local) else {
                    continue;
                };
                let sent = socket.send(batch);
                add(&shard.metrics.tx_packets_total, sent.packets);
                add(&shard.metrics.tx_bytes_total, sent.bytes);
                add(&shard.metrics.send_errors_total, sent.errors);
            }
        }
        for (i, (local, socket)) in self.sockets.iter().enumerate() {
            // Datagrams from this socket's address; the first socket also
            // takes any whose source matches none (cannot happen with str0m
            // host candidates, but nothing is dropped silently).
            let batch: Vec<(SocketAddr, &[u8])> = out
                .iter()
                .filter(|t| {
                    t.source == *local
                        || (i == 0
                            && !self.sockets.iter().any(|(a, _)| *a == t.source)
                            && !calls.contains_key(&t.source))
                })
                .map(|t| (t.destination, t.contents.as_slice()))
                .collect();
            if batch.is_empty() {
                continue;
            }
            let sent = socket.send(&batch);
            add(&shard.metrics.tx_packets_total, sent.packets);
            add(&shard.metrics.tx_bytes_total, sent.bytes);
            add(&shard.metrics.tx_gso_packets_total, sent.gso_packets);
            add(&shard.metrics.send_errors_total, sent.errors);
        }
        drop(calls);
        // Keep the allocation for the next round.
        let mut out = out;
        out.clear();
        shard.out = out;
    }

    fn send_cluster(&self, shard: &mut Shard) {
        let (Some(socket), Some(port)) = (self.cluster.as_ref(), shard.cluster.as_mut()) else {
            return;
        };
        if port.out.is_empty() {
            return;
        }
        let out = std::mem::take(&mut port.out);
        let batch: Vec<(SocketAddr, &[u8])> =
            out.iter().map(|(to, d)| (*to, d.as_slice())).collect();
        let sent = socket.send(&batch);
        add(&shard.metrics.send_errors_total, sent.errors);
        let mut out = out;
        out.clear();
        if let Some(port) = shard.cluster.as_mut() {
            port.out = out;
        }
    }
}

async fn run(setup: ShardSetup) {
    let ShardSetup {
        id,
        sockets,
        gso,
        links,
        commands,
        control,
        metrics,
        cluster,
        claims_per_second,
        rtmp,
        moq,
        streams,
        ..
    } = setup;
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for socket in sockets {
        let Ok(local) = socket.local_addr() else {
            continue;
        };
        let Ok(send) = socket.try_clone() else {
            continue;
        };
        senders.push((local, UdpSender::new(send, gso)));
        // SAFETY: the fd comes from a bound UDP socket that we own and give
        // up here; glommio takes ownership of it.
        let rx = unsafe { glommio::net::UdpSocket::from_raw_fd(socket.into_raw_fd()) };
        receivers.push((local, rx));
    }
    // The MoQ socket sends like the media sockets (its transmits name it as
    // their source) and has a reader of its own.
    let mut moq_rx = None;
    let mut moq_config = None;
    if let Some(MoqSetup { socket, config }) = moq {
        if let (Ok(local), Ok(send)) = (socket.local_addr(), socket.try_clone()) {
            senders.push((local, UdpSender::new(send, gso)));
            // SAFETY: as for the media sockets: a bound UDP socket we own.
            let rx = unsafe { glommio::net::UdpSocket::from_raw_fd(socket.into_raw_fd()) };
            moq_rx = Some((local, rx));
            moq_config = Some((config, local));
        }
    }
    let now = Instant::now();
    let (cluster_port, cluster_rx, cluster_tx) = match cluster {
        Some(ClusterSetup { socket, config }) => {
            let tx = socket.try_clone().ok().map(|s| UdpSender::new(s, gso));
            // SAFETY: as for the media sockets: a bound UDP socket we own.
            let rx = unsafe { glommio::net::UdpSocket::from_raw_fd(socket.into_raw_fd()) };
            (
                Some(ClusterPort::new(Cluster::new(config), now)),
                Some(rx),
                tx,
            )
        }
        None => (None, None, None),
    };
    let shard = Rc::new(RefCell::new(Shard::new(
        id,
        links,
        control,
        metrics,
        cluster_port,
        claims_per_second,
    )));
    shard.borrow_mut().set_stream_settings(streams);
    if let Some((config, local)) = moq_config {
        shard.borrow_mut().set_moq(config, local);
    }
    let senders = Rc::new(Senders {
        sockets: senders,
        cluster: cluster_tx,
        calls: RefCell::default(),
    });
    let doorbell = shard.borrow().doorbell();

    let mut tasks = Vec::new();
    if let Some((local, socket)) = moq_rx {
        let shard = shard.clone();
        let senders = senders.clone();
        tasks.push(glommio::spawn_local(async move {
            let mut buf = vec![0u8; 2048];
            loop {
                match socket.recv_from(&mut buf).await {
                    Ok((n, source)) => {
                        let mut s = shard.borrow_mut();
                        s.on_moq_datagram(Instant::now(), source, local, &buf[..n]);
                        senders.send_all(&mut s);
                    }
                    Err(e) => {
                        tracing::debug!("shard {id}: moq recv error {e}");
                        glommio::timer::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
        }));
    }
    for (local, socket) in receivers {
        let shard = shard.clone();
        let senders = senders.clone();
        tasks.push(glommio::spawn_local(async move {
            let mut buf = vec![0u8; 2048];
            // The same socket, for draining what else is queued without
            // waiting (it is non-blocking).
            let drain = senders
                .sockets
                .iter()
                .find(|(a, _)| *a == local)
                .and_then(|(_, s)| s.socket().try_clone().ok());
            loop {
                match socket.recv_from(&mut buf).await {
                    Ok((n, source)) => {
                        let mut s = shard.borrow_mut();
                        let now = Instant::now();
                        s.on_datagram(now, source, local, &buf[..n]);
                        // A burst (a video frame's packets) is handled as one
                        // batch: each viewer gets one time input for all of it.
                        if let Some(drain) = drain.as_ref() {
                            for _ in 1..RECV_BATCH {
                                let Ok((n, source)) = drain.recv_from(&mut buf) else {
                                    break;
                                };
                                s.on_datagram(Instant::now(), source, local, &buf[..n]);
                            }
                        }
                        senders.send_all(&mut s);
                    }
                    Err(e) => {
                        tracing::debug!("shard {id}: recv error {e}");
                        glommio::timer::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
        }));
    }
    {
        let shard = shard.clone();
        let senders = senders.clone();
        tasks.push(glommio::spawn_local(async move {
            loop {
                let now = Instant::now();
                let next = shard.borrow().next_timeout(now);
                let wait = next
                    .saturating_duration_since(now)
                    .clamp(Duration::from_micros(500), Duration::from_millis(50));
                glommio::timer::sleep(wait).await;
                let mut s = shard.borrow_mut();
                add(&s.metrics.timer_wakeups_total, 1);
                s.on_tick(Instant::now());
                senders.send_all(&mut s);
            }
        }));
    }
    {
        let shard = shard.clone();
        let senders = senders.clone();
        tasks.push(glommio::spawn_local(async move {
            while doorbell.recv_async().await.is_ok() {
                let mut s = shard.borrow_mut();
                s.drain_rings(Instant::now());
                senders.send_all(&mut s);
            }
        }));
    }
    if let Some(socket) = cluster_rx {
        let shard_rx = shard.clone();
        let senders_rx = senders.clone();
        tasks.push(glommio::spawn_local(async move {
            let mut buf = vec![0u8; 2048];
            loop {
                match socket.recv_from(&mut buf).await {
                    Ok((n, source)) => {
                        let mut s = shard_rx.borrow_mut();
                        s.on_cluster_datagram(Instant::now(), source, &buf[..n]);
                        senders_rx.send_all(&mut s);
                    }
                    Err(e) => {
                        tracing::debug!("cluster socket: recv error {e}");
                        glommio::timer::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
        }));
        let shard = shard.clone();
        let senders = senders.clone();
        tasks.push(glommio::spawn_local(async move {
            let mut next_report = Instant::now();
            loop {
                let now = Instant::now();
                let wake = shard
                    .borrow()
                    .cluster
                    .as_ref()
                    .map(|p| p.wake)
                    .unwrap_or(now);
                let wait = wake
                    .saturating_duration_since(now)
                    .clamp(Duration::from_millis(1), Duration::from_millis(100));
                glommio::timer::sleep(wait).await;
                let now = Instant::now();
                let mut s = shard.borrow_mut();
                s.on_cluster_timeout(now);
                if now >= next_report {
                    next_report = now + Duration::from_secs(1);
                    s.report_cluster(now);
                }
                senders.send_all(&mut s);
            }
        }));
    }
    if let Some(listener) = rtmp {
        tasks.push(accept_streams(listener, shard.clone(), senders.clone()));
    }
    // The command loop ends when the control thread drops its sender: shutdown.
    while let Ok(cmd) = commands.recv_async().await {
        // A call's socket is read once the shard holds the call.
        let call = match &cmd {
            ShardCommand::Place { conn, sockets, .. } => Some((
                *conn,
                sockets
                    .iter()
                    .filter_map(|s| s.try_clone().ok())
                    .collect::<Vec<_>>(),
            )),
            _ => None,
        };
        {
            let mut s = shard.borrow_mut();
            s.on_command(Instant::now(), cmd);
            senders.send_all(&mut s);
        }
        for (conn, socket) in call
            .into_iter()
            .flat_map(|(c, s)| s.into_iter().map(move |s| (c, s)))
        {
            if let Some(task) = receive_call(conn, &socket, shard.clone(), senders.clone(), gso) {
                task.detach();
            }
        }
    }
    drop(tasks);
}

/// How often a call's receive task checks that the shard still holds the
/// call, when no datagram comes.
const CALL_CHECK: Duration = Duration::from_secs(1);

/// Starts receiving a SIP call's RTP socket and adds it to the senders.
/// The task ends (and the socket closes) once the shard no longer holds
/// the call.
fn receive_call(
    conn: crate::messages::ConnId,
    socket: &UdpSocket,
    shard: Rc<RefCell<Shard>>,
    senders: Rc<Senders>,
    gso: bool,
) -> Option<glommio::Task<()>> {
    let local = socket.local_addr().ok()?;
    let send = socket.try_clone().ok()?;
    let recv = socket.try_clone().ok()?;
    senders
        .calls
        .borrow_mut()
        .insert(local, UdpSender::new(send, gso));
    // SAFETY: a bound UDP socket (a dup the command's socket shares) that
    // we own and give up here; glommio takes ownership of it.
    let rx = unsafe { glommio::net::UdpSocket::from_raw_fd(recv.into_raw_fd()) };
    rx.set_read_timeout(Some(CALL_CHECK)).ok()?;
    Some(glommio::spawn_local(async move {
        let mut buf = vec![0u8; 2048];
        loop {
            let got = rx.recv_from(&mut buf).await;
            let mut s = shard.borrow_mut();
            if !s.holds(conn) {
                break;
            }
            if let Ok((n, source)) = got {
                s.on_call_datagram(Instant::now(), conn, source, local, &buf[..n]);
                senders.send_all(&mut s);
            }
        }
        senders.calls.borrow_mut().remove(&local);
    }))
}

/// Accepts RTMP connections on the shard's listener; each gets a reader
/// task that feeds its bytes to its endpoint.
fn accept_streams(
    listener: std::net::TcpListener,
    shard: Rc<RefCell<Shard>>,
    senders: Rc<Senders>,
) -> glommio::Task<()> {
    glommio::spawn_local(async move {
        let Ok(local) = listener.local_addr() else {
            return;
        };
        // SAFETY: a bound, listening TCP socket that we own and give up
        // here; glommio takes ownership of it.
        let listener = unsafe { glommio::net::TcpListener::from_raw_fd(listener.into_raw_fd()) };
        loop {
            let stream = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!("rtmp accept: {e}");
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let Ok(remote) = stream.peer_addr() else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            // A second handle on the socket, for the shard's non-blocking
            // writes (acknowledgements, status messages).
            // SAFETY: dup of a socket fd we hold; the new fd is owned by the
            // std TcpStream and closed with it.
            let dup = unsafe { libc::dup(stream.as_raw_fd()) };
            if dup < 0 {
                continue;
            }
            // SAFETY: `dup` is a fresh fd of a connected TCP socket.
            let writer = unsafe { std::net::TcpStream::from_raw_fd(dup) };
            let conn = {
                let mut s = shard.borrow_mut();
                let conn = s.accept_stream(Instant::now(), writer, local, remote);
                senders.send_all(&mut s);
                conn
            };
            let Some(conn) = conn else {
                continue;
            };
            let shard = shard.clone();
            let senders = senders.clone();
            glommio::spawn_local(async move {
                use futures_lite::AsyncReadExt;
                let mut stream = stream;
                let mut buf = vec![0u8; STREAM_READ];
                loop {
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    let mut s = shard.borrow_mut();
                    let alive = s.on_stream(Instant::now(), conn, &buf[..n]);
                    senders.send_all(&mut s);
                    if n == 0 || !alive {
                        break;
                    }
                }
            })
            .detach();
        }
    })
}
