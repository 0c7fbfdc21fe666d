//! `corecast-bench`: the load generator and the raw-UDP floor.

use clap::{Parser, Subcommand};
use corecast_bench::{floor, load, rooms};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load-test corecast (or any WHIP/WHEP server) and measure this machine's floor.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// WHIP publishers and WHEP viewers against a server.
    Load(Box<load::LoadArgs>),
    /// A plain UDP forwarder at the same packet sizes: the machine's floor.
    Floor(floor::FloorArgs),
    /// Conference rooms over the SDK protocol: every peer publishes and
    /// subscribes to all others.
    Rooms(rooms::RoomsArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Load(args) => {
            let json = args.json.clone();
            load::run(*args).map(|s| {
                print_load(&s);
                serde_json::to_string_pretty(&s).map(|j| (json, j))
            })
        }
        Command::Rooms(args) => {
            let json = args.json.clone();
            rooms::run(args).map(|s| {
                print_rooms(&s);
                serde_json::to_string_pretty(&s).map(|j| (json, j))
            })
        }
        Command::Floor(args) => floor::run(args).map(|s| {
            println!(
                "floor: fanout {} x {} B: egress {:.0} pps on {:.2} cores = {:.0} pps per core, loss {:.3}%",
                s.fanout,
                s.packet_size,
                s.egress_pps,
                s.forwarder_cpu_cores,
                s.floor_pps_per_core,
                s.loss * 100.0
            );
            if let (Some(p50), Some(p99)) = (s.p50_added_ms, s.p99_added_ms) {
                eprintln!("floor: added latency p50 {p50:.2} ms p99 {p99:.2} ms");
            }
            serde_json::to_string_pretty(&s).map(|j| (None, j))
        }),
    };
    match result {
        Ok(Ok((Some(path), json))) => {
            if let Err(e) = std::fs::write(&path, json) {
                eprintln!("corecast-bench: cannot write {}: {e}", path.display());
                std::process::exit(1);
            }
        }
        Ok(Ok((None, json))) => println!("{json}"),
        Ok(Err(e)) => {
            eprintln!("corecast-bench: {e}");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("corecast-bench: {e}");
            std::process::exit(1);
        }
    }
}

fn print_load(s: &load::LoadSummary) {
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.1}"));
    println!("| metric | value |");
    println!("| --- | --- |");
    println!(
        "| publishers / viewers up (failed) | {} / {} ({}) |",
        s.publishers, s.max_viewers, s.session_failures
    );
    if s.retried_steps > 0 {
        println!(
            "| ramp steps that held when measured again | {} |",
            s.retried_steps
        );
    }
    // A MoQ viewer gets frames, not probe packets: no packet figures.
    if !s.moq {
        println!("| egress packets/s | {:.0} |", s.egress_pps);
    }
    println!("| server CPU (cores) | {} |", opt(s.server_cpu_cores));
    if !s.moq {
        println!(
            "| egress packets/s per server core | {} |",
            opt(s.egress_pps_per_core)
        );
        println!(
            "| server CPU seconds per million packets | {} |",
            opt(s.server_cpu_s_per_million_packets)
        );
        println!(
            "| added latency p50 / p99 (ms), at the viewer's socket | {:.2} / {:.2} |",
            s.p50_added_ms, s.p99_added_ms
        );
        println!(
            "| delivered p50 / p99 (ms), after the generator's queueing | {:.2} / {:.2} |",
            s.p50_delivered_ms, s.p99_delivered_ms
        );
        println!("| loss | {:.4}% |", s.loss * 100.0);
        println!(
            "| corrupted / reordered / duplicates | {} / {} / {} |",
            s.corrupted, s.reordered, s.duplicates
        );
        println!("| jitter max (ms) | {:.2} |", s.jitter_ms_max);
        println!(
            "| join p50 / p99 (ms) | {:.1} / {:.1} |",
            s.join_p50_ms, s.join_p99_ms
        );
        println!(
            "| sessions set up per s (per server core) | {:.0} ({}) |",
            s.setup_per_s,
            opt(s.setup_per_s_per_core)
        );
    }
    println!("| server peak RSS (MiB) | {} |", opt(s.server_rss_mb));
    println!(
        "| server memory per viewer (KiB, slope of RSS) | {} |",
        opt(s.rss_per_viewer_kib)
    );
    println!(
        "| viewers' UDP payload Mbit/s per server core | {} |",
        opt(s.egress_bps_per_core.map(|b| b / 1e6))
    );
    if s.moq {
        println!(
            "| MoQ viewer: video / audio frames per s, Mbit/s | {} / {} , {:.2} |",
            opt(s.moq_video_fps),
            opt(s.moq_audio_fps),
            s.viewer_rx_bps / 1e6
        );
    }
    if s.simulcast || s.viewer_cap_bps.is_some() {
        print_layers(s);
    }
    if s.rtmp {
        println!("| RTMP publishers failed | {} |", s.rtmp_failures);
        println!(
            "| AAC to Opus, server CPU ms per second per stream | {} |",
            opt(s.transcode_ms_per_s_per_stream)
        );
    }
}

fn print_layers(s: &load::LoadSummary) {
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.0}"));
    println!(
        "| arrived at each viewer's socket (kbit/s, mean) | {:.0} |",
        s.viewer_rx_bps / 1000.0
    );
    if let Some(cap) = s.viewer_cap_bps {
        println!(
            "| viewer downlink cap (kbit/s), datagrams it dropped | {} , {} |",
            cap / 1000,
            s.cap_dropped
        );
    }
    if !s.simulcast {
        return;
    }
    let per_layer: Vec<String> = s.viewers_per_layer.iter().map(u64::to_string).collect();
    println!(
        "| viewers per layer at the end (low to high) | {} |",
        per_layer.join(" / ")
    );
    println!(
        "| layer switches seen by viewers, up / down (resumes) | {} / {} ({}) |",
        s.layer_switches_up, s.layer_switches_down, s.layer_resumes
    );
    println!(
        "| layer runs not starting at a keyframe | {} |",
        s.unkeyed_layer_runs
    );
    println!(
        "| probes missing inside layer runs (of them in gaps ending at a keyframe) | {} ({}) |",
        s.layer_run_lost, s.lost_before_keyframes
    );
    println!(
        "| keyframes sent because the server asked | {} |",
        s.requested_keyframes
    );
    println!(
        "| server: layer switches up / down, video pauses | {} / {}, {} |",
        opt(s.server_layer_switches_up),
        opt(s.server_layer_switches_down),
        opt(s.server_video_pauses)
    );
    let slots = s
        .server_video_slots_per_layer
        .as_ref()
        .map_or("-".to_string(), |v| {
            v.iter()
                .map(|x| format!("{x:.0}"))
                .collect::<Vec<_>>()
                .join(" / ")
        });
    println!("| server: video slots per layer (0 to 3) | {slots} |");
    println!(
        "| server: mean bandwidth estimate (kbit/s) | {} |",
        opt(s.server_mean_estimate_bps.map(|b| b / 1000.0))
    );
}

fn print_rooms(s: &rooms::RoomsSummary) {
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.1}"));
    println!("| metric | value |");
    println!("| --- | --- |");
    println!(
        "| rooms x peers (subscriptions) | {} x {} ({}) |",
        s.rooms, s.peers_per_room, s.subscriptions
    );
    println!(
        "| set-up: all joined and live (s), peers per s | {:.2}, {:.1} |",
        s.setup_s, s.setup_peers_per_s
    );
    println!("| egress packets/s | {:.0} |", s.egress_pps);
    println!("| server CPU (cores) | {} |", opt(s.server_cpu_cores));
    println!(
        "| egress packets/s per server core | {} |",
        opt(s.egress_pps_per_core)
    );
    println!(
        "| added latency p50 / p99 (ms) | {:.2} / {:.2} |",
        s.p50_added_ms, s.p99_added_ms
    );
    println!("| loss | {:.4}% |", s.loss * 100.0);
    println!("| corrupted | {} |", s.corrupted);
    println!("| server peak RSS (MiB) | {} |", opt(s.server_rss_mb));
}
