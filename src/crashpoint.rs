//! A test-only crash hook: `PARKGUARD_TEST_CRASH_AT=<point>:<n>` makes the process abort
//! (`std::process::abort`: no destructors, no flush, no acknowledgement sent afterwards, as
//! with SIGKILL) the `n`th time the named point is reached, so that the crash tests
//! (`tests/suite/crash_windows.rs`) land a crash inside a window they name instead of hoping a
//! SIGKILL falls there. Just before aborting, it logs at ERROR
//! `crash point <point> reached (test hook)`, which the tests read back.
//!
//! Points ([`POINTS`]): `outbox_committed_before_ack` (the outbox writer committed a group
//! holding MQTT messages and has not acknowledged them yet), `journal_committed_before_wake`
//! (the rules' store writer committed transitions with their pushes and has not woken the
//! alert delivery yet), `push_delivered_before_record` (a receiver answered 2xx to a push
//! whose delivery is not recorded yet).
//!
//! NEVER SET IN PRODUCTION: it exists for the test suite only (docs/testing.md). The variable
//! is read once, on the first check; unset, a check is one load of a `OnceLock` and one
//! branch. A value naming no known point is refused with an error and arms nothing; an armed
//! hook says so with a warning when it is read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use tracing::{error, warn};

/// The environment variable; an unusual name, so that nothing sets it by accident.
pub const ENV: &str = "PARKGUARD_TEST_CRASH_AT";

pub const OUTBOX_COMMITTED_BEFORE_ACK: &str = "outbox_committed_before_ack";
pub const JOURNAL_COMMITTED_BEFORE_WAKE: &str = "journal_committed_before_wake";
pub const PUSH_DELIVERED_BEFORE_RECORD: &str = "push_delivered_before_record";

/// Every point the hook can be armed at.
pub const POINTS: &[&str] = &[
    OUTBOX_COMMITTED_BEFORE_ACK,
    JOURNAL_COMMITTED_BEFORE_WAKE,
    PUSH_DELIVERED_BEFORE_RECORD,
];

struct Armed {
    point: &'static str,
    nth: u64,
    reached: AtomicU64,
}

static ARMED: OnceLock<Option<Armed>> = OnceLock::new();

fn parse(spec: &str) -> Result<(&'static str, u64), String> {
    let (name, nth) = spec.split_once(':').unwrap_or((spec, "1"));
    let point = POINTS.iter().find(|p| **p == name).ok_or_else(|| {
        format!(
            "unknown crash point `{name}` (known: {})",
            POINTS.join(", ")
        )
    })?;
    match nth.parse::<u64>() {
        Ok(n) if n >= 1 => Ok((point, n)),
        _ => Err(format!("`{nth}` is not a count from 1")),
    }
}

fn armed() -> &'static Option<Armed> {
    ARMED.get_or_init(|| {
        let spec = std::env::var(ENV).ok()?;
        match parse(&spec) {
            Ok((point, nth)) => {
                warn!(point, nth, "{ENV} is set: this process aborts at a crash point (test hook; never in production).");
                Some(Armed {
                    point,
                    nth,
                    reached: AtomicU64::new(0),
                })
            }
            Err(err) => {
                error!("{ENV} ignored: {err}.");
                None
            }
        }
    })
}

/// Reads the variable now (it is read once), so that an armed hook is logged at start.
pub fn arm() {
    armed();
}

/// The process passes `point`: aborts if the hook is armed there and this is its `n`th time.
#[inline]
pub fn reached(point: &'static str) {
    if let Some(armed) = armed() {
        if armed.point == point && armed.reached.fetch_add(1, Ordering::SeqCst) + 1 == armed.nth {
            error!("crash point {point} reached (test hook)");
            std::process::abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_name_a_known_point_and_a_count() {
        assert_eq!(
            parse("outbox_committed_before_ack:3"),
            Ok((OUTBOX_COMMITTED_BEFORE_ACK, 3))
        );
        assert_eq!(
            parse("push_delivered_before_record"),
            Ok((PUSH_DELIVERED_BEFORE_RECORD, 1))
        );
        assert!(parse("outbox:1").is_err());
        assert!(parse("journal_committed_before_wake:0").is_err());
        assert!(parse("journal_committed_before_wake:x").is_err());
    }
}
