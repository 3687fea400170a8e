//! Exponential backoff with full jitter for reconnects and retries, so that a park's worth of
//! gateways and devices do not reconnect in lock-step after an outage; and the pause a server
//! asks for (`Retry-After`), read the same way for every HTTP client of the daemon.
//!
//! Owns: the delay arithmetic. Must not touch: anything it delays.

use std::time::{Duration, SystemTime};

use rand::Rng;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            attempt: 0,
        }
    }

    /// The delay before the next attempt: uniformly random in [ceiling/2, ceiling], where the
    /// ceiling doubles per failed attempt up to `max`. Half-jitter keeps a floor so that a
    /// tight failure loop cannot happen even on an unlucky draw.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .initial
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let low = ceiling / 2;
        let spread = (ceiling - low).as_millis() as u64;
        low + Duration::from_millis(rand::rng().random_range(0..=spread))
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// The longest `Retry-After` honoured: a server asking for more (or a broken one) is asked
/// again after this, so that one header cannot stall a sink for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// A `Retry-After` value (RFC 9110 10.2.3): delay-seconds, or an HTTP-date, which is read
/// against `now` (a date already past means at once). Capped at `MAX_RETRY_AFTER`; anything
/// else is ignored (the usual backoff applies).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let at = httpdate::parse_http_date(value).ok()?;
            at.duration_since(now).unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_as_seconds_or_as_an_http_date() {
        // RFC 9110's own examples: "Fri, 31 Dec 1999 23:59:59 GMT" and "120".
        let now = httpdate::parse_http_date("Fri, 31 Dec 1999 23:57:59 GMT").expect("date");
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 1999 23:59:59 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        // A date in the past: at once. Too long: capped. Nonsense: ignored.
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 1999 23:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("86400", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn delays_grow_to_the_cap_and_stay_within_jitter_bounds() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let ceilings = [100, 200, 400, 800, 1600, 2000, 2000];
        for ceiling in ceilings {
            let d = b.next_delay().as_millis() as u64;
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{d} outside [{}, {ceiling}]",
                ceiling / 2
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn jitter_spreads_delays() {
        let draws: std::collections::BTreeSet<u128> = (0..50)
            .map(|_| {
                Backoff::new(Duration::from_secs(1), Duration::from_secs(1))
                    .next_delay()
                    .as_millis()
            })
            .collect();
        assert!(draws.len() > 10, "only {} distinct delays", draws.len());
    }
}
