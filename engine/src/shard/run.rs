//! The glommio loop of one shard.
//!
//! Tasks on the shard's executor, all sharing the [`Shard`] through a
//! `RefCell` that is never borrowed across an await:
//! - one receive task per media socket (io_uring `recv_from`);
//! - a timer task that gives endpoints their timeouts;
//! - a command task (control thread → shard, bounded flume channel);
//! - a ring task woken by the doorbell when another shard pushed media.
//!
//! Sends are batched `sendmmsg` calls (non-blocking) on the socket whose
//! address the datagram comes from; a full socket buffer drops the datagram
//! and counts it.

use std::cell::RefCell;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};

use super::Shard;
use crate::mesh::ShardLinks;
use crate::messages::{ControlEvent, ShardCommand};
use crate::metrics::{add, ShardMetrics};
use crate::socket::send_batch;

/// Everything a shard thread is started with.
pub struct ShardSetup {
    pub id: usize,
    pub core: Option<usize>,
    pub sockets: Vec<UdpSocket>,
    pub links: ShardLinks,
    pub commands: flume::Receiver<ShardCommand>,
    pub control: flume::Sender<ControlEvent>,
    pub metrics: Arc<ShardMetrics>,
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
    sockets: Vec<(SocketAddr, UdpSocket)>,
}

impl Senders {
    /// Sends the shard's queued datagrams, batched per socket.
    fn send_all(&self, shard: &mut Shard) {
        if shard.out.is_empty() {
            return;
        }
        let out = std::mem::take(&mut shard.out);
        for (i, (local, socket)) in self.sockets.iter().enumerate() {
            // Datagrams from this socket's address; the first socket also
            // takes any whose source matches none (cannot happen with str0m
            // host candidates, but nothing is dropped silently).
            let batch: Vec<(SocketAddr, &[u8])> = out
                .iter()
                .filter(|t| {
                    t.source == *local
                        || (i == 0 && !self.sockets.iter().any(|(a, _)| *a == t.source))
                })
                .map(|t| (t.destination, t.contents.as_slice()))
                .collect();
            if batch.is_empty() {
                continue;
            }
            let sent = send_batch(socket, &batch);
            add(&shard.metrics.tx_packets_total, sent.packets);
            add(&shard.metrics.tx_bytes_total, sent.bytes);
            add(&shard.metrics.send_errors_total, sent.errors);
        }
        // Keep the allocation for the next round.
        let mut out = out;
        out.clear();
        shard.out = out;
    }
}

async fn run(setup: ShardSetup) {
    let ShardSetup {
        id,
        sockets,
        links,
        commands,
        control,
        metrics,
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
        senders.push((local, send));
        // SAFETY: the fd comes from a bound UDP socket that we own and give
        // up here; glommio takes ownership of it.
        let rx = unsafe { glommio::net::UdpSocket::from_raw_fd(socket.into_raw_fd()) };
        receivers.push((local, rx));
    }
    let shard = Rc::new(RefCell::new(Shard::new(id, links, control, metrics)));
    let senders = Rc::new(Senders { sockets: senders });
    let doorbell = shard.borrow().doorbell();

    let mut tasks = Vec::new();
    for (local, socket) in receivers {
        let shard = shard.clone();
        let senders = senders.clone();
        tasks.push(glommio::spawn_local(async move {
            let mut buf = vec![0u8; 2048];
            loop {
                match socket.recv_from(&mut buf).await {
                    Ok((n, source)) => {
                        let mut s = shard.borrow_mut();
                        s.on_datagram(Instant::now(), source, local, &buf[..n]);
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
    // The command loop ends when the control thread drops its sender: shutdown.
    while let Ok(cmd) = commands.recv_async().await {
        let mut s = shard.borrow_mut();
        s.on_command(Instant::now(), cmd);
        senders.send_all(&mut s);
    }
    drop(tasks);
}
