//! One level of one condition, filtered in time: raised once the condition has held for the
//! on-delay, cleared once its clear condition (past the deadband) has held for the off-delay.
//! Pure; the clock (milliseconds) is passed in.
//!
//! Between two samples the last value is taken to hold, so a delay that runs out between
//! samples is honoured at the exact millisecond it ran out (`poll`), not at the next sample.

use serde::{Deserialize, Serialize};

pub use crate::model::Ms;

/// A change of a level's state, at the millisecond it took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    Raised(Ms),
    Cleared(Ms),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LevelFilter {
    pub active: bool,
    /// Since when the raise (inactive) or clear (active) condition has held; `NOT_HELD` when
    /// it does not (not an `Option`: 16 bytes instead of 24, on some 300,000 filters at a large
    /// site).
    #[serde(skip, default = "not_held")]
    since: Ms,
}

const NOT_HELD: Ms = Ms::MIN;

fn not_held() -> Ms {
    NOT_HELD
}

impl Default for LevelFilter {
    fn default() -> Self {
        LevelFilter::new(false)
    }
}

impl LevelFilter {
    pub fn new(active: bool) -> Self {
        LevelFilter {
            active,
            since: NOT_HELD,
        }
    }

    fn held_since(&self) -> Option<Ms> {
        (self.since != NOT_HELD).then_some(self.since)
    }

    /// Feeds one sample: `raise` = the value is past the threshold, `clear` = the value is
    /// back past the deadband. Both false = inside the deadband: nothing changes and a
    /// running delay is cancelled.
    pub fn sample(
        &mut self,
        raise: bool,
        clear: bool,
        now: Ms,
        on_delay: Ms,
        off_delay: Ms,
    ) -> Option<Edge> {
        let toward = if self.active { clear } else { raise };
        if !toward {
            self.since = NOT_HELD;
            return None;
        }
        if self.since == NOT_HELD {
            self.since = now;
        }
        self.poll(now, self.since, on_delay, off_delay)
    }

    /// Lets time pass without a sample.
    pub fn tick(&mut self, now: Ms, on_delay: Ms, off_delay: Ms) -> Option<Edge> {
        let since = self.held_since()?;
        self.poll(now, since, on_delay, off_delay)
    }

    /// When a running delay runs out, if one runs.
    pub fn deadline(&self, on_delay: Ms, off_delay: Ms) -> Option<Ms> {
        let since = self.held_since()?;
        Some(since + if self.active { off_delay } else { on_delay })
    }

    fn poll(&mut self, now: Ms, since: Ms, on_delay: Ms, off_delay: Ms) -> Option<Edge> {
        let delay = if self.active { off_delay } else { on_delay };
        if now - since < delay {
            return None;
        }
        let at = since + delay;
        self.since = NOT_HELD;
        self.active = !self.active;
        Some(if self.active {
            Edge::Raised(at)
        } else {
            Edge::Cleared(at)
        })
    }
}

/// Which way a numeric threshold points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Alarm at or above `at`; clears below `at - deadband`.
    High,
    /// Alarm at or below `at`; clears above `at + deadband`.
    Low,
}

impl Direction {
    /// (raise, clear) for a value against a threshold and deadband.
    pub fn compare(self, value: f64, at: f64, deadband: f64) -> (bool, bool) {
        match self {
            Direction::High => (value >= at, value < at - deadband),
            Direction::Low => (value <= at, value > at + deadband),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn feed(filter: &mut LevelFilter, value: f64, now: Ms) -> Option<Edge> {
        let (raise, clear) = Direction::High.compare(value, 300.0, 30.0);
        filter.sample(raise, clear, now, 10_000, 30_000)
    }

    #[test]
    fn value_above_threshold_for_on_delay_raises_at_the_end_of_the_delay() {
        let mut f = LevelFilter::default();
        assert_eq!(feed(&mut f, 310.0, 1_000), None);
        assert_eq!(feed(&mut f, 320.0, 6_000), None);
        assert_eq!(feed(&mut f, 320.0, 12_500), Some(Edge::Raised(11_000)));
        assert!(f.active);
    }

    #[test]
    fn a_dip_below_threshold_restarts_the_on_delay() {
        let mut f = LevelFilter::default();
        feed(&mut f, 310.0, 0);
        feed(&mut f, 290.0, 5_000);
        assert_eq!(feed(&mut f, 310.0, 9_000), None);
        assert_eq!(f.tick(18_999, 10_000, 30_000), None);
        assert_eq!(f.tick(19_000, 10_000, 30_000), Some(Edge::Raised(19_000)));
    }

    #[test]
    fn clearing_needs_the_deadband_and_the_off_delay() {
        let mut f = LevelFilter::new(true);
        assert_eq!(feed(&mut f, 280.0, 0), None, "inside the deadband");
        assert_eq!(f.deadline(10_000, 30_000), None);
        assert_eq!(feed(&mut f, 260.0, 1_000), None);
        assert_eq!(f.deadline(10_000, 30_000), Some(31_000));
        assert_eq!(
            feed(&mut f, 275.0, 20_000),
            None,
            "back inside: off-delay cancelled"
        );
        assert_eq!(feed(&mut f, 250.0, 25_000), None);
        assert_eq!(f.tick(55_000, 10_000, 30_000), Some(Edge::Cleared(55_000)));
    }

    #[test]
    fn low_direction_mirrors_high() {
        assert_eq!(Direction::Low.compare(186.0, 187.0, 2.0), (true, false));
        assert_eq!(Direction::Low.compare(188.0, 187.0, 2.0), (false, false));
        assert_eq!(Direction::Low.compare(189.5, 187.0, 2.0), (false, true));
    }

    proptest! {
        /// Once raised, values that never leave the band between the clear point and the
        /// threshold (inclusive of the threshold itself) never clear it and never raise again.
        #[test]
        fn values_inside_the_deadband_never_clear_or_reraise(
            values in proptest::collection::vec(270.0f64..=330.0, 1..200),
            step in 1i64..5_000,
        ) {
            let mut f = LevelFilter::new(true);
            for (i, v) in values.iter().enumerate() {
                let edge = feed(&mut f, *v, i as i64 * step);
                prop_assert_eq!(edge, None);
                prop_assert!(f.active);
            }
        }

        /// A value that stays above the threshold from `start` raises at exactly
        /// `start + on_delay`, whatever the sampling.
        #[test]
        fn on_delay_is_honoured_to_the_millisecond(
            start in 0i64..1_000_000,
            on_delay in 0i64..120_000,
            gaps in proptest::collection::vec(1i64..7_000, 1..100),
        ) {
            let mut f = LevelFilter::default();
            let mut now = start;
            let mut raised = f.sample(true, false, now, on_delay, 0);
            for gap in gaps {
                if raised.is_some() { break; }
                // Ticks between samples may run out the delay too.
                if let Some(deadline) = f.deadline(on_delay, 0) {
                    if deadline <= now + gap {
                        raised = f.tick(deadline, on_delay, 0);
                        prop_assert_eq!(raised, Some(Edge::Raised(deadline)));
                        break;
                    }
                }
                now += gap;
                raised = f.sample(true, false, now, on_delay, 0);
            }
            if let Some(Edge::Raised(at)) = raised {
                prop_assert_eq!(at, start + on_delay);
            } else {
                prop_assert!(now - start < on_delay);
            }
        }

        /// Same for the off-delay, with samples that arrive late (after the delay ran out).
        #[test]
        fn off_delay_is_honoured_to_the_millisecond_even_when_sampled_late(
            start in 0i64..1_000_000,
            off_delay in 0i64..120_000,
            late in 0i64..60_000,
        ) {
            let mut f = LevelFilter::new(true);
            prop_assert_eq!(f.sample(false, true, start, 0, off_delay), if off_delay == 0 { Some(Edge::Cleared(start)) } else { None });
            if off_delay > 0 {
                let edge = f.sample(false, true, start + off_delay + late, 0, off_delay);
                prop_assert_eq!(edge, Some(Edge::Cleared(start + off_delay)));
            }
        }
    }
}
