//! A viewer's capped downlink (`load --viewer-cap`): what arrives at the
//! viewer's socket goes through a token bucket and a short drop-tail queue
//! before the viewer's WebRTC stack sees it.
//!
//! The bucket fills at the cap's rate up to [`BURST`] of it; a datagram
//! passes at once when the queue is empty and the bucket holds its size, it
//! waits in the queue (FIFO) while the queue holds less than [`QUEUE`] of
//! the rate, and is dropped otherwise. Sizes count the IP and UDP headers.
//! The viewer's congestion-control feedback then reports the loss and the
//! queueing delay to the server, as a real bottleneck's would. It models a
//! link that is capped at the receiver: the server sends every datagram
//! anyway, so a cap saves the server no work, it only changes what the
//! server's estimate of the viewer's link says.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The bucket's depth, in time at the cap's rate.
pub const BURST: Duration = Duration::from_millis(100);
/// The queue's capacity, in time at the cap's rate.
pub const QUEUE: Duration = Duration::from_millis(50);
/// IPv4 and UDP headers, counted with every datagram.
pub const OVERHEAD: usize = 28;
/// The bucket and the queue hold at least this many bytes, so a full-size
/// datagram can pass a very low cap.
const MIN_BYTES: f64 = 1500.0;

/// What became of an offered datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer<T> {
    /// It passes now.
    Pass(T),
    /// It waits in the queue; [`LinkCap::pop`] hands it out when its turn comes.
    Queued,
    /// The queue was full.
    Dropped,
}

/// One viewer's capped link (see the module docs).
#[derive(Debug)]
pub struct LinkCap<T> {
    /// Bytes per second.
    rate: f64,
    burst: f64,
    queue_max: f64,
    tokens: f64,
    last: Option<Instant>,
    queue: VecDeque<(usize, T)>,
    queued: usize,
    dropped: u64,
}

impl<T> LinkCap<T> {
    /// A link of `rate_bps` bits per second, its bucket full.
    pub fn new(rate_bps: u64) -> LinkCap<T> {
        let rate = rate_bps as f64 / 8.0;
        let burst = (rate * BURST.as_secs_f64()).max(MIN_BYTES);
        LinkCap {
            rate,
            burst,
            queue_max: (rate * QUEUE.as_secs_f64()).max(MIN_BYTES),
            tokens: burst,
            last: None,
            queue: VecDeque::new(),
            queued: 0,
            dropped: 0,
        }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        }
        self.last = Some(self.last.map_or(now, |l| l.max(now)));
    }

    /// A datagram of `len` bytes (UDP payload) arrives at `now`.
    pub fn offer(&mut self, now: Instant, len: usize, item: T) -> Offer<T> {
        self.refill(now);
        let size = len + OVERHEAD;
        if self.queue.is_empty() && self.tokens >= size as f64 {
            self.tokens -= size as f64;
            return Offer::Pass(item);
        }
        if (self.queued + size) as f64 <= self.queue_max {
            self.queue.push_back((size, item));
            self.queued += size;
            return Offer::Queued;
        }
        self.dropped += 1;
        Offer::Dropped
    }

    /// The next queued datagram whose turn has come at `now`.
    pub fn pop(&mut self, now: Instant) -> Option<T> {
        let size = self.queue.front()?.0;
        self.refill(now);
        if self.tokens < size as f64 {
            return None;
        }
        self.tokens -= size as f64;
        self.queued -= size;
        self.queue.pop_front().map(|(_, item)| item)
    }

    /// Whether datagrams wait in the queue.
    pub fn is_queueing(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Datagrams dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Offers a datagram of `len` bytes every `every` for `total`, pops
    /// every millisecond; returns the bytes (with overhead) that passed and
    /// the datagrams dropped.
    fn run(cap: &mut LinkCap<u32>, len: usize, every: Duration, total: Duration) -> (usize, u64) {
        let start = Instant::now();
        let (mut passed, mut next, mut t) = (0usize, Duration::ZERO, Duration::ZERO);
        while t < total {
            let now = start + t;
            while next <= t {
                if let Offer::Pass(_) = cap.offer(now, len, 0) {
                    passed += len + OVERHEAD;
                }
                next += every;
            }
            while cap.pop(now).is_some() {
                passed += len + OVERHEAD;
            }
            t += MS;
        }
        (passed, cap.dropped())
    }

    #[test]
    fn under_the_cap_everything_passes_at_once() {
        // 400 kbit/s cap, 200 kbit/s offered (1000 + 28 bytes every 41 ms).
        let mut cap = LinkCap::new(400_000);
        let (passed, dropped) = run(&mut cap, 1000, MS * 41, Duration::from_secs(5));
        assert_eq!(dropped, 0);
        assert!(!cap.is_queueing());
        assert_eq!(passed % 1028, 0);
    }

    #[test]
    fn over_the_cap_the_rate_is_the_caps() {
        // 1.5 Mbit/s offered (1172 + 28 bytes every 6.4 ms) into 400 kbit/s.
        let mut cap = LinkCap::new(400_000);
        let secs = 10;
        let every = Duration::from_micros(6400);
        let (passed, dropped) = run(&mut cap, 1172, every, Duration::from_secs(secs));
        let rate = passed as f64 * 8.0 / secs as f64;
        // The cap plus the bucket's first burst, spread over the run.
        let expected = 400_000.0 + 5_000.0 * 8.0 / secs as f64;
        assert!((rate - expected).abs() < 0.03 * expected, "{rate}");
        let offered = secs * 1_000_000 / 6400;
        assert!(dropped > offered * 2 / 3, "{dropped} of {offered}");
    }

    #[test]
    fn a_burst_fills_the_bucket_then_the_queue_then_drops() {
        let mut cap = LinkCap::new(400_000); // 50 bytes/ms: bucket 5000, queue 2500
        let now = Instant::now();
        let mut outcome = Vec::new();
        for i in 0..8u32 {
            outcome.push(match cap.offer(now, 972, i) {
                Offer::Pass(_) => 'p',
                Offer::Queued => 'q',
                Offer::Dropped => 'd',
            });
        }
        // 1000 bytes each (with the headers): the bucket's 5000 let five
        // pass, the queue's 2500 hold two, the next is dropped.
        assert_eq!(outcome.iter().collect::<String>(), "pppppqqd");
        assert_eq!(cap.pop(now), None);
        // 1000 bytes take 20 ms at 50 bytes a millisecond, in order.
        assert_eq!(cap.pop(now + MS * 19), None);
        assert_eq!(cap.pop(now + MS * 20), Some(5));
        assert_eq!(cap.pop(now + MS * 39), None);
        assert_eq!(cap.pop(now + MS * 40), Some(6));
        assert!(!cap.is_queueing());
        // While others wait, a newcomer queues behind them even when the
        // bucket could take it.
        let later = now + MS * 1000;
        assert_eq!(cap.offer(later, 972, 10), Offer::Pass(10));
        let mut cap2 = LinkCap::new(400_000);
        for i in 0..6u32 {
            let _ = cap2.offer(now, 972, i);
        }
        assert_eq!(cap2.offer(now + MS * 20, 100, 99), Offer::Queued);
        assert_eq!(cap2.pop(now + MS * 20), Some(5));
    }

    #[test]
    fn a_very_low_cap_still_carries_full_size_datagrams() {
        let mut cap = LinkCap::new(20_000); // 2.5 bytes/ms
        let now = Instant::now();
        assert_eq!(cap.offer(now, 1200, 1), Offer::Pass(1));
        assert_eq!(cap.offer(now, 1200, 2), Offer::Queued);
        // 272 bytes were left; 956 more take 383 ms at 2.5 bytes a ms.
        assert_eq!(cap.pop(now + MS * 300), None);
        assert_eq!(cap.pop(now + MS * 400), Some(2));
    }
}
