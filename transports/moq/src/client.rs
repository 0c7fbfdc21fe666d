//! A MoQ client that watches one room: moq-net's client over a
//! [`QuicConn`], sans-IO like the endpoint (the caller moves datagrams and
//! time). It asks for the room's broadcast once the server announces it,
//! and keeps the catalog and every frame it receives. The engine's
//! integration tests and the load generator's MoQ viewers use it.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use crate::endpoint::Running;
use crate::quic::{pinned_client_config, ConnEvent, ConnKey, QuicConn};
use crate::ALPNS;

#[derive(Default)]
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }
}

type Boxed<T> = Pin<Box<dyn Future<Output = T>>>;

/// What the client saw.
#[derive(Debug, Default, Clone)]
pub struct Watched {
    pub catalog: Option<String>,
    /// Video groups: the frames of each (timestamp µs, bytes); empty for
    /// a client that only counts ([`WatchClient::count_only`]).
    pub video: Vec<Vec<(u64, Vec<u8>)>>,
    pub audio: Vec<(u64, Vec<u8>)>,
    /// Frames and their payload bytes, counted either way.
    pub video_frames: u64,
    pub video_bytes: u64,
    pub audio_frames: u64,
    pub error: Option<String>,
}

pub struct WatchClient {
    pub quic: QuicConn,
    flag: Arc<Flag>,
    /// Over WebTransport: the URL it asks for (the query carries a token).
    webtransport: Option<String>,
    /// The WebTransport protocols it offers.
    versions: Vec<String>,
    connect: Option<Boxed<Result<Running, String>>>,
    session: Option<Running>,
    origin: moq_net::origin::Producer,
    origin_driver: moq_net::origin::Driver,
    tasks: Vec<Boxed<()>>,
    seen: Arc<Mutex<Watched>>,
    room: String,
    /// Whether frames are kept (tests) or only counted (load).
    keep: bool,
}

impl WatchClient {
    /// A client at `local` that will watch `room` at `server`, pinning the
    /// server certificate's SHA-256 `fingerprint`.
    pub fn new(
        now: Instant,
        fingerprint: &str,
        local: SocketAddr,
        server: SocketAddr,
        room: &str,
    ) -> Result<WatchClient, String> {
        WatchClient::with_versions(now, fingerprint, local, server, room, ALPNS, None)
    }

    /// A client like [`WatchClient::new`] that speaks WebTransport over
    /// HTTP/3, as a browser does, asking for `url` (`https://host/?token=…`).
    pub fn webtransport(
        now: Instant,
        fingerprint: &str,
        local: SocketAddr,
        server: SocketAddr,
        room: &str,
        url: &str,
    ) -> Result<WatchClient, String> {
        WatchClient::with_versions(now, fingerprint, local, server, room, ALPNS, Some(url))
    }

    /// A client offering only `versions` (moq-lite ALPNs, or WebTransport
    /// protocols when it asks for a WebTransport `url`).
    pub fn with_versions(
        now: Instant,
        fingerprint: &str,
        local: SocketAddr,
        server: SocketAddr,
        room: &str,
        versions: &[&str],
        webtransport: Option<&str>,
    ) -> Result<WatchClient, String> {
        let alpns = if webtransport.is_some() {
            &[crate::H3][..]
        } else {
            versions
        };
        let config = pinned_client_config(fingerprint, alpns)?;
        let key = ConnKey { shard: 0, key: 1 };
        let quic = QuicConn::connect(now, config, key, local, server, "localhost")?;
        let (origin, origin_driver) =
            moq_net::origin::Producer::new(moq_net::origin::Config::default());
        Ok(WatchClient {
            quic,
            flag: Arc::new(Flag::default()),
            webtransport: webtransport.map(str::to_string),
            versions: versions.iter().map(|v| v.to_string()).collect(),
            connect: None,
            session: None,
            origin,
            origin_driver,
            tasks: Vec::new(),
            seen: Arc::default(),
            room: room.to_string(),
            keep: true,
        })
    }

    /// Counts frames instead of keeping them (a load generator's viewers).
    pub fn count_only(mut self) -> WatchClient {
        self.keep = false;
        self
    }

    /// Polls the session after an input (a datagram, time).
    pub fn pump(&mut self, now: Instant) {
        let waker = Waker::from(self.flag.clone());
        let waiter = kio::Waiter::new(waker.clone());
        let mut cx = Context::from_waker(&waker);
        for _ in 0..64 {
            self.flag.0.store(false, Ordering::Release);
            for e in self.quic.process() {
                if let ConnEvent::Connected { alpn } = e {
                    let session = self.quic.session(alpn);
                    let client = moq_net::Client::new().with_subscriber(self.origin.clone());
                    let url = self.webtransport.clone();
                    let versions = self.versions.clone();
                    self.connect = Some(Box::pin(async move {
                        let session = match url {
                            Some(url) => {
                                let versions: Vec<&str> =
                                    versions.iter().map(String::as_str).collect();
                                crate::h3::connect(session, &url, &versions)
                                    .await
                                    .map_err(|e| e.to_string())?
                            }
                            None => session,
                        };
                        client
                            .connect_lite(now, session)
                            .await
                            .map_err(|e| e.to_string())
                    }));
                }
            }
            let _ = self.origin_driver.poll(now, &waiter);
            if let Some(fut) = self.connect.as_mut() {
                if let Poll::Ready(r) = fut.as_mut().poll(&mut cx) {
                    self.connect = None;
                    match r {
                        Ok(s) => {
                            self.session = Some(s);
                            self.start_watching();
                        }
                        Err(e) => seen_lock(&self.seen).error = Some(format!("setup: {e}")),
                    }
                }
            }
            if let Some((_, driver)) = self.session.as_mut() {
                let _ = driver.poll(now, &waiter);
            }
            self.tasks
                .retain_mut(|t| t.as_mut().poll(&mut cx).is_pending());
            if !self.flag.0.load(Ordering::Acquire) {
                break;
            }
        }
    }

    /// What the client received so far.
    pub fn watched(&self) -> Watched {
        seen_lock(&self.seen).clone()
    }

    /// Whether the MoQ session is up.
    pub fn connected(&self) -> bool {
        self.session.is_some()
    }

    fn start_watching(&mut self) {
        let consumer = self.origin.consume();
        let seen = self.seen.clone();
        let room = self.room.clone();
        let keep = self.keep;
        self.tasks.push(Box::pin(async move {
            let result: Result<(), moq_net::Error> = async {
                let broadcast = consumer.routed_broadcast(room.as_str()).await?;
                let mut catalog = broadcast
                    .track(hang::Catalog::DEFAULT_NAME)?
                    .subscribe(None)
                    .await?;
                let mut video = broadcast.track("video")?.subscribe(None).await?;
                let mut audio = broadcast.track("audio")?.subscribe(None).await?;
                // Catalog, video and audio read side by side.
                let (s1, s2, s3) = (seen.clone(), seen.clone(), seen.clone());
                let cat = async move {
                    while let Some(mut g) = catalog.recv_group().await? {
                        if let Some(f) = g.read_frame().await? {
                            seen_lock(&s1).catalog =
                                Some(String::from_utf8_lossy(&f.payload).into_owned());
                        }
                    }
                    Ok::<(), moq_net::Error>(())
                };
                let vid = async move {
                    while let Some(mut g) = video.recv_group().await? {
                        if keep {
                            seen_lock(&s2).video.push(Vec::new());
                        }
                        while let Some(f) = g.read_frame().await? {
                            let Ok(frame) = hang::container::Frame::decode(f.payload) else {
                                continue;
                            };
                            let mut seen = seen_lock(&s2);
                            seen.video_frames += 1;
                            seen.video_bytes += frame.payload.len() as u64;
                            if let (true, Some(g)) = (keep, seen.video.last_mut()) {
                                g.push((
                                    frame.timestamp.as_micros() as u64,
                                    frame.payload.to_vec(),
                                ));
                            }
                        }
                    }
                    Ok::<(), moq_net::Error>(())
                };
                let aud = async move {
                    while let Some(mut g) = audio.recv_group().await? {
                        while let Some(f) = g.read_frame().await? {
                            let Ok(frame) = hang::container::Frame::decode(f.payload) else {
                                continue;
                            };
                            let mut seen = seen_lock(&s3);
                            seen.audio_frames += 1;
                            if keep {
                                seen.audio.push((
                                    frame.timestamp.as_micros() as u64,
                                    frame.payload.to_vec(),
                                ));
                            }
                        }
                    }
                    Ok::<(), moq_net::Error>(())
                };
                let (a, b, c) = futures_join(cat, vid, aud).await;
                a.and(b).and(c)
            }
            .await;
            if let Err(e) = result {
                seen_lock(&seen).error = Some(e.to_string());
            }
        }));
    }
}

/// Polls three futures to completion together.
async fn futures_join<A, B, C>(
    a: impl Future<Output = A>,
    b: impl Future<Output = B>,
    c: impl Future<Output = C>,
) -> (A, B, C) {
    let mut a = Box::pin(a);
    let mut b = Box::pin(b);
    let mut c = Box::pin(c);
    let (mut ra, mut rb, mut rc) = (None, None, None);
    std::future::poll_fn(|cx| {
        if ra.is_none() {
            if let Poll::Ready(v) = a.as_mut().poll(cx) {
                ra = Some(v);
            }
        }
        if rb.is_none() {
            if let Poll::Ready(v) = b.as_mut().poll(cx) {
                rb = Some(v);
            }
        }
        if rc.is_none() {
            if let Poll::Ready(v) = c.as_mut().poll(cx) {
                rc = Some(v);
            }
        }
        if ra.is_some() && rb.is_some() && rc.is_some() {
            Poll::Ready((ra.take().unwrap(), rb.take().unwrap(), rc.take().unwrap()))
        } else {
            Poll::Pending
        }
    })
    .await
}

fn seen_lock(seen: &Mutex<Watched>) -> std::sync::MutexGuard<'_, Watched> {
    seen.lock().unwrap_or_else(|e| e.into_inner())
}
