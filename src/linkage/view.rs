//! Outputs as the web UI and the API show them, and the words for their states.

use super::*;

/// An output as the web UI and the API show it.
#[derive(Debug, Clone, Serialize)]
pub struct OutputView {
    pub id: String,
    pub name: String,
    pub kind: OutputKind,
    pub park: String,
    pub enterprise: String,
    pub location: String,
    /// The word for its state now: `closed`/`open` for a valve, `running`/`stopped` for a
    /// fan, ...; `unknown` before anything is known, `closing`/... while unconfirmed.
    pub state: String,
    /// What parkguard last commanded (true = operated).
    pub commanded: Option<bool>,
    /// What the device last confirmed.
    pub confirmed: Option<bool>,
    pub confirmed_at_ms: Option<Ms>,
    /// A command is being applied and is not confirmed yet.
    pub pending: bool,
    /// Why the last command is not confirmed after the output's attempts.
    pub failing: Option<String>,
    /// After a restart: the device read otherwise than last commanded.
    pub mismatch: Option<String>,
    /// Alarms (and `manual:<name>`) holding it operated.
    pub holders: Vec<String>,
    /// It can be read back (Modbus); an MQTT output is only ever sent.
    pub readback: bool,
    /// A person must release it (gas valves, power trips).
    pub manual_release_only: bool,
}

impl Linkage {
    pub(super) fn views(&self) -> Vec<OutputView> {
        self.outputs
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let place = &self.interlocks.outputs[i].2;
                let (on, off) = o.config.kind.state_words();
                let state = match (o.pending, o.saved.commanded, o.saved.confirmed) {
                    (true, Some(c), _) => commanding(o.config.kind, c).to_string(),
                    (_, _, Some(true)) => on.to_string(),
                    (_, _, Some(false)) => off.to_string(),
                    _ => "unknown".to_string(),
                };
                OutputView {
                    id: o.config.id.clone(),
                    name: o.config.display_name().to_string(),
                    kind: o.config.kind,
                    park: place.park.clone(),
                    enterprise: place.enterprise.clone(),
                    location: place.location.clone(),
                    state,
                    commanded: o.saved.commanded,
                    confirmed: o.saved.confirmed,
                    confirmed_at_ms: o.saved.confirmed_at_ms,
                    pending: o.pending,
                    failing: o.failing.clone(),
                    mismatch: o.mismatch.clone(),
                    holders: o.saved.holders.keys().cloned().collect(),
                    readback: o.config.modbus.is_some(),
                    manual_release_only: o.config.kind.manual_release_only(),
                }
            })
            .collect()
    }
}

pub(super) fn state_word(kind: OutputKind, operated: bool) -> &'static str {
    let (on, off) = kind.state_words();
    if operated {
        on
    } else {
        off
    }
}

/// The word for a state being taken: `closing`, `opening`, `starting`, ...
pub(super) fn commanding(kind: OutputKind, operate: bool) -> &'static str {
    match (kind, operate) {
        (OutputKind::GasValve, true) => "closing",
        (OutputKind::GasValve, false) => "opening",
        (OutputKind::Fan, true) => "starting",
        (OutputKind::Fan, false) => "stopping",
        (OutputKind::Sounder | OutputKind::Strobe, true) => "switching on",
        (OutputKind::Sounder | OutputKind::Strobe, false) => "switching off",
        (OutputKind::PowerTrip, true) => "tripping",
        (OutputKind::PowerTrip, false) => "restoring",
        (OutputKind::Other, true) => "switching on",
        (OutputKind::Other, false) => "switching off",
    }
}
