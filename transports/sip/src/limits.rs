//! Per-source limits on failed authentication: password guessing and
//! extension scanning against REGISTER and INVITE.
//!
//! The caller records a failure ([`FailureLimiter::record_failure`]) for
//! every [`Outcome::Wrong`](crate::digest::Outcome::Wrong) (a bad response,
//! a forged nonce, an unknown user), and may for
//! [`Outcome::Malformed`](crate::digest::Outcome::Malformed) too; not for
//! [`Outcome::Stale`](crate::digest::Outcome::Stale) or for the first,
//! credential-less request that only earns a challenge. After
//! `max_failures` failures within `window` from one source the source is
//! blocked for `block_for`: the caller asks [`FailureLimiter::check`]
//! before doing any work for a request and answers 403 while it says
//! [`Verdict::Blocked`]. Blocked requests are counted and do not extend
//! the block (a phone retrying with a stale password is let back in to
//! try again after `block_for`).
//!
//! A source is an IP address, never a port (a scanner changes ports for
//! free): IPv4 addresses (also when IPv4-mapped in IPv6) one by one, IPv6
//! addresses by their first `ipv6_prefix` bits (default /64, what one
//! subscriber gets, so a host cannot rotate through its own /64).
//!
//! Successes clear nothing: there is no call for them. Otherwise an
//! attacker holding one valid account (or a phone of its own) could
//! interleave a good REGISTER between guesses and never be blocked. The
//! cost: a phone that fails a few times and then succeeds keeps those
//! failures until they age out of the window.
//!
//! Memory is bounded: at most `max_sources` sources are tracked, each
//! with at most `max_failures` instants. Entries are dropped once they
//! expire (their last failure out of the window and any block over).
//! When the table is full, a new source evicts the entry that would
//! expire soonest: the source whose last failure is oldest among those
//! not blocked, and only when every tracked source is blocked, the block
//! that ends soonest. The trade-off: an attacker spraying failures from
//! more than `max_sources` addresses (easy over IPv6 with many /64s, or
//! a botnet) makes the table forget partial histories, so slow guessing
//! from many sources is not caught, and past that it can shorten blocks.
//! A larger table costs about `max_failures * 16` bytes per source.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

/// The most failures per window that can be configured, which bounds an
/// entry's size.
pub const MAX_FAILURES_CAP: u32 = 1000;

/// What a [`FailureLimiter`] enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitConfig {
    /// Failures within `window` that block a source (1 to
    /// [`MAX_FAILURES_CAP`]). Default 10.
    pub max_failures: u32,
    /// The window failures are counted in. Default 60 s.
    pub window: Duration,
    /// How long a source stays blocked. Default 10 minutes.
    pub block_for: Duration,
    /// The most sources tracked at once (at least 1). Default 10 000.
    pub max_sources: usize,
    /// How many leading bits of an IPv6 address name a source (0 to
    /// 128). Default 64.
    pub ipv6_prefix: u8,
}

impl Default for LimitConfig {
    fn default() -> LimitConfig {
        LimitConfig {
            max_failures: 10,
            window: Duration::from_secs(60),
            block_for: Duration::from_secs(600),
            max_sources: 10_000,
            ipv6_prefix: 64,
        }
    }
}

/// Whether a source may go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Handle the request.
    Allow,
    /// Answer 403 without authenticating; blocked until the instant.
    Blocked(Instant),
}

/// What a [`FailureLimiter`] has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitCounters {
    /// Requests [`FailureLimiter::check`] answered [`Verdict::Blocked`].
    pub blocked_requests: u64,
    /// Times a source got blocked.
    pub blocks: u64,
    /// Failures recorded.
    pub failures: u64,
    /// Entries evicted to make room for a new source.
    pub evictions: u64,
    /// Sources tracked now.
    pub sources_tracked: usize,
}

/// One source's state.
#[derive(Debug)]
struct Source {
    /// Failures within the window, oldest first (fewer than max_failures).
    failures: VecDeque<Instant>,
    blocked_until: Option<Instant>,
    /// This entry's key in `FailureLimiter::expiry`.
    expiry_key: (Instant, u64),
}

/// Counts failed authentications per source address and blocks sources
/// that fail too often. Time comes in as `Instant`s.
#[derive(Debug)]
pub struct FailureLimiter {
    config: LimitConfig,
    sources: HashMap<IpAddr, Source>,
    /// Sources by the instant their entry expires (then a sequence number):
    /// expiry in order, eviction from the front.
    expiry: BTreeMap<(Instant, u64), IpAddr>,
    seq: u64,
    counters: LimitCounters,
}

impl FailureLimiter {
    /// A limiter with `config` (out-of-range values clamped).
    pub fn new(mut config: LimitConfig) -> FailureLimiter {
        config.max_failures = config.max_failures.clamp(1, MAX_FAILURES_CAP);
        config.max_sources = config.max_sources.max(1);
        config.ipv6_prefix = config.ipv6_prefix.min(128);
        FailureLimiter {
            config,
            sources: HashMap::new(),
            expiry: BTreeMap::new(),
            seq: 0,
            counters: LimitCounters::default(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &LimitConfig {
        &self.config
    }

    /// The source an address counts as.
    pub fn source_of(&self, addr: IpAddr) -> IpAddr {
        match addr {
            IpAddr::V4(_) => addr,
            IpAddr::V6(v6) => {
                if let Some(v4) = v6.to_ipv4_mapped() {
                    return IpAddr::V4(v4);
                }
                let bits = u128::from(v6);
                let prefix = u32::from(self.config.ipv6_prefix);
                let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(bits & mask))
            }
        }
    }

    /// Whether a request from `addr` may be handled; counts the blocked
    /// ones. Call it first for every request that could authenticate.
    pub fn check(&mut self, addr: IpAddr, now: Instant) -> Verdict {
        self.expire(now);
        let key = self.source_of(addr);
        match self.sources.get(&key).and_then(|s| s.blocked_until) {
            Some(until) if now < until => {
                self.counters.blocked_requests += 1;
                Verdict::Blocked(until)
            }
            _ => Verdict::Allow,
        }
    }

    /// Whether `addr` is blocked at `now`, counting nothing.
    pub fn is_blocked(&self, addr: IpAddr, now: Instant) -> bool {
        self.sources
            .get(&self.source_of(addr))
            .and_then(|s| s.blocked_until)
            .is_some_and(|until| now < until)
    }

    /// Records a failed authentication from `addr`; [`Verdict::Blocked`]
    /// when the source is blocked (by this failure or before).
    pub fn record_failure(&mut self, addr: IpAddr, now: Instant) -> Verdict {
        self.expire(now);
        self.counters.failures += 1;
        let key = self.source_of(addr);
        if !self.sources.contains_key(&key) {
            if self.sources.len() >= self.config.max_sources {
                if let Some((_, evicted)) = self.expiry.pop_first() {
                    self.sources.remove(&evicted);
                    self.counters.evictions += 1;
                }
            }
            let expiry_key = self.next_key(now);
            self.expiry.insert(expiry_key, key);
            self.sources.insert(
                key,
                Source {
                    failures: VecDeque::new(),
                    blocked_until: None,
                    expiry_key,
                },
            );
        }
        let Some(source) = self.sources.get_mut(&key) else {
            return Verdict::Allow;
        };
        let verdict = match source.blocked_until {
            Some(until) if now < until => Verdict::Blocked(until),
            _ => {
                source.blocked_until = None;
                let window = self.config.window;
                while source
                    .failures
                    .front()
                    .is_some_and(|&t| now.saturating_duration_since(t) >= window)
                {
                    source.failures.pop_front();
                }
                source.failures.push_back(now);
                if source.failures.len() >= self.config.max_failures as usize {
                    let until = now + self.config.block_for;
                    source.blocked_until = Some(until);
                    source.failures.clear();
                    self.counters.blocks += 1;
                    Verdict::Blocked(until)
                } else {
                    Verdict::Allow
                }
            }
        };
        // The entry now lives until its block ends or its last failure
        // leaves the window, whichever is later.
        let last = source.failures.back().map(|&t| t + self.config.window);
        let expires = match (source.blocked_until, last) {
            (Some(b), Some(l)) => b.max(l),
            (Some(b), None) => b,
            (None, Some(l)) => l,
            (None, None) => now,
        };
        let old_key = source.expiry_key;
        self.seq += 1;
        let new_key = (expires, self.seq);
        source.expiry_key = new_key;
        self.expiry.remove(&old_key);
        self.expiry.insert(new_key, key);
        verdict
    }

    /// The counters, with the current number of sources.
    pub fn counters(&self) -> LimitCounters {
        LimitCounters {
            sources_tracked: self.sources.len(),
            ..self.counters
        }
    }

    fn next_key(&mut self, at: Instant) -> (Instant, u64) {
        self.seq += 1;
        (at, self.seq)
    }

    /// Drops the entries expired at `now`.
    fn expire(&mut self, now: Instant) {
        while let Some(entry) = self.expiry.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let addr = entry.remove();
            self.sources.remove(&addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn config() -> LimitConfig {
        LimitConfig {
            max_failures: 3,
            window: Duration::from_secs(60),
            block_for: Duration::from_secs(300),
            max_sources: 100,
            ipv6_prefix: 64,
        }
    }

    #[test]
    fn blocks_after_n_failures_then_lets_go() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut l = FailureLimiter::new(config());
        let a = ip("192.0.2.1");
        assert_eq!(l.check(a, at(0)), Verdict::Allow);
        assert_eq!(l.record_failure(a, at(0)), Verdict::Allow);
        assert_eq!(l.record_failure(a, at(10)), Verdict::Allow);
        assert_eq!(l.check(a, at(11)), Verdict::Allow);
        assert_eq!(l.record_failure(a, at(20)), Verdict::Blocked(at(320)));
        assert!(l.is_blocked(a, at(20)));
        for s in [21, 100, 319] {
            assert_eq!(l.check(a, at(s)), Verdict::Blocked(at(320)), "{s}");
        }
        // A failure while blocked (the caller authenticated anyway) does
        // not extend the block.
        assert_eq!(l.record_failure(a, at(200)), Verdict::Blocked(at(320)));
        let c = l.counters();
        assert_eq!((c.blocked_requests, c.blocks, c.failures), (3, 1, 4));
        assert_eq!(c.sources_tracked, 1);
        assert_eq!(l.check(a, at(320)), Verdict::Allow);
        assert!(!l.is_blocked(a, at(320)));
        // The block expired with its entry: a fresh start.
        assert_eq!(l.counters().sources_tracked, 0);
        assert_eq!(l.record_failure(a, at(321)), Verdict::Allow);
        assert_eq!(l.record_failure(a, at(322)), Verdict::Allow);
        assert_eq!(l.record_failure(a, at(323)), Verdict::Blocked(at(623)));
        assert_eq!(l.counters().blocks, 2);
    }

    #[test]
    fn failures_older_than_the_window_do_not_count() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut l = FailureLimiter::new(config());
        let a = ip("192.0.2.1");
        // A failure every 30 s: two within any 60 s (one exactly 60 s old
        // has left the window), never three; the entry stays alive.
        for k in 0..40 {
            assert_eq!(l.record_failure(a, at(k * 30)), Verdict::Allow, "{k}");
            assert_eq!(l.check(a, at(k * 30 + 1)), Verdict::Allow);
            assert_eq!(l.counters().sources_tracked, 1);
        }
        // Three within 60 s do block.
        assert_eq!(l.record_failure(a, at(1300)), Verdict::Allow);
        assert_eq!(l.record_failure(a, at(1330)), Verdict::Allow);
        assert_eq!(l.record_failure(a, at(1359)), Verdict::Blocked(at(1659)));
        // Entries of idle sources expire.
        let b = ip("192.0.2.2");
        l.record_failure(b, at(1360));
        assert_eq!(l.counters().sources_tracked, 2);
        l.check(b, at(1420));
        assert_eq!(l.counters().sources_tracked, 1);
    }

    #[test]
    fn sources_are_addresses_not_ports_v6_by_prefix() {
        let t0 = Instant::now();
        let mut l = FailureLimiter::new(config());
        // Three IPv6 addresses of one /64 (and one mapped IPv4 address
        // equal to its plain form) are one source each.
        l.record_failure(ip("2001:db8:1:2::1"), t0);
        l.record_failure(ip("2001:db8:1:2:ffff::9"), t0);
        assert!(matches!(
            l.record_failure(ip("2001:db8:1:2:abcd::"), t0),
            Verdict::Blocked(_)
        ));
        assert!(l.is_blocked(ip("2001:db8:1:2::77"), t0));
        assert!(!l.is_blocked(ip("2001:db8:1:3::1"), t0));
        l.record_failure(ip("198.51.100.7"), t0);
        l.record_failure(ip("::ffff:198.51.100.7"), t0);
        assert!(!l.is_blocked(ip("198.51.100.7"), t0));
        l.record_failure(ip("198.51.100.7"), t0);
        assert!(l.is_blocked(ip("::ffff:198.51.100.7"), t0));
        assert!(!l.is_blocked(ip("198.51.100.8"), t0));
        // Per address with a /128 prefix.
        let l = FailureLimiter::new(LimitConfig {
            ipv6_prefix: 128,
            ..config()
        });
        assert_ne!(
            l.source_of(ip("2001:db8::1")),
            l.source_of(ip("2001:db8::2"))
        );
        let l0 = FailureLimiter::new(LimitConfig {
            ipv6_prefix: 0,
            ..config()
        });
        assert_eq!(l0.source_of(ip("2001:db8::1")), ip("::"));
        assert_eq!(
            l0.source_of(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
    }

    #[test]
    fn memory_is_bounded_and_blocks_outlive_spraying() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut l = FailureLimiter::new(LimitConfig {
            max_sources: 10,
            ..config()
        });
        let attacker = ip("203.0.113.66");
        for _ in 0..3 {
            l.record_failure(attacker, at(0));
        }
        assert!(l.is_blocked(attacker, at(1)));
        // A spray of single failures from 1000 addresses.
        for i in 0..1000u32 {
            let a = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            l.record_failure(a, at(1) + Duration::from_millis(u64::from(i)));
            assert!(l.counters().sources_tracked <= 10);
        }
        let c = l.counters();
        assert_eq!(c.sources_tracked, 10);
        assert_eq!(c.evictions, 1000 - 9);
        // The blocked source was never the one evicted.
        assert!(l.is_blocked(attacker, at(2)));
        // Evicted: the oldest partial histories; the newest are kept.
        let newest = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + 999));
        l.record_failure(newest, at(2));
        assert!(matches!(
            l.record_failure(newest, at(2)),
            Verdict::Blocked(_)
        ));
        let oldest = IpAddr::V4(Ipv4Addr::from(0x0a00_0000));
        l.record_failure(oldest, at(2));
        assert_eq!(l.record_failure(oldest, at(2)), Verdict::Allow);
    }

    #[test]
    fn a_full_table_of_blocks_evicts_the_one_ending_first() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut l = FailureLimiter::new(LimitConfig {
            max_sources: 2,
            max_failures: 1,
            ..config()
        });
        let (a, b, c) = (ip("192.0.2.1"), ip("192.0.2.2"), ip("192.0.2.3"));
        assert!(matches!(l.record_failure(a, at(0)), Verdict::Blocked(_)));
        assert!(matches!(l.record_failure(b, at(1)), Verdict::Blocked(_)));
        assert!(matches!(l.record_failure(c, at(2)), Verdict::Blocked(_)));
        assert!(!l.is_blocked(a, at(3)));
        assert!(l.is_blocked(b, at(3)) && l.is_blocked(c, at(3)));
        assert_eq!(l.counters().evictions, 1);
    }

    #[test]
    fn odd_configs_and_time_going_backwards() {
        let t0 = Instant::now() + Duration::from_secs(1000);
        let mut l = FailureLimiter::new(LimitConfig {
            max_failures: 0,
            max_sources: 0,
            window: Duration::ZERO,
            block_for: Duration::ZERO,
            ipv6_prefix: 200,
        });
        assert_eq!(l.config().max_failures, 1);
        assert_eq!(l.config().max_sources, 1);
        assert_eq!(l.config().ipv6_prefix, 128);
        let a = ip("192.0.2.1");
        // A zero block blocks nothing for long.
        assert_eq!(l.record_failure(a, t0), Verdict::Blocked(t0));
        assert_eq!(l.check(a, t0), Verdict::Allow);
        // Earlier instants than seen before do not panic.
        let mut l = FailureLimiter::new(config());
        for s in [500u64, 10, 700, 0, 300, 299] {
            let now = t0 - Duration::from_secs(1000) + Duration::from_secs(s);
            l.record_failure(a, now);
            l.check(a, now);
            l.record_failure(ip("2001:db8::1"), now);
        }
    }
}
