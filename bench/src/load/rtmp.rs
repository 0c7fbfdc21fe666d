//! RTMP publishers for `load --rtmp`: each on its own thread with a
//! blocking TCP connection (a handful of encoders, not thousands of peers).
//!
//! A publisher sends the same schedule as a WHIP publisher, as an FLV
//! stream: every video packet of the plan becomes one H.264 NAL unit whose
//! bytes are a probe (its first byte a slice header: IDR on keyframes), so
//! the server's packetizer sends it as one RTP packet equal to the probe
//! and the viewers measure loss and added latency as for WHIP; keyframes
//! get the SPS and PPS of the sequence header (a STAP-A the viewers skip).
//! Audio is real AAC (a 440 Hz tone, looped) that the server transcodes to
//! Opus: the viewers count those packets but cannot check them.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use corecast_media::MediaKind;
use corecast_rtmp::client::{tags, ClientEvent, PublishClient};

use super::schedule::{MediaPlan, OutPacket, Schedule};
use crate::payload::{self, Probe};

const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xbf, 0xe5];
const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
const AAC_ASC: &[u8] = include_bytes!("../../../transports/rtmp/tests/fixtures/sine440.asc");
const AAC: &[u8] = include_bytes!("../../../transports/rtmp/tests/fixtures/sine440.aac");
/// AAC access units are 1024 samples of 44.1 kHz.
const AAC_UNIT_US: u64 = 1024 * 1_000_000 / 44_100;

/// The running publishers.
pub struct RtmpPublishers {
    stop: Arc<AtomicBool>,
    /// Video packets (probes) written.
    pub sent: Arc<AtomicU64>,
    pub failures: Arc<AtomicU64>,
    handles: Vec<JoinHandle<()>>,
}

impl RtmpPublishers {
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            let _ = h.join();
        }
    }
}

/// `rtmp://host:port/app/{stream}` → (`host:port`, app, key).
pub fn parse_url(url: &str) -> Option<(String, String, String)> {
    let rest = url.strip_prefix("rtmp://")?;
    let (authority, path) = rest.split_once('/')?;
    let (app, key) = path.split_once('/')?;
    let authority = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:1935")
    };
    (!app.is_empty() && !key.is_empty()).then(|| (authority, app.to_string(), key.to_string()))
}

/// Starts one publisher per `(index, url)`.
pub fn start(urls: Vec<(u32, String)>, plan: MediaPlan, epoch: Instant) -> RtmpPublishers {
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let handles = urls
        .into_iter()
        .map(|(index, url)| {
            let (stop, sent, failures) = (stop.clone(), sent.clone(), failures.clone());
            std::thread::spawn(move || {
                if let Err(e) = publish(index, &url, plan, epoch, &stop, &sent) {
                    eprintln!("rtmp publisher {index} ({url}): {e}");
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    RtmpPublishers {
        stop,
        sent,
        failures,
        handles,
    }
}

fn publish(
    index: u32,
    url: &str,
    plan: MediaPlan,
    epoch: Instant,
    stop: &AtomicBool,
    sent: &AtomicU64,
) -> Result<(), String> {
    let (authority, app, key) = parse_url(url).ok_or("not rtmp://host:port/app/key")?;
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("host did not resolve")?;
    let mut sock =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    sock.set_nodelay(true).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let (mut client, hello) = PublishClient::new(&app, &key);
    sock.write_all(&hello).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = sock.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        let mut out = Vec::new();
        let event = client
            .push(&buf[..n], &mut out)
            .map_err(|e| e.to_string())?;
        sock.write_all(&out).map_err(|e| e.to_string())?;
        match event {
            Some(ClientEvent::Published) => break,
            Some(ClientEvent::Refused { code, description }) => {
                return Err(format!("{code}: {description}"))
            }
            None => {}
        }
    }
    // Acknowledgements and pings from here on are read and dropped.
    sock.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    client.video(&mut out, 0, &tags::avc_sequence(SPS, PPS));
    client.audio(&mut out, 0, &tags::aac_sequence(AAC_ASC));
    let units = tags::adts_units(AAC);
    let start = Instant::now();
    let mut schedule = Schedule::new(plan, start);
    let (mut packets, mut frame, mut probe) = (Vec::<OutPacket>::new(), Vec::new(), Vec::new());
    let mut aac_sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        schedule.due(now, &mut packets);
        let sent_ns = now.saturating_duration_since(epoch).as_nanos() as u64;
        for p in packets.drain(..).filter(|p| p.kind == MediaKind::Video) {
            let frame_no = u64::from(p.rtp_time) * u64::from(plan.fps) / 90_000;
            let key =
                plan.keyframe_every > 0 && frame_no.is_multiple_of(u64::from(plan.keyframe_every));
            let pr = Probe {
                publisher: index,
                kind: MediaKind::Video,
                seq: p.seq,
                sent_ns,
            };
            payload::encode(&pr, p.size, &mut probe);
            // A slice NAL header in place of the probe's first byte.
            probe[0] = if key { 0x65 } else { 0x41 };
            frame.push(probe.clone());
            if p.marker {
                let nals: Vec<&[u8]> = frame.iter().map(Vec::as_slice).collect();
                client.video(&mut out, p.rtp_time / 90, &tags::avc_frame(key, 0, &nals));
                sent.fetch_add(frame.len() as u64, Ordering::Relaxed);
                frame.clear();
            }
        }
        // AAC in real time from the start.
        let due = now.duration_since(start).as_micros() as u64 / AAC_UNIT_US + 1;
        while aac_sent < due {
            let unit = units[(aac_sent as usize) % units.len()];
            let ts = (aac_sent * AAC_UNIT_US / 1000) as u32;
            client.audio(&mut out, ts, &tags::aac_frame(unit));
            aac_sent += 1;
        }
        if !out.is_empty() {
            write_all_nonblocking(&mut sock, &out)?;
            out.clear();
        }
        loop {
            match sock.read(&mut buf) {
                Ok(0) => return Err("the server closed the connection".into()),
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.to_string()),
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut out = Vec::new();
    client.unpublish(&mut out);
    let _ = write_all_nonblocking(&mut sock, &out);
    Ok(())
}

fn write_all_nonblocking(sock: &mut TcpStream, mut data: &[u8]) -> Result<(), String> {
    while !data.is_empty() {
        match sock.write(data) {
            Ok(0) => return Err("the connection closed".into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_micros(200))
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

/// The value of a counter summed over its label sets, from Prometheus text.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = false;
    let mut sum = 0.0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        if let Some(v) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            sum += v;
            found = true;
        }
    }
    found.then_some(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtmp_urls_parse() {
        assert_eq!(
            parse_url("rtmp://127.0.0.1:1935/live/bench-0"),
            Some(("127.0.0.1:1935".into(), "live".into(), "bench-0".into()))
        );
        assert_eq!(
            parse_url("rtmp://h/live/k?token=t"),
            Some(("h:1935".into(), "live".into(), "k?token=t".into()))
        );
        assert_eq!(parse_url("http://h/live/k"), None);
        assert_eq!(parse_url("rtmp://h/live/"), None);
    }

    #[test]
    fn metrics_sum_over_labels() {
        let text = "# HELP x\nx_total{shard=\"0\"} 5\nx_total{shard=\"1\"} 7\nx_totally 9\n";
        assert_eq!(metric_sum(text, "x_total"), Some(12.0));
        assert_eq!(metric_sum(text, "y_total"), None);
    }
}
