//! `corecast doctor`: is this host fit to run pinned corecast shards?
//!
//! Reading the host ([`read_host`]) is kept apart from judging it ([`run_checks`]):
//! every check is a pure function of [`HostReadings`] and [`DoctorConfig`], so the
//! tests below feed it made-up hosts. [`render`] gives one `OK`/`WARN`/`FAIL` line
//! per check with its fix, and [`exit_code`] is 1 when any check failed.
//!
//! Nothing here changes the host; `tuning/tune apply` does that.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// Locked memory one shard needs: glommio (0.9) gives every executor 10 MiB of
/// `io_memory`, which it registers with io_uring. Registered buffers are locked
/// memory and count against RLIMIT_MEMLOCK; with a lower limit the registration
/// fails and I/O takes slower paths, and below 512 KiB an executor does not start
/// at all. glommio registers the buffer with each of its three rings and some
/// kernels charge every registration, so the fix is always an unlimited limit.
pub const MEMLOCK_PER_SHARD: u64 = 10 * MIB;

/// Highest core number accepted from a cpu list; guards against absurd ranges.
const MAX_CPUS: usize = 1 << 16;

/// What the checks need to know about the host. `read_host` fills it in; tests
/// build it by hand.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostReadings {
    /// Soft RLIMIT_MEMLOCK of this process in bytes; `None` means unlimited.
    pub memlock_limit_bytes: Option<u64>,
    /// Whether this process holds CAP_IPC_LOCK (root does), which exempts it
    /// from RLIMIT_MEMLOCK.
    pub ipc_lock_capable: bool,
    /// Whether this process may create io_uring instances.
    pub io_uring_available: bool,
    /// `net.core.rmem_max` in bytes; `None` when it could not be read.
    pub rmem_max: Option<u64>,
    /// `net.core.wmem_max` in bytes; `None` when it could not be read.
    pub wmem_max: Option<u64>,
    /// Number of online cores.
    pub online_cores: usize,
    /// Cores isolated from the scheduler (`isolcpus=`), sorted.
    pub isolated_cores: Vec<usize>,
    /// Cores without the periodic tick (`nohz_full=`), sorted.
    pub nohz_full_cores: Vec<usize>,
    /// cpufreq governor of each core that has one, in core order.
    pub governors: Vec<String>,
    /// Whether the kernel clock is synchronized (NTP/PTP); `None` when unknown.
    pub clock_synced: Option<bool>,
}

/// The parts of corecast's configuration the checks compare the host with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DoctorConfig {
    /// Number of shards that will run (already resolved, not "auto").
    pub shards: usize,
    /// SO_RCVBUF/SO_SNDBUF each shard socket asks for, in bytes.
    pub socket_buffer: u64,
    /// Core of shard 0 when pinning; shard i runs on `first_core + i`.
    pub first_core: usize,
    /// Whether shards are pinned to cores (`no_pin = false`).
    pub pin: bool,
}

/// How bad a finding is. Only `Fail` makes the exit code non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

impl Level {
    fn label(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        }
    }
}

/// One finding: what was checked, how it went, and how to fix it when it is not OK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub level: Level,
    pub detail: String,
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Check {
            name,
            level: Level::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Check {
            name,
            level: Level::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Check {
            name,
            level: Level::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

// ------------------------------------------------------------------ the checks

/// Judge the host against the configuration: one `Check` per topic, always in
/// the same order.
pub fn run_checks(r: &HostReadings, c: &DoctorConfig) -> Vec<Check> {
    vec![
        check_memlock(r.memlock_limit_bytes, r.ipc_lock_capable, c.shards),
        check_io_uring(r.io_uring_available),
        check_socket_buffer("rmem_max", "SO_RCVBUF", r.rmem_max, c.socket_buffer),
        check_socket_buffer("wmem_max", "SO_SNDBUF", r.wmem_max, c.socket_buffer),
        check_cores(r.online_cores, c),
        check_isolation(&r.isolated_cores, &r.nohz_full_cores, c),
        check_governor(&r.governors),
        check_clock(r.clock_synced),
    ]
}

fn memlock_needed(shards: usize) -> u64 {
    MEMLOCK_PER_SHARD.saturating_mul(u64::try_from(shards).unwrap_or(u64::MAX))
}

fn check_memlock(limit: Option<u64>, ipc_lock: bool, shards: usize) -> Check {
    const NAME: &str = "memlock";
    let need = memlock_needed(shards);
    match limit {
        None => Check::ok(NAME, "unlimited"),
        Some(have) if ipc_lock && have < need => Check::ok(
            NAME,
            format!(
                "{} allowed, but CAP_IPC_LOCK (root) exempts this process; a service \
                 without it needs {} for {shards} shard(s)",
                bytes(have),
                bytes(need)
            ),
        ),
        Some(have) if have >= need => Check::ok(
            NAME,
            format!("{} allowed, {} needed for {shards} shard(s)", bytes(have), bytes(need)),
        ),
        Some(have) => Check::fail(
            NAME,
            format!(
                "{} of locked memory allowed, but {shards} shard(s) need {} for glommio's io_uring buffers",
                bytes(have),
                bytes(need)
            ),
            "set LimitMEMLOCK=infinity in corecast.service (tuning/corecast.service, \
             or tuning/tune apply), or run `ulimit -l unlimited` before starting corecast",
        ),
    }
}

fn check_io_uring(available: bool) -> Check {
    const NAME: &str = "io_uring";
    if available {
        return Check::ok(NAME, "available");
    }
    Check::fail(
        NAME,
        "io_uring cannot be used: kernel.io_uring_disabled forbids it, a seccomp filter \
         (container runtime) blocks it, or the kernel lacks it",
        "sysctl -w kernel.io_uring_disabled=0; run a kernel of 5.8 or later built with \
         CONFIG_IO_URING; in a container allow io_uring_setup/enter/register",
    )
}

fn check_socket_buffer(name: &'static str, option: &str, max: Option<u64>, wanted: u64) -> Check {
    match max {
        None => Check::warn(
            name,
            format!("could not read net.core.{name}"),
            format!("check that /proc/sys/net/core/{name} is readable"),
        ),
        Some(have) if have >= wanted => Check::ok(
            name,
            format!("{} covers socket_buffer {}", bytes(have), bytes(wanted)),
        ),
        Some(have) => Check::warn(
            name,
            format!(
                "{} is below socket_buffer {}: the kernel silently caps each shard's {option} at {}",
                bytes(have),
                bytes(wanted),
                bytes(have)
            ),
            format!("tuning/tune apply, or sysctl -w net.core.{name}={wanted}"),
        ),
    }
}

fn check_cores(online: usize, c: &DoctorConfig) -> Check {
    const NAME: &str = "cores";
    let shards = c.shards;
    if shards == 0 {
        return Check::fail(NAME, "no shards configured", "set shards to at least 1");
    }
    if shards > online {
        return Check::fail(
            NAME,
            format!("{shards} shards but only {online} online core(s)"),
            format!("set shards to at most {online}, one per core"),
        );
    }
    if !c.pin {
        return Check::ok(
            NAME,
            format!("{shards} unpinned shard(s) on {online} online cores"),
        );
    }
    let end = c.first_core.saturating_add(shards);
    let wanted = format_cpu_list(&shard_cores(c));
    if end > online {
        let room = online.saturating_sub(c.first_core);
        return Check::fail(
            NAME,
            format!(
                "{shards} shards pinned from first_core {} need cores {wanted}, but the host has cores 0-{}",
                c.first_core,
                online - 1
            ),
            format!(
                "lower shards to {room} or first_core to {}",
                online - shards
            ),
        );
    }
    if shards == online {
        return Check::warn(
            NAME,
            format!("shards take every core ({wanted}): the kernel, interrupts and the control thread share them"),
            "leave at least one housekeeping core: raise first_core to 1 and lower shards by one",
        );
    }
    Check::ok(
        NAME,
        format!("{shards} shard(s) pinned to cores {wanted} of {online}"),
    )
}

/// The cores the shards are pinned to.
fn shard_cores(c: &DoctorConfig) -> Vec<usize> {
    (0..c.shards)
        .filter_map(|i| c.first_core.checked_add(i))
        .collect()
}

fn check_isolation(isolated: &[usize], nohz_full: &[usize], c: &DoctorConfig) -> Check {
    const NAME: &str = "isolation";
    if !c.pin {
        return Check::ok(NAME, "shards are not pinned (no_pin); isolation not needed");
    }
    let cores = shard_cores(c);
    let wanted = format_cpu_list(&cores);
    let fix = format!(
        "boot with isolcpus={wanted} nohz_full={wanted} rcu_nocbs={wanted} \
         (see docs/operations.md)"
    );
    if isolated.is_empty() {
        return Check::warn(
            NAME,
            format!("no isolated cores: the scheduler also runs other tasks on the shard cores {wanted}"),
            fix,
        );
    }
    let missing: Vec<usize> = cores
        .iter()
        .copied()
        .filter(|core| !isolated.contains(core))
        .collect();
    if !missing.is_empty() {
        return Check::warn(
            NAME,
            format!(
                "shard cores {} are not isolated (isolated: {})",
                format_cpu_list(&missing),
                format_cpu_list(isolated)
            ),
            fix,
        );
    }
    let ticking: Vec<usize> = cores
        .iter()
        .copied()
        .filter(|core| !nohz_full.contains(core))
        .collect();
    let tick = if ticking.is_empty() {
        "all tickless (nohz_full)".to_string()
    } else {
        format!("still ticking on {}", format_cpu_list(&ticking))
    };
    Check::ok(NAME, format!("shard cores {wanted} are isolated, {tick}"))
}

fn check_governor(governors: &[String]) -> Check {
    const NAME: &str = "governor";
    if governors.is_empty() {
        return Check::ok(NAME, "no cpufreq governor (fixed frequency, or a VM)");
    }
    let slow: Vec<&str> = governors
        .iter()
        .map(String::as_str)
        .filter(|g| *g != "performance")
        .collect();
    if slow.is_empty() {
        return Check::ok(
            NAME,
            format!("performance on all {} cores", governors.len()),
        );
    }
    let mut kinds = slow.clone();
    kinds.sort_unstable();
    kinds.dedup();
    Check::warn(
        NAME,
        format!(
            "{} of {} cores use {}: clocks ramp up only after packets queue",
            slow.len(),
            governors.len(),
            kinds.join(", ")
        ),
        "tuning/tune apply, or cpupower frequency-set -g performance",
    )
}

fn check_clock(synced: Option<bool>) -> Check {
    const NAME: &str = "clock";
    let fix = "run chronyd or systemd-timesyncd (timedatectl set-ntp true)";
    match synced {
        Some(true) => Check::ok(NAME, "synchronized"),
        Some(false) => Check::warn(
            NAME,
            "not synchronized: RTCP sender reports and latency figures drift from other nodes",
            fix,
        ),
        None => Check::warn(NAME, "sync state unknown (adjtimex failed)", fix),
    }
}

// ------------------------------------------------------------------ output

/// One line per check: `OK   name: detail`, `WARN name: detail — fix: …`, `FAIL …`.
pub fn render(checks: &[Check]) -> String {
    let mut out = String::new();
    for check in checks {
        let _ = write!(
            out,
            "{:<4} {}: {}",
            check.level.label(),
            check.name,
            check.detail
        );
        if let Some(fix) = &check.fix {
            let _ = write!(out, " — fix: {fix}");
        }
        out.push('\n');
    }
    out
}

/// 1 when any check failed, else 0. Warnings do not fail the run.
pub fn exit_code(checks: &[Check]) -> i32 {
    if checks.iter().any(|c| c.level == Level::Fail) {
        1
    } else {
        0
    }
}

/// Read the real host, print the report, and return the process exit code.
pub fn doctor(config: &DoctorConfig) -> i32 {
    let readings = read_host(Path::new("/proc"), Path::new("/sys"));
    let checks = run_checks(&readings, config);
    print!("{}", render(&checks));
    exit_code(&checks)
}

fn bytes(n: u64) -> String {
    if n >= GIB && n.is_multiple_of(GIB) {
        format!("{} GiB", n / GIB)
    } else if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= KIB && n.is_multiple_of(KIB) {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} bytes")
    }
}

// ------------------------------------------------------------------ cpu lists

/// Parse the kernel's cpu-list format ("2-5,8"); an empty list and the "(null)"
/// that `nohz_full` shows when unset are empty. `None` on anything malformed.
pub fn parse_cpu_list(text: &str) -> Option<Vec<usize>> {
    let text = text.trim();
    let mut cores = Vec::new();
    if text.is_empty() || text == "(null)" {
        return Some(cores);
    }
    for part in text.split(',') {
        let (lo, hi) = parse_cpu_range(part.trim())?;
        cores.extend(lo..=hi);
    }
    cores.sort_unstable();
    cores.dedup();
    Some(cores)
}

fn parse_cpu_range(part: &str) -> Option<(usize, usize)> {
    let (lo, hi) = match part.split_once('-') {
        Some((lo, hi)) => (lo.parse().ok()?, hi.parse().ok()?),
        None => {
            let core = part.parse().ok()?;
            (core, core)
        }
    };
    (lo <= hi && hi < MAX_CPUS).then_some((lo, hi))
}

/// Format cores as a cpu list ("2-5,8"); "none" when empty.
pub fn format_cpu_list(cores: &[usize]) -> String {
    let mut sorted = cores.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for core in sorted {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == core => *end = core,
            _ => ranges.push((core, core)),
        }
    }
    if ranges.is_empty() {
        return "none".to_string();
    }
    ranges
        .iter()
        .map(|&(start, end)| {
            if start == end {
                start.to_string()
            } else {
                format!("{start}-{end}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

// ------------------------------------------------------------------ reading the host

/// Read everything the checks need. `proc_root` and `sys_root` stand for `/proc`
/// and `/sys` so tests can point them at a fake tree; the memlock limit, the
/// io_uring probe and the clock come from system calls of this process.
pub fn read_host(proc_root: &Path, sys_root: &Path) -> HostReadings {
    let cpu = sys_root.join("devices/system/cpu");
    let net_core = proc_root.join("sys/net/core");
    let io_uring_disabled = read_u64(&proc_root.join("sys/kernel/io_uring_disabled"));
    HostReadings {
        memlock_limit_bytes: memlock_limit(),
        ipc_lock_capable: has_ipc_lock(&proc_root.join("self/status")),
        io_uring_available: io_uring_allowed(io_uring_disabled, probe_io_uring()),
        rmem_max: read_u64(&net_core.join("rmem_max")),
        wmem_max: read_u64(&net_core.join("wmem_max")),
        online_cores: read_online_cores(&cpu.join("online")),
        isolated_cores: read_cpu_list(&cpu.join("isolated")),
        nohz_full_cores: read_cpu_list(&cpu.join("nohz_full")),
        governors: read_governors(&cpu),
        clock_synced: clock_synced(),
    }
}

fn read_text(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok()
}

fn read_u64(path: &Path) -> Option<u64> {
    read_text(path)?.trim().parse().ok()
}

/// A missing or unreadable list counts as empty.
fn read_cpu_list(path: &Path) -> Vec<usize> {
    read_text(path)
        .and_then(|t| parse_cpu_list(&t))
        .unwrap_or_default()
}

fn read_online_cores(path: &Path) -> usize {
    match read_cpu_list(path).len() {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

fn read_governors(cpu_dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(cpu_dir) else {
        return Vec::new();
    };
    let mut found: Vec<(usize, String)> = entries
        .flatten()
        .filter_map(|entry| {
            let index = cpu_index(&entry.file_name().to_string_lossy())?;
            let governor = read_text(&entry.path().join("cpufreq/scaling_governor"))?;
            let governor = governor.trim();
            (!governor.is_empty()).then(|| (index, governor.to_string()))
        })
        .collect();
    found.sort_by_key(|(index, _)| *index);
    found.into_iter().map(|(_, governor)| governor).collect()
}

/// "cpu12" -> 12; "cpufreq", "cpuidle" and the rest -> None.
fn cpu_index(name: &str) -> Option<usize> {
    name.strip_prefix("cpu")?.parse().ok()
}

/// Combine `kernel.io_uring_disabled` (absent or 0: allowed, 1: only for a group,
/// 2: disabled) with a probe of this process. The probe is the better witness (it
/// also sees seccomp filters and kernels without io_uring); the sysctl decides when
/// the probe could not tell.
fn io_uring_allowed(disabled: Option<u64>, probe: Option<bool>) -> bool {
    if disabled.is_some_and(|d| d >= 2) {
        return false;
    }
    probe.unwrap_or(disabled.unwrap_or(0) == 0)
}

/// Ask the kernel whether this process may use io_uring, without creating a ring:
/// `io_uring_setup(0, NULL)` fails with EFAULT or EINVAL when io_uring is usable,
/// ENOSYS when the kernel lacks it or a filter hides it, EPERM when it is forbidden.
#[cfg(target_os = "linux")]
fn probe_io_uring() -> Option<bool> {
    let entries: libc::c_uint = 0;
    let params: *mut libc::c_void = std::ptr::null_mut();
    // SAFETY: with a null params pointer the kernel rejects the call before it
    // reads or writes any memory of ours or creates anything.
    let rc = unsafe { libc::syscall(libc::SYS_io_uring_setup, entries, params) };
    if rc >= 0 {
        // Unexpected, but a ring was made: close it and report io_uring as usable.
        if let Ok(fd) = libc::c_int::try_from(rc) {
            // SAFETY: fd is a descriptor the kernel just returned to us.
            unsafe { libc::close(fd) };
        }
        return Some(true);
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::ENOSYS) | Some(libc::EPERM) => Some(false),
        Some(_) => Some(true),
        None => None,
    }
}

#[cfg(not(target_os = "linux"))]
fn probe_io_uring() -> Option<bool> {
    Some(false)
}

/// Whether `CapEff` in a `/proc/<pid>/status` file has CAP_IPC_LOCK (bit 14).
fn has_ipc_lock(status: &Path) -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    let Ok(text) = std::fs::read_to_string(status) else {
        return false;
    };
    text.lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

#[allow(clippy::unnecessary_cast)] // rlim_t is u64 on 64-bit Linux, not on every target
fn memlock_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct we pass, which outlives the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    if rc != 0 {
        // Cannot happen for RLIMIT_MEMLOCK; report no locked memory so the check
        // errs towards FAIL rather than claiming "unlimited".
        return Some(0);
    }
    if limit.rlim_cur == libc::RLIM_INFINITY {
        None
    } else {
        Some(limit.rlim_cur as u64)
    }
}

/// The kernel marks its clock unsynchronized (STA_UNSYNC) until NTP or PTP
/// disciplines it.
#[cfg(target_os = "linux")]
fn clock_synced() -> Option<bool> {
    // SAFETY: timex is plain data for which all zeroes is a valid value.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: modes = 0 makes adjtimex a read-only query that fills in tx.
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state < 0 {
        return None;
    }
    Some(status_synced(tx.status))
}

#[cfg(not(target_os = "linux"))]
fn clock_synced() -> Option<bool> {
    None
}

#[cfg(target_os = "linux")]
fn status_synced(status: libc::c_int) -> bool {
    (status & libc::STA_UNSYNC) == 0
}

// ------------------------------------------------------------------ tests

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn healthy() -> HostReadings {
        HostReadings {
            memlock_limit_bytes: None,
            ipc_lock_capable: false,
            io_uring_available: true,
            rmem_max: Some(32 * MIB),
            wmem_max: Some(32 * MIB),
            online_cores: 16,
            isolated_cores: (2..16).collect(),
            nohz_full_cores: (2..16).collect(),
            governors: vec!["performance".to_string(); 16],
            clock_synced: Some(true),
        }
    }

    fn config() -> DoctorConfig {
        DoctorConfig {
            shards: 14,
            socket_buffer: 8 * MIB,
            first_core: 2,
            pin: true,
        }
    }

    fn find<'a>(checks: &'a [Check], name: &str) -> &'a Check {
        checks
            .iter()
            .find(|c| c.name == name)
            .expect("check present")
    }

    fn level_of(r: &HostReadings, c: &DoctorConfig, name: &str) -> Level {
        find(&run_checks(r, c), name).level
    }

    #[test]
    fn healthy_host_passes_every_check() {
        let checks = run_checks(&healthy(), &config());
        let names: Vec<&str> = checks.iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "memlock",
                "io_uring",
                "rmem_max",
                "wmem_max",
                "cores",
                "isolation",
                "governor",
                "clock"
            ]
        );
        for check in &checks {
            assert_eq!(check.level, Level::Ok, "{check:?}");
            assert_eq!(check.fix, None);
        }
        assert_eq!(exit_code(&checks), 0);
    }

    #[test]
    fn cap_ipc_lock_exempts_from_the_memlock_limit() {
        let r = HostReadings {
            memlock_limit_bytes: Some(8 * MIB),
            ipc_lock_capable: true,
            ..healthy()
        };
        assert_eq!(level_of(&r, &config(), "memlock"), Level::Ok);
    }

    #[test]
    fn ipc_lock_is_read_from_capeff() {
        let dir = std::env::temp_dir().join(format!("corecast-doctor-caps-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let status = dir.join("status");
        std::fs::write(&status, "Name:\tx\nCapEff:\t000001ffffffffff\n").unwrap();
        assert!(has_ipc_lock(&status));
        std::fs::write(&status, "Name:\tx\nCapEff:\t0000000000000000\n").unwrap();
        assert!(!has_ipc_lock(&status));
        assert!(!has_ipc_lock(&dir.join("missing")));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn memlock_unlimited_is_ok() {
        assert_eq!(level_of(&healthy(), &config(), "memlock"), Level::Ok);
    }

    #[test]
    fn memlock_covering_all_shards_is_ok() {
        let r = HostReadings {
            memlock_limit_bytes: Some(14 * MEMLOCK_PER_SHARD),
            ..healthy()
        };
        assert_eq!(level_of(&r, &config(), "memlock"), Level::Ok);
    }

    #[test]
    fn memlock_below_shards_need_fails() {
        // The common distribution default of 8 MiB.
        let r = HostReadings {
            memlock_limit_bytes: Some(8 * MIB),
            ..healthy()
        };
        let checks = run_checks(&r, &config());
        let check = find(&checks, "memlock");
        assert_eq!(check.level, Level::Fail);
        assert!(check.detail.contains("8 MiB"), "{}", check.detail);
        assert!(check.detail.contains("140 MiB"), "{}", check.detail);
        assert!(check
            .fix
            .as_deref()
            .unwrap_or("")
            .contains("LimitMEMLOCK=infinity"));
        assert_eq!(exit_code(&checks), 1);
    }

    #[test]
    fn memlock_one_byte_short_fails() {
        let r = HostReadings {
            memlock_limit_bytes: Some(14 * MEMLOCK_PER_SHARD - 1),
            ..healthy()
        };
        assert_eq!(level_of(&r, &config(), "memlock"), Level::Fail);
    }

    #[test]
    fn io_uring_unavailable_fails() {
        let r = HostReadings {
            io_uring_available: false,
            ..healthy()
        };
        let checks = run_checks(&r, &config());
        assert_eq!(find(&checks, "io_uring").level, Level::Fail);
        assert_eq!(exit_code(&checks), 1);
    }

    #[test]
    fn io_uring_sysctl_and_probe_combine() {
        assert!(io_uring_allowed(None, None));
        assert!(io_uring_allowed(Some(0), None));
        assert!(!io_uring_allowed(Some(1), None));
        assert!(!io_uring_allowed(Some(2), None));
        assert!(!io_uring_allowed(Some(2), Some(true)));
        assert!(io_uring_allowed(Some(1), Some(true)));
        assert!(!io_uring_allowed(None, Some(false)));
        assert!(!io_uring_allowed(Some(0), Some(false)));
    }

    #[test]
    fn rmem_below_socket_buffer_warns() {
        let r = HostReadings {
            rmem_max: Some(212_992),
            ..healthy()
        };
        let checks = run_checks(&r, &config());
        let check = find(&checks, "rmem_max");
        assert_eq!(check.level, Level::Warn);
        assert!(check.detail.contains("SO_RCVBUF"), "{}", check.detail);
        assert!(check
            .fix
            .as_deref()
            .unwrap_or("")
            .contains("net.core.rmem_max=8388608"));
        assert_eq!(exit_code(&checks), 0, "a warning alone does not fail");
    }

    #[test]
    fn wmem_below_socket_buffer_warns() {
        let r = HostReadings {
            wmem_max: Some(4 * MIB),
            ..healthy()
        };
        let check = find(&run_checks(&r, &config()), "wmem_max").clone();
        assert_eq!(check.level, Level::Warn);
        assert!(check.detail.contains("SO_SNDBUF"), "{}", check.detail);
    }

    #[test]
    fn socket_buffer_max_equal_to_request_is_ok() {
        let r = HostReadings {
            rmem_max: Some(8 * MIB),
            wmem_max: Some(8 * MIB),
            ..healthy()
        };
        assert_eq!(level_of(&r, &config(), "rmem_max"), Level::Ok);
        assert_eq!(level_of(&r, &config(), "wmem_max"), Level::Ok);
    }

    #[test]
    fn unreadable_socket_buffer_max_warns() {
        let r = HostReadings {
            rmem_max: None,
            ..healthy()
        };
        assert_eq!(level_of(&r, &config(), "rmem_max"), Level::Warn);
    }

    #[test]
    fn more_shards_than_cores_fails() {
        let r = HostReadings {
            online_cores: 8,
            ..healthy()
        };
        let c = DoctorConfig {
            pin: false,
            ..config()
        };
        let checks = run_checks(&r, &c);
        assert_eq!(find(&checks, "cores").level, Level::Fail);
        assert_eq!(exit_code(&checks), 1);
    }

    #[test]
    fn pinned_shards_past_the_last_core_fail() {
        // 14 shards from core 4 need cores 4-17 on a 16-core host.
        let c = DoctorConfig {
            first_core: 4,
            ..config()
        };
        let check = find(&run_checks(&healthy(), &c), "cores").clone();
        assert_eq!(check.level, Level::Fail);
        assert!(check.detail.contains("4-17"), "{}", check.detail);
        assert!(check.fix.as_deref().unwrap_or("").contains("shards to 12"));
    }

    #[test]
    fn first_core_is_ignored_without_pinning() {
        let c = DoctorConfig {
            first_core: 4,
            pin: false,
            ..config()
        };
        assert_eq!(level_of(&healthy(), &c, "cores"), Level::Ok);
    }

    #[test]
    fn zero_shards_fail() {
        let c = DoctorConfig {
            shards: 0,
            ..config()
        };
        assert_eq!(level_of(&healthy(), &c, "cores"), Level::Fail);
    }

    #[test]
    fn shards_on_every_core_warn() {
        let c = DoctorConfig {
            shards: 16,
            first_core: 0,
            ..config()
        };
        assert_eq!(level_of(&healthy(), &c, "cores"), Level::Warn);
    }

    #[test]
    fn huge_first_core_does_not_overflow() {
        let c = DoctorConfig {
            first_core: usize::MAX,
            shards: 2,
            ..config()
        };
        assert_eq!(level_of(&healthy(), &c, "cores"), Level::Fail);
    }

    #[test]
    fn no_isolated_cores_when_pinning_warns() {
        let r = HostReadings {
            isolated_cores: vec![],
            nohz_full_cores: vec![],
            ..healthy()
        };
        let check = find(&run_checks(&r, &config()), "isolation").clone();
        assert_eq!(check.level, Level::Warn);
        assert!(check.fix.as_deref().unwrap_or("").contains("isolcpus=2-15"));
    }

    #[test]
    fn partly_isolated_shard_cores_warn() {
        let r = HostReadings {
            isolated_cores: (2..10).collect(),
            ..healthy()
        };
        let check = find(&run_checks(&r, &config()), "isolation").clone();
        assert_eq!(check.level, Level::Warn);
        assert!(check.detail.contains("10-15"), "{}", check.detail);
    }

    #[test]
    fn isolated_but_ticking_cores_are_ok_and_reported() {
        let r = HostReadings {
            nohz_full_cores: vec![],
            ..healthy()
        };
        let check = find(&run_checks(&r, &config()), "isolation").clone();
        assert_eq!(check.level, Level::Ok);
        assert!(
            check.detail.contains("still ticking on 2-15"),
            "{}",
            check.detail
        );
    }

    #[test]
    fn isolation_is_not_needed_without_pinning() {
        let r = HostReadings {
            isolated_cores: vec![],
            ..healthy()
        };
        let c = DoctorConfig {
            pin: false,
            ..config()
        };
        assert_eq!(level_of(&r, &c, "isolation"), Level::Ok);
    }

    #[test]
    fn powersave_governor_warns() {
        let mut governors = vec!["performance".to_string(); 14];
        governors.extend(["powersave".to_string(), "schedutil".to_string()]);
        let r = HostReadings {
            governors,
            ..healthy()
        };
        let check = find(&run_checks(&r, &config()), "governor").clone();
        assert_eq!(check.level, Level::Warn);
        assert!(
            check
                .detail
                .starts_with("2 of 16 cores use powersave, schedutil"),
            "{}",
            check.detail
        );
    }

    #[test]
    fn no_cpufreq_is_ok() {
        let r = HostReadings {
            governors: vec![],
            ..healthy()
        };
        assert_eq!(level_of(&r, &config(), "governor"), Level::Ok);
    }

    #[test]
    fn unsynced_clock_warns() {
        let r = HostReadings {
            clock_synced: Some(false),
            ..healthy()
        };
        let checks = run_checks(&r, &config());
        assert_eq!(find(&checks, "clock").level, Level::Warn);
        assert_eq!(exit_code(&checks), 0);
    }

    #[test]
    fn unknown_clock_warns() {
        let r = HostReadings {
            clock_synced: None,
            ..healthy()
        };
        assert_eq!(level_of(&r, &config(), "clock"), Level::Warn);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn clock_status_bit() {
        assert!(status_synced(0));
        assert!(!status_synced(libc::STA_UNSYNC));
        assert!(!status_synced(libc::STA_UNSYNC | 0x1));
    }

    #[test]
    fn render_one_line_per_check() {
        let checks = vec![
            Check::ok("memlock", "unlimited"),
            Check::warn("clock", "not synchronized", "run chronyd"),
            Check::fail(
                "io_uring",
                "disabled",
                "sysctl -w kernel.io_uring_disabled=0",
            ),
        ];
        assert_eq!(
            render(&checks),
            "OK   memlock: unlimited\n\
             WARN clock: not synchronized — fix: run chronyd\n\
             FAIL io_uring: disabled — fix: sysctl -w kernel.io_uring_disabled=0\n"
        );
        assert_eq!(exit_code(&checks), 1);
        assert_eq!(exit_code(&checks[..2]), 0);
        assert_eq!(exit_code(&[]), 0);
    }

    #[test]
    fn bytes_are_readable() {
        assert_eq!(bytes(8 * MIB), "8 MiB");
        assert_eq!(bytes(2 * GIB), "2 GiB");
        assert_eq!(bytes(64 * KIB), "64 KiB");
        assert_eq!(bytes(212_992), "208 KiB");
        assert_eq!(bytes(1000), "1000 bytes");
        assert_eq!(bytes(0), "0 bytes");
    }

    #[test]
    fn cpu_list_parses_kernel_formats() {
        assert_eq!(parse_cpu_list("2-5,8\n"), Some(vec![2, 3, 4, 5, 8]));
        assert_eq!(parse_cpu_list("0"), Some(vec![0]));
        assert_eq!(parse_cpu_list("8,2-3,3"), Some(vec![2, 3, 8]));
        assert_eq!(parse_cpu_list(""), Some(vec![]));
        assert_eq!(parse_cpu_list("\n"), Some(vec![]));
        assert_eq!(parse_cpu_list("(null)\n"), Some(vec![]));
    }

    #[test]
    fn cpu_list_rejects_malformed_input() {
        assert_eq!(parse_cpu_list("5-2"), None);
        assert_eq!(parse_cpu_list("a"), None);
        assert_eq!(parse_cpu_list("1,,2"), None);
        assert_eq!(parse_cpu_list("-3"), None);
        assert_eq!(parse_cpu_list("0-99999999"), None);
    }

    #[test]
    fn cpu_list_formats_ranges() {
        assert_eq!(format_cpu_list(&[2, 3, 4, 5, 8]), "2-5,8");
        assert_eq!(format_cpu_list(&[8, 3, 2, 3]), "2-3,8");
        assert_eq!(format_cpu_list(&[7]), "7");
        assert_eq!(format_cpu_list(&[]), "none");
    }

    #[test]
    fn cpu_index_accepts_only_cpu_dirs() {
        assert_eq!(cpu_index("cpu12"), Some(12));
        assert_eq!(cpu_index("cpufreq"), None);
        assert_eq!(cpu_index("cpuidle"), None);
        assert_eq!(cpu_index("online"), None);
    }

    /// A fake /proc and /sys under the temp dir, removed on drop.
    struct FakeHost(PathBuf);

    impl FakeHost {
        fn new(tag: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("corecast-doctor-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("create temp dir");
            FakeHost(dir)
        }

        fn put(&self, rel: &str, text: &str) {
            let path = self.0.join(rel);
            fs::create_dir_all(path.parent().expect("parent")).expect("create dirs");
            fs::write(path, text).expect("write fake file");
        }

        fn proc(&self) -> PathBuf {
            self.0.join("proc")
        }

        fn sys(&self) -> PathBuf {
            self.0.join("sys")
        }
    }

    impl Drop for FakeHost {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn read_host_reads_a_fake_tree() {
        let host = FakeHost::new("tree");
        host.put("proc/sys/net/core/rmem_max", "33554432\n");
        host.put("proc/sys/net/core/wmem_max", "212992\n");
        host.put("proc/sys/kernel/io_uring_disabled", "2\n");
        host.put("sys/devices/system/cpu/online", "0-7\n");
        host.put("sys/devices/system/cpu/isolated", "2-7\n");
        host.put("sys/devices/system/cpu/nohz_full", "(null)\n");
        host.put(
            "sys/devices/system/cpu/cpu1/cpufreq/scaling_governor",
            "powersave\n",
        );
        host.put(
            "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor",
            "performance\n",
        );
        host.put(
            "sys/devices/system/cpu/cpu10/cpufreq/scaling_governor",
            "schedutil\n",
        );
        host.put("sys/devices/system/cpu/cpu2/topology/core_id", "2\n");
        host.put("sys/devices/system/cpu/cpufreq/boost", "1\n");

        let r = read_host(&host.proc(), &host.sys());
        assert_eq!(r.rmem_max, Some(32 * MIB));
        assert_eq!(r.wmem_max, Some(212_992));
        assert!(
            !r.io_uring_available,
            "io_uring_disabled = 2 wins over any probe"
        );
        assert_eq!(r.online_cores, 8);
        assert_eq!(r.isolated_cores, vec![2, 3, 4, 5, 6, 7]);
        assert_eq!(r.nohz_full_cores, Vec::<usize>::new());
        assert_eq!(r.governors, ["performance", "powersave", "schedutil"]);
    }

    #[test]
    fn read_host_tolerates_an_empty_tree() {
        let host = FakeHost::new("empty");
        host.put("sys/devices/system/cpu/isolated", "garbage\n");
        let r = read_host(&host.proc(), &host.sys());
        assert_eq!(r.rmem_max, None);
        assert_eq!(r.wmem_max, None);
        assert!(r.online_cores >= 1);
        assert!(r.isolated_cores.is_empty());
        assert!(r.nohz_full_cores.is_empty());
        assert!(r.governors.is_empty());
    }
}
