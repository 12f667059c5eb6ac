//! Rate limits for what outside parties can send: a token bucket per key (a source address, a
//! node), with a bounded number of keys so the limiter itself cannot be grown without bound.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Instant;

/// Buckets tracked at most; past it the stalest are forgotten (they start full again).
const MAX_KEYS: usize = 10_000;

/// `burst` at once, then `per_second`.
pub struct RateLimiter<K> {
    burst: f64,
    per_second: f64,
    buckets: Mutex<HashMap<K, (f64, Instant)>>,
}

impl<K: Eq + Hash + Clone> RateLimiter<K> {
    pub fn new(burst: u32, per_second: f64) -> Self {
        Self {
            burst: burst as f64,
            per_second,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `n` units for `key` if it has them.
    pub fn take(&self, key: &K, n: f64) -> bool {
        self.take_at(key, n, Instant::now())
    }

    fn take_at(&self, key: &K, n: f64, now: Instant) -> bool {
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if b.len() >= MAX_KEYS && !b.contains_key(key) {
            // Forget the fullest-refilled half (the stalest): they would be full by now.
            let mut ages: Vec<(Instant, K)> = b.iter().map(|(k, v)| (v.1, k.clone())).collect();
            ages.sort_by_key(|a| a.0);
            for (_, k) in ages.into_iter().take(MAX_KEYS / 2) {
                b.remove(&k);
            }
        }
        let (tokens, last) = b.entry(key.clone()).or_insert((self.burst, now));
        let refill = now.saturating_duration_since(*last).as_secs_f64() * self.per_second;
        *tokens = (*tokens + refill).min(self.burst);
        *last = now;
        if *tokens >= n {
            *tokens -= n;
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
    fn a_burst_then_the_rate() {
        let l = RateLimiter::new(3, 1.0);
        let t = Instant::now();
        assert!((0..3).all(|_| l.take_at(&"a", 1.0, t)));
        assert!(!l.take_at(&"a", 1.0, t), "the burst is spent");
        assert!(l.take_at(&"b", 1.0, t), "keys are apart");
        assert!(!l.take_at(&"a", 1.0, t + Duration::from_millis(500)));
        assert!(l.take_at(&"a", 1.0, t + Duration::from_millis(1600)));
    }

    #[test]
    fn keys_are_bounded() {
        let l = RateLimiter::new(1, 1.0);
        let t = Instant::now();
        for i in 0..(MAX_KEYS + 10) {
            l.take_at(&i, 1.0, t);
        }
        assert!(l.buckets.lock().unwrap().len() <= MAX_KEYS);
    }
}
