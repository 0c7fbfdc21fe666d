//! A token bucket with time passed in: STUN claims a shard passes to the
//! control thread, RPC requests of one connection, a test link's bytes.

use std::time::Instant;

/// Allows `rate` events per second on average and bursts of up to `burst`.
/// A rate of 0 allows everything.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    pub fn new(rate: u32, burst: u32) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: f64::from(rate),
            burst,
            tokens: burst,
            last: None,
        }
    }

    /// Takes one token if there is one.
    pub fn allow(&mut self, now: Instant) -> bool {
        self.allow_n(now, 1)
    }

    /// Takes `n` tokens if there are as many (a datagram of `n` bytes
    /// against a byte rate).
    pub fn allow_n(&mut self, now: Instant, n: u32) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        }
        // Time never runs backwards for the bucket.
        self.last = Some(self.last.map_or(now, |l| l.max(now)));
        let n = f64::from(n);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn allows_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, 10);
        let allowed = (0..1000).filter(|_| b.allow(t0)).count();
        assert_eq!(allowed, 10, "a burst of 10 at one instant");
        // One second later: 100 more at most (the burst caps the refill at 10
        // per instant, so spread them over the second).
        let mut allowed = 0;
        for ms in 1..=1000u64 {
            let now = t0 + Duration::from_millis(ms);
            allowed += (0..50).filter(|_| b.allow(now)).count();
        }
        assert!((99..=101).contains(&allowed), "{allowed} in one second");
        // Idle for a minute: still only the burst.
        let later = t0 + Duration::from_secs(61);
        assert_eq!((0..1000).filter(|_| b.allow(later)).count(), 10);
        // An earlier instant (clocks of two callers) does not refill.
        assert!(!b.allow(t0));
    }

    #[test]
    fn zero_means_unlimited() {
        let mut b = TokenBucket::new(0, 1);
        let t0 = Instant::now();
        assert!((0..10_000).all(|_| b.allow(t0)));
    }
}
