//! The `corecast` binary.

use clap::{Parser, Subcommand};
use corecast::config::ServeArgs;
use corecast::{Node, Settings};

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
            node.wait();
        }
        Err(e) => {
            eprintln!("corecast: {e}");
            std::process::exit(1);
        }
    }
}
