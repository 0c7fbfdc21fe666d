//! The `corecast` binary.

use clap::{Args, Parser, Subcommand};
use corecast::config::ServeArgs;
use corecast::control::auth::{self, Claims};
use corecast::{Node, Settings};

// The `system-allocator` feature leaves the C library's malloc in place,
// for heap profilers that hook it (heaptrack, valgrind).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod doctor;

/// corecast: a thread-per-core SFU media server (WebRTC, WHIP, WHEP).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the media server.
    Serve(ServeArgs),
    /// Check this host for what the server needs (memlock, io_uring, buffers, cores).
    Doctor(ServeArgs),
    /// Mint a room token (JWT, HS256) signed with the node's --auth-secret.
    Token(TokenArgs),
}

/// `corecast token --room R [--peer P] [--publish] [--subscribe] --ttl 1h`
#[derive(Args)]
struct TokenArgs {
    /// The room (the stream of /whip/{stream} and /whep/{stream}).
    #[arg(long)]
    room: String,
    /// The peer the holder joins as.
    #[arg(long)]
    peer: Option<String>,
    /// Allow publishing (WHIP).
    #[arg(long)]
    publish: bool,
    /// Allow subscribing (WHEP).
    #[arg(long)]
    subscribe: bool,
    /// Allow only these transports (repeatable: whip, whep, ...). [default: all]
    #[arg(long = "transport")]
    transports: Vec<String>,
    /// How long the token is valid, e.g. 30m, 1h, 7d.
    #[arg(long, default_value = "1h")]
    ttl: humantime::Duration,
    /// The secret the node checks tokens with (its --auth-secret).
    #[arg(long, env = "CORECAST_AUTH_SECRET")]
    auth_secret: String,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                "info,str0m=warn,atm0s_sdn_network=warn,atm0s_sdn_router=warn,atm0s_sdn=warn".into()
            }),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Doctor(args) => {
            let settings = settings_or_exit(&args);
            let cfg = doctor::DoctorConfig {
                shards: settings.shards,
                socket_buffer: settings.socket_buffer as u64,
                first_core: settings.first_core,
                pin: settings.pin,
            };
            std::process::exit(doctor::doctor(&cfg));
        }
        Command::Token(args) => token(&args),
    }
}

fn token(args: &TokenArgs) {
    if !args.publish && !args.subscribe {
        eprintln!("corecast token: give --publish, --subscribe or both");
        std::process::exit(2);
    }
    if args.auth_secret.len() < auth::MIN_SECRET_LEN {
        eprintln!(
            "corecast token: --auth-secret must be at least {} bytes",
            auth::MIN_SECRET_LEN
        );
        std::process::exit(2);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let claims = Claims {
        room: args.room.clone(),
        peer: args.peer.clone(),
        publish: args.publish,
        subscribe: args.subscribe,
        transports: (!args.transports.is_empty()).then(|| args.transports.clone()),
        exp: now.saturating_add(args.ttl.as_secs()),
        nbf: None,
    };
    match auth::mint(args.auth_secret.as_bytes(), &claims) {
        Ok(t) => println!("{t}"),
        Err(e) => {
            eprintln!("corecast token: {e}");
            std::process::exit(1);
        }
    }
}

fn settings_or_exit(args: &ServeArgs) -> Settings {
    match Settings::from_args(args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("corecast: {e}");
            std::process::exit(2);
        }
    }
}

fn serve(args: &ServeArgs) {
    let settings = settings_or_exit(args);
    match Node::start(&settings) {
        Ok(node) => {
            tracing::info!(
                "corecast listening: http://{} media {:?} ({} shards{})",
                node.http_addr,
                node.media_addrs,
                settings.shards,
                if settings.pin { ", pinned" } else { "" }
            );
            if let Some(rtmp) = node.rtmp_addr {
                tracing::info!("rtmp ingest: rtmp://{rtmp}/live/STREAM");
            }
            if let Some(sip) = node.sip_addr {
                tracing::info!("sip: call sip:ROOM@{sip}");
            }
            node.wait();
        }
        Err(e) => {
            eprintln!("corecast: {e}");
            std::process::exit(1);
        }
    }
}
