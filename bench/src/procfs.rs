//! What the benchmark reads about the server process from /proc.

use std::path::Path;

/// CPU time of a process, in seconds: the sum of its threads' time on CPU
/// from `/proc/PID/task/*/schedstat` (nanoseconds), or utime + stime from
/// `/proc/PID/stat` (clock ticks, usually 10 ms) where schedstat is missing.
/// Threads that already exited are not in the sum; the server's threads
/// live as long as it does.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    schedstat_seconds(pid).or_else(|| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        parse_stat_cpu(&stat, clock_ticks())
    })
}

fn schedstat_seconds(pid: u32) -> Option<f64> {
    let mut ns = 0u64;
    let mut any = false;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(task) = task else { continue };
        // A thread may exit between the listing and the read.
        let Ok(line) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        ns += parse_schedstat_ns(&line)?;
        any = true;
    }
    any.then(|| ns as f64 / 1e9)
}

/// The first field of a schedstat line: nanoseconds on CPU.
fn parse_schedstat_ns(line: &str) -> Option<u64> {
    line.split_whitespace().next()?.parse().ok()
}

/// Resident set size of a process now (VmRSS), in MiB.
pub fn rss_mb(pid: u32) -> Option<f64> {
    let status =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    parse_status_kb(&status, "VmRSS:").map(|kb| kb as f64 / 1024.0)
}

/// Peak resident set size of a process (VmHWM), in MiB.
pub fn peak_rss_mb(pid: u32) -> Option<f64> {
    let status =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    parse_status_kb(&status, "VmHWM:").map(|kb| kb as f64 / 1024.0)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime from a `/proc/PID/stat` line (fields 14 and 15, after the
/// parenthesized command name, which may contain spaces).
fn parse_stat_cpu(stat: &str, ticks: f64) -> Option<f64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state); utime is field 14, stime field 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks)
}

fn parse_status_kb(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_and_status() {
        let stat = "1234 (corecast serve) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 5 0 100 0 0";
        assert_eq!(parse_stat_cpu(stat, 100.0), Some(3.0));
        let status = "Name:\tcorecast\nVmHWM:\t  20480 kB\nVmRSS:\t 1024 kB\n";
        assert_eq!(parse_status_kb(status, "VmHWM:"), Some(20480));
        assert_eq!(
            parse_schedstat_ns("157352729 13159772 676\n"),
            Some(157352729)
        );
        assert_eq!(parse_schedstat_ns(""), None);
        assert!(cpu_seconds(std::process::id()).is_some());
        assert!(peak_rss_mb(std::process::id()).unwrap() > 0.0);
    }

    #[test]
    fn cpu_time_grows_with_work_at_fine_grain() {
        let pid = std::process::id();
        let before = cpu_seconds(pid).expect("own CPU time");
        // 20 ms of work: less than two clock ticks, visible in schedstat.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(20) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let after = cpu_seconds(pid).expect("own CPU time");
        assert!(after > before, "{before} -> {after}");
    }
}
