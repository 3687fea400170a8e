//! Alarm pushes: which alarm transitions go to which routes, channels and people
//! (`routing`, pure), what the messages say (`message`, pure), how each channel formats and sends
//! them (`channels`), the durable queue of pushes (`queue`), and the task that delivers it
//! (`delivery`).
//!
//! Planning happens in the store's writer thread, inside the transaction that journals the
//! transition, so a push is queued exactly when its journal entry exists, once, even across
//! restarts. Delivery happens in its own tasks; rule evaluation never waits for a receiver.
//!
//! Owns: routing, escalation and reminder timing, message content and channel formats. Must not
//! touch: alarm states (only the rules change them) or the store's schema (`store::alerts`).

pub mod channels;
pub mod delivery;
pub mod message;
pub mod queue;
pub mod routing;

pub use routing::{AlarmInfo, AlertPlan, Delivery, Notice, Router, TimerKind};
