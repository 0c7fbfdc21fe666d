//! What a node reports of its load to the cluster.

use std::sync::atomic::Ordering;
use std::time::Instant;

use corecast_cluster::NodeLoad;

use super::{Control, Directory};

/// Process CPU use from /proc/self/stat, as a percent of one core.
pub struct CpuMeter {
    last: Option<(Instant, u64)>,
    ticks_per_s: u64,
}

impl CpuMeter {
    pub fn new(now: Instant) -> CpuMeter {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        CpuMeter {
            last: cpu_ticks().map(|t| (now, t)),
            ticks_per_s: if hz > 0 { hz as u64 } else { 100 },
        }
    }

    /// CPU percent since the last sample (0 on the first or when /proc is missing).
    pub fn sample(&mut self, now: Instant) -> f32 {
        let Some(ticks) = cpu_ticks() else {
            return 0.0;
        };
        let percent = match self.last {
            Some((at, before)) => {
                let wall = now.saturating_duration_since(at).as_secs_f64();
                if wall > 0.0 {
                    let cpu = ticks.saturating_sub(before) as f64 / self.ticks_per_s as f64;
                    (100.0 * cpu / wall) as f32
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        self.last = Some((now, ticks));
        percent
    }
}

/// utime + stime of this process, in clock ticks.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces: fields start after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); 12 and 13 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

pub fn node_load(control: &Control, directory: &Directory, cpu_percent: f32) -> NodeLoad {
    let endpoints: u64 = control
        .metrics
        .iter()
        .map(|m| m.endpoints.load(Ordering::Relaxed))
        .sum::<u64>()
        + directory.pending() as u64;
    NodeLoad {
        shards: control.metrics.len() as u32,
        endpoints: endpoints as u32,
        cpu_percent,
        max_endpoints_per_shard: control.max_endpoints_per_shard as u32,
        streams: directory.local_streams(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_ticks_and_a_sane_percent() {
        let t0 = Instant::now();
        let mut m = CpuMeter::new(t0);
        assert!(cpu_ticks().is_some());
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let p = m.sample(Instant::now());
        assert!((0.0..=100.0 * 64.0).contains(&p), "{p}");
    }
}
