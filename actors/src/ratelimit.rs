//! Rate limits. For warnings that a misbehaving exporter or a slow sink could otherwise
//! repeat thousands of times a second ([`LogLimiter`], [`KeyedLogLimiter`]): every
//! occurrence is still counted in the metrics; only the log line is held back, and the
//! next one says how many were held back. For an exporter's datagrams
//! ([`TokenBucket`]): one source cannot take all the decoding CPU.

use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

/// Admits up to `rate` units per second, with bursts of one second's worth.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: f64,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(rate: NonZeroU32, now: Instant) -> Self {
        let rate = f64::from(rate.get());
        Self { rate, tokens: rate, refilled: now }
    }

    /// How many of `wanted` units may pass now; they are taken from the bucket.
    pub(crate) fn take(&mut self, wanted: usize, now: Instant) -> usize {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.refilled = now;
        // Whole tokens only; at most `rate` (a u32), so the conversion is exact.
        let available = self.tokens.floor() as usize;
        let granted = wanted.min(available);
        self.tokens -= granted as f64;
        granted
    }
}

/// Lets one log line through per interval.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    interval: Duration,
    next_allowed: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    pub(crate) fn new(interval: Duration) -> Self {
        Self { interval, next_allowed: None, suppressed: 0 }
    }

    /// `Some(n)` when a line may be written now, `n` being the occurrences held back
    /// since the last line; `None` when this occurrence is to be held back.
    pub(crate) fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.next_allowed {
            Some(next) if now < next => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.next_allowed = Some(now + self.interval);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// One [`LogLimiter`] per key (template, error reason, source), with a bound on the keys
/// kept so a flood of distinct keys cannot grow memory: when full, it starts over.
#[derive(Debug)]
pub(crate) struct KeyedLogLimiter<K> {
    interval: Duration,
    max_keys: usize,
    limiters: HashMap<K, LogLimiter>,
}

impl<K: Eq + Hash> KeyedLogLimiter<K> {
    pub(crate) fn new(interval: Duration, max_keys: usize) -> Self {
        Self { interval, max_keys, limiters: HashMap::new() }
    }

    /// As [`LogLimiter::allow`], for `key`.
    pub(crate) fn allow(&mut self, key: K, now: Instant) -> Option<u64> {
        if self.limiters.len() >= self.max_keys && !self.limiters.contains_key(&key) {
            self.limiters.clear();
        }
        let interval = self.interval;
        self.limiters.entry(key).or_insert_with(|| LogLimiter::new(interval)).allow(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_passes_a_second_of_burst_then_the_rate() {
        let start = Instant::now();
        let rate = NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN);
        let mut bucket = TokenBucket::new(rate, start);
        assert_eq!(bucket.take(150, start), 100, "a full bucket is one second's worth");
        assert_eq!(bucket.take(10, start), 0);
        assert_eq!(bucket.take(10, start + Duration::from_millis(50)), 5, "refills at the rate");
        assert_eq!(bucket.take(1000, start + Duration::from_secs(60)), 100, "never above a second");
    }

    #[test]
    fn one_line_per_interval_with_the_count_held_back() {
        let start = Instant::now();
        let mut limiter = LogLimiter::new(Duration::from_secs(10));
        assert_eq!(limiter.allow(start), Some(0));
        assert_eq!(limiter.allow(start + Duration::from_secs(1)), None);
        assert_eq!(limiter.allow(start + Duration::from_secs(2)), None);
        assert_eq!(limiter.allow(start + Duration::from_secs(10)), Some(2));
        assert_eq!(limiter.allow(start + Duration::from_secs(11)), None);
    }

    #[test]
    fn keys_are_limited_independently_and_bounded() {
        let now = Instant::now();
        let mut limiter = KeyedLogLimiter::new(Duration::from_secs(10), 2);
        assert_eq!(limiter.allow(1, now), Some(0));
        assert_eq!(limiter.allow(2, now), Some(0));
        assert_eq!(limiter.allow(1, now), None);
        // A third key starts over rather than growing past the bound.
        assert_eq!(limiter.allow(3, now), Some(0));
        assert_eq!(limiter.allow(1, now), Some(0));
    }
}
