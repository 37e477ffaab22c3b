//! The `Retry-After` a level's rejections carry, adapted to how often it
//! drops requests (upstream's dropped-requests tracker): it starts at 1 s,
//! doubles (up to 32 s) while at least 3n requests were dropped in the last
//! n seconds, and shrinks by one while fewer than n were.

use std::collections::VecDeque;

/// The longest advice.
const MAX_SECONDS: u64 = 32;

/// Drops per second of one level and the advice derived from them.
#[derive(Debug)]
pub struct RetryAfter {
    seconds: u64,
    last_increase: u64,
    /// (second, drops in it), oldest first, at most `MAX_SECONDS` long.
    drops: VecDeque<(u64, u64)>,
}

impl Default for RetryAfter {
    fn default() -> Self {
        Self {
            seconds: 1,
            last_increase: 0,
            drops: VecDeque::new(),
        }
    }
}

impl RetryAfter {
    /// Records a drop at second `now` (any monotonic seconds) and returns
    /// the advice for it.
    pub fn dropped(&mut self, now: u64) -> u64 {
        match self.drops.back_mut() {
            Some((second, count)) if *second == now => *count += 1,
            _ => self.drops.push_back((now, 1)),
        }
        while self
            .drops
            .front()
            .is_some_and(|(second, _)| *second + MAX_SECONDS < now)
        {
            self.drops.pop_front();
        }
        let recent: u64 = self
            .drops
            .iter()
            .filter(|(second, _)| *second + self.seconds > now)
            .map(|(_, count)| count)
            .sum();
        if recent >= 3 * self.seconds && now >= self.last_increase + self.seconds {
            self.seconds = (self.seconds * 2).min(MAX_SECONDS);
            self.last_increase = now;
        } else if recent < self.seconds {
            self.seconds = (self.seconds - 1).max(1);
        }
        self.seconds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_drops_backs_clients_off_and_calm_brings_it_back() {
        let mut r = RetryAfter::default();
        assert_eq!(r.dropped(10), 1);
        assert_eq!(r.dropped(10), 1);
        assert_eq!(r.dropped(10), 2, "3 drops in 1 s");
        for _ in 0..10 {
            r.dropped(11);
        }
        let high = r.dropped(12);
        assert!(high >= 4, "{high}");
        // A lone drop much later: the advice shrinks.
        assert_eq!(r.dropped(100), high - 1);
    }

    #[test]
    fn capped_at_32() {
        let mut r = RetryAfter::default();
        for second in 0..200 {
            for _ in 0..200 {
                r.dropped(second);
            }
        }
        assert_eq!(r.dropped(200), 32);
    }
}
