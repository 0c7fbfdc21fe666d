//! The control plane: HTTP (WHIP, WHEP, metrics) on its own thread with a
//! small tokio runtime. It never touches endpoint state on a shard: it holds
//! pending endpoints until a shard claims them, and sends commands over
//! bounded channels.

pub mod auth;
mod calls;
mod directory;
mod gateway;
mod hook;
mod http;
mod ingest;
mod load;
mod pages;
mod rooms;
mod rpc;
mod sdk;
pub mod sip;
mod speakers;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corecast_webrtc::EndpointConfig;

pub use directory::Directory;

use corecast_cluster::zones::ZoneTable;
use corecast_cluster::ClusterView;

use crate::config::{ClusterSettings, Settings};
use crate::messages::{ControlEvent, ShardCommand};
use crate::metrics::ShardMetrics;
use crate::node::NodeError;

/// What HTTP handlers share.
pub struct Control {
    pub config: EndpointConfig,
    pub auth: auth::Auth,
    pub directory: Mutex<Directory>,
    pub metrics: Vec<Arc<ShardMetrics>>,
    pub max_endpoints_per_shard: usize,
    /// Pending endpoints, node-wide, before new sessions get 503.
    pub max_pending: usize,
    /// The cluster part of the settings, when clustered.
    pub cluster: Option<ClusterSettings>,
    /// The gateways' zone table.
    pub zones: ZoneTable,
    /// The latest cluster view from shard 0.
    pub view: Mutex<Option<ClusterView>>,
    /// The SIP service's counters and calls (`on` when `--sip-port` is set).
    pub sip: Mutex<sip::SipStats>,
    /// Requests to the SIP service (calls to place, to hang up).
    pub sip_commands: Option<tokio::sync::mpsc::Sender<sip::SipCommand>>,
    /// The SHA-256 of the MoQ certificate, when MoQ is on.
    pub moq_fingerprint: Option<String>,
}

/// The running control thread.
pub struct ControlHandle {
    pub http_addr: SocketAddr,
    thread: std::thread::JoinHandle<()>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl ControlHandle {
    pub fn join(self) {
        let _ = self.thread.join();
    }

    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

#[allow(clippy::too_many_arguments)]
pub fn start(
    settings: &Settings,
    listener: std::net::TcpListener,
    config: EndpointConfig,
    shards: Vec<flume::Sender<ShardCommand>>,
    events: flume::Receiver<ControlEvent>,
    metrics: Vec<Arc<ShardMetrics>>,
    sip: Option<sip::SipSetup>,
    moq_fingerprint: Option<String>,
) -> Result<ControlHandle, NodeError> {
    let addr = settings.http;
    listener
        .set_nonblocking(true)
        .map_err(|source| NodeError::Http { addr, source })?;
    let http_addr = listener
        .local_addr()
        .map_err(|source| NodeError::Http { addr, source })?;
    let (sip_tx, sip_rx) = tokio::sync::mpsc::channel(64);
    let sip_commands = sip.is_some().then_some(sip_tx);
    let control = Arc::new(Control {
        config,
        auth: auth::Auth::new(settings.token.clone(), settings.auth_secret.clone()),
        directory: Mutex::new({
            let mut d = Directory::new(
                shards,
                settings.cluster.is_some(),
                // Connection ids carry the node id's low 16 bits.
                settings.cluster.as_ref().map_or(0, |c| c.node_id as u16),
            );
            d.top_audio = settings.top_audio;
            d
        }),
        metrics,
        max_endpoints_per_shard: settings.max_endpoints_per_shard,
        max_pending: settings.max_pending,
        zones: settings
            .cluster
            .as_ref()
            .and_then(|c| ZoneTable::new(c.zones.clone()).ok())
            .unwrap_or_default(),
        cluster: settings.cluster.clone(),
        view: Mutex::new(None),
        sip: Mutex::new(sip::SipStats::default()),
        sip_commands,
        moq_fingerprint,
    });
    let consent = settings.consent_timeout;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("control runtime: {e}");
                    return;
                }
            };
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!("control listener: {e}");
                        return;
                    }
                };
                let events_task = tokio::spawn(handle_events(control.clone(), events));
                let sweep_task = tokio::spawn(sweep_pending(control.clone(), consent));
                let sip_task =
                    sip.map(|setup| tokio::spawn(sip::run(control.clone(), setup, sip_rx)));
                let app = http::router(control.clone());
                let app = app.into_make_service_with_connect_info::<SocketAddr>();
                let server = axum::serve(listener, app).with_graceful_shutdown(async {
                    let _ = stop_rx.await;
                });
                if let Err(e) = server.await {
                    tracing::error!("http server: {e}");
                }
                events_task.abort();
                sweep_task.abort();
                if let Some(t) = sip_task {
                    t.abort();
                }
                // Dropping the directory drops the shards' command senders:
                // their loops end.
                if let Ok(mut d) = control.directory.lock() {
                    d.shutdown();
                }
            });
        })
        .map_err(|source| NodeError::Http { addr, source })?;
    Ok(ControlHandle {
        http_addr,
        thread,
        stop: stop_tx,
    })
}

async fn handle_events(control: Arc<Control>, events: flume::Receiver<ControlEvent>) {
    while let Ok(event) = events.recv_async().await {
        if let ControlEvent::PublishRequest {
            conn,
            shard,
            transport,
            room,
            token,
        } = event
        {
            ingest::on_publish_request(
                &control,
                Instant::now(),
                conn,
                shard,
                transport,
                &room,
                token.as_deref(),
            );
            continue;
        }
        if let ControlEvent::WatchRequest {
            conn,
            shard,
            transport,
            room,
            token,
            slots,
        } = event
        {
            ingest::on_watch_request(
                &control,
                Instant::now(),
                conn,
                shard,
                transport,
                &room,
                token.as_deref(),
                slots,
            );
            continue;
        }
        if let ControlEvent::RemoteRegistration { up, record } = event {
            // For the SIP service (dropped when SIP is off or it is busy:
            // the holder sets the binding again at its next refresh).
            if let Some(tx) = control.sip_commands.as_ref() {
                let _ = tx.try_send(sip::SipCommand::RemoteRegistration { up, record });
            }
            continue;
        }
        if let ControlEvent::ClusterView(view) = event {
            if let Ok(mut v) = control.view.lock() {
                *v = Some(*view);
            }
            continue;
        }
        let Ok(mut d) = control.directory.lock() else {
            return;
        };
        d.on_event(Instant::now(), event, &control.metrics);
    }
}

/// Every 100 ms: commands waiting in the outboxes are retried and
/// unacknowledged adoptions reconciled ([`Directory::tick`]). Each second:
/// pending endpoints that no shard claimed within the consent timeout go
/// away, and a clustered node reports its load.
async fn sweep_pending(control: Arc<Control>, consent: Duration) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut cpu = load::CpuMeter::new(Instant::now());
    let mut next_second = Instant::now();
    loop {
        tick.tick().await;
        let now = Instant::now();
        let Ok(mut d) = control.directory.lock() else {
            return;
        };
        d.tick(now);
        if now < next_second {
            continue;
        }
        next_second = now + Duration::from_secs(1);
        let cpu_percent = cpu.sample(now);
        d.expire_pending(now, consent);
        if control.cluster.is_some() {
            let load = load::node_load(&control, &d, cpu_percent);
            d.report_load(load);
        }
    }
}
