//! What the benchmark reads about the server process from /proc.

use std::path::Path;

/// CPU time (user + system) of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu(&stat, clock_ticks())
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
        assert!(cpu_seconds(std::process::id()).is_some());
        assert!(peak_rss_mb(std::process::id()).unwrap() > 0.0);
    }
}
