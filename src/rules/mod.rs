//! Rules and the alarm lifecycle, pure: thresholds in time (`threshold`), one alarm's state
//! machine (`alarm`), and the engine binding rules to devices and evaluating readings
//! (`engine`). The task that runs the engine with its store, outbox and pushes is
//! the `rules_task` module.
//!
//! Owns: evaluation. Must not touch: the store, sinks, pushes or the network; depends on the
//! model and the configuration only.

pub mod alarm;
pub mod engine;
pub mod threshold;
