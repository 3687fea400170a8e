//! `[fire]`: how fire alarms are confirmed (火警确认) before they are forwarded.

use serde::Deserialize;

/// The longest an operator may be given to judge a fire: after this, a fire that nobody looked
/// at must be on its way to the fire department.
pub const MAX_CONFIRM_TIMEOUT_S: u64 = 600;

/// `[fire]`: fire alarms (the fire levels of `fire` rules: smoke, gas level 2, arc faults)
/// wait for an operator on the board to confirm a real fire (确认火警) or mark a false alarm
/// (误报) with a reason. Routes with `confirmed_only` and fire-monitoring centres
/// (`[[northbound]]`) receive a fire once it is confirmed, or when nobody judged it in time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FireConfig {
    /// Seconds a fire waits for an operator's verdict before it is treated as confirmed and
    /// forwarded (at most 600). 0: every fire counts as confirmed when it is raised.
    #[serde(default = "default_confirm_timeout_s")]
    pub confirm_timeout_s: u64,
}

impl Default for FireConfig {
    fn default() -> Self {
        FireConfig {
            confirm_timeout_s: default_confirm_timeout_s(),
        }
    }
}

fn default_confirm_timeout_s() -> u64 {
    180
}

pub(super) fn validate_fire(fire: &FireConfig, report: &mut dyn FnMut(String, String)) {
    if fire.confirm_timeout_s > MAX_CONFIRM_TIMEOUT_S {
        report(
            "fire.confirm_timeout_s".into(),
            format!(
                "{} s is longer than {MAX_CONFIRM_TIMEOUT_S} s: a fire nobody looked at must reach the fire department within minutes",
                fire.confirm_timeout_s
            ),
        );
    }
}
