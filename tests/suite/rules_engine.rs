//! The rule engine with the shipped default rule set and an injected clock: which transitions
//! come out, and exactly when.

use crate::support;

use std::sync::Arc;

use parkguard::config::{AlarmKind, Config, Severity};
use parkguard::model::alarm::{AlarmEvent, PersistedAlarm};
use parkguard::model::{Quality, Reading, Tags, Value};
use parkguard::rules::alarm::{Action, AlarmState, Command, CommandError, Operator};
use parkguard::rules::engine::{RuleEngine, Target};

const DEVICES: &str = r#"[[devices]]
id = "m1"
location = "l"
profile = "adw300_json"
params = { rated_current_a = 100 }
[[devices]]
id = "d1"
location = "l"
profile = "arcm_combo_detector"
[[devices]]
id = "g1"
location = "l"
profile = "gas_detector_lel"
[[devices]]
id = "s1"
location = "l"
profile = "nb_smoke"
"#;

fn engine(extra: &str) -> (RuleEngine, tempfile::TempDir) {
    let (dir, path) = support::site(&format!(
        "{}{DEVICES}{extra}",
        support::site_header("l", "")
    ));
    let config = Config::load(&path).unwrap_or_else(|p| panic!("{p:#?}"));
    (
        RuleEngine::new(&config, &parkguard::status::device(&config), 0),
        dir,
    )
}

fn reading(device: &str, profile: &str, quantity: &str, value: Value) -> Reading {
    Reading {
        tags: Arc::new(Tags {
            park: "p".into(),
            enterprise: "e".into(),
            location: "l".into(),
            device: device.into(),
            kind: String::new(),
            profile: profile.into(),
            extra: Vec::new(),
        }),
        measurement: Arc::from("m"),
        quantity: Arc::from(quantity),
        value,
        unit: None,
        timestamp_ns: 0,
        quality: Quality::Good,
    }
}

fn leak(value: f64) -> Reading {
    reading("m1", "adw300_json", "leakage", Value::Float(value))
}

/// Feeds `value` at `at_ms` after ticking the clock up to it.
fn feed(engine: &mut RuleEngine, r: Reading, at_ms: i64) -> Vec<AlarmEvent> {
    let mut out = Vec::new();
    engine.tick(at_ms, &mut out);
    evaluate(engine, &[r], at_ms, &mut out);
    out
}

/// Readings as the decoder makes them: stamped with the time they were received (or sent,
/// by a device that says), here `at_ms`.
fn evaluate(engine: &mut RuleEngine, readings: &[Reading], at_ms: i64, out: &mut Vec<AlarmEvent>) {
    evaluate_sent(engine, readings, at_ms, at_ms, out);
}

/// Readings the device stamped `sent_ms`, received at `at_ms`.
fn evaluate_sent(
    engine: &mut RuleEngine,
    readings: &[Reading],
    sent_ms: i64,
    at_ms: i64,
    out: &mut Vec<AlarmEvent>,
) {
    let stamped: Vec<Reading> = readings
        .iter()
        .map(|r| Reading {
            timestamp_ns: sent_ms * 1_000_000,
            ..r.clone()
        })
        .collect();
    engine.on_readings(&stamped, at_ms, out);
}

fn summary(events: &[AlarmEvent]) -> Vec<(i64, &'static str, Severity)> {
    events
        .iter()
        .map(|e| (e.at_ms, e.action.as_str(), e.severity))
        .collect()
}

#[test]
fn residual_current_ramp_gives_pre_alarm_alarm_critical_and_clear_at_the_delays() {
    let (mut engine, _dir) = engine("");
    let mut events = Vec::new();
    // One reading a second: 100 mA for 5 s, 250 for 15 s, 350 for 15 s, 600 for 15 s, then
    // back to 100 for 60 s.
    let mut t = 0;
    for (value, seconds) in [
        (100.0, 5),
        (250.0, 15),
        (350.0, 15),
        (600.0, 15),
        (100.0, 60),
    ] {
        for _ in 0..seconds {
            events.extend(feed(&mut engine, leak(value), t));
            t += 1000;
        }
    }
    let r1: Vec<_> = events
        .iter()
        .filter(|e| e.rule.as_ref() == "R1")
        .cloned()
        .collect();
    // R1: 200/300/500 mA, on-delay 10 s, off-delay 30 s, deadband 30 mA. 250 arrives at 5 s,
    // 350 at 20 s, 600 at 35 s, 100 at 50 s.
    assert_eq!(
        summary(&r1),
        vec![
            (15_000, "raised", Severity::Low),
            (30_000, "escalated", Severity::High),
            (45_000, "escalated", Severity::Critical),
            (80_000, "cleared", Severity::Critical),
        ],
        "{r1:#?}"
    );
    assert_eq!(r1[0].kind, AlarmKind::PreAlarm);
    assert_eq!(r1[2].kind, AlarmKind::Alarm);
    assert_eq!(r1[2].threshold, Some(500.0));
    assert_eq!(r1[3].state, AlarmState::ReturnedUnacknowledged);
}

#[test]
fn detector_ct_open_bit_is_a_fault_not_an_alarm() {
    let (mut engine, _dir) = engine("");
    let events = feed(
        &mut engine,
        reading("d1", "arcm_combo_detector", "ct_open", Value::Bool(true)),
        1000,
    );
    let fault: Vec<_> = events.iter().filter(|e| e.rule.as_ref() == "R14").collect();
    assert_eq!(fault.len(), 1, "{events:#?}");
    assert_eq!(fault[0].kind, AlarmKind::Fault);
    assert_eq!(fault[0].severity, Severity::Medium);
    assert_eq!(&*fault[0].key, "R14/d1/ct_open");
    assert!(events.iter().all(|e| e.kind != AlarmKind::Alarm));
}

#[test]
fn a_device_never_seen_or_gone_silent_goes_offline_after_its_deadline() {
    let (mut engine, _dir) = engine("");
    // adw300_json declares a 60 s heartbeat: offline after 2 x 60 s + 600 s = 720 s.
    let mut out = Vec::new();
    engine.tick(719_999, &mut out);
    assert!(out.iter().all(|e| e.key.as_ref() != "R17/m1"), "{out:#?}");
    engine.tick(725_000, &mut out);
    let offline: Vec<_> = out.iter().filter(|e| e.key.as_ref() == "R17/m1").collect();
    assert_eq!(offline.len(), 1);
    assert_eq!(offline[0].at_ms, 720_000, "stamped at the deadline");
    assert_eq!(offline[0].kind, AlarmKind::Fault);
    // It reports: the fault clears; then silence again counts from the last reading.
    let back = feed(&mut engine, leak(50.0), 800_000);
    assert!(back
        .iter()
        .any(|e| e.key.as_ref() == "R17/m1" && e.action == Action::Cleared));
    let mut out = Vec::new();
    engine.tick(800_000 + 719_999, &mut out);
    assert!(out.iter().all(|e| e.key.as_ref() != "R17/m1"));
    engine.tick(800_000 + 720_000, &mut out);
    assert!(out
        .iter()
        .any(|e| e.key.as_ref() == "R17/m1" && e.action == Action::Raised));
}

#[test]
fn comm_error_readings_raise_communication_lost_and_good_ones_clear_it() {
    let (mut engine, _dir) = engine("");
    let mut lost = reading("d1", "arcm_combo_detector", "leak", Value::Int(0));
    lost.quality = Quality::CommError;
    let events = feed(&mut engine, lost, 1000);
    assert!(events
        .iter()
        .any(|e| e.key.as_ref() == "R16/d1" && e.action == Action::Raised));
    assert!(
        events.iter().all(|e| e.rule.as_ref() != "R1"),
        "no value, no threshold alarm"
    );
    let events = feed(
        &mut engine,
        reading("d1", "arcm_combo_detector", "leak", Value::Int(20)),
        2000,
    );
    assert!(events
        .iter()
        .any(|e| e.key.as_ref() == "R16/d1" && e.action == Action::Cleared));
}

#[test]
fn latched_gas_level_2_needs_the_value_back_and_an_operator_reset() {
    let (mut engine, _dir) = engine("");
    let gas = |v: f64| reading("g1", "gas_detector_lel", "lel", Value::Float(v));
    let mut events = feed(&mut engine, gas(60.0), 0);
    events.extend(feed(&mut engine, gas(60.0), 3_000));
    let raised = events
        .iter()
        .find(|e| e.rule.as_ref() == "R11")
        .expect("raised");
    assert_eq!(raised.severity, Severity::Critical);
    assert!(raised.alarm.latched);
    let key = Target::Alarm("R11/g1/lel".into());
    let operator = Operator {
        name: "wang".into(),
        comment: Some("valve closed".into()),
    };
    let mut out = Vec::new();
    assert_eq!(
        engine.command(&key, &Command::Reset, &operator, 3_900, &mut out),
        Err(CommandError::FireVerdictRequired),
        "a fire nobody judged is not reset"
    );
    engine
        .command(&key, &Command::ConfirmFire, &operator, 3_950, &mut out)
        .expect("confirm");
    assert_eq!(
        engine.command(&key, &Command::Reset, &operator, 4_000, &mut out),
        Err(CommandError::ConditionPresent)
    );
    engine
        .command(&key, &Command::Acknowledge, &operator, 5_000, &mut out)
        .expect("acknowledge");
    // The gas clears (below 50 - 2 for 30 s) but the alarm holds.
    for t in (10_000..=60_000).step_by(1000) {
        out.extend(feed(&mut engine, gas(0.0), t));
    }
    let view = engine.alarm("R11/g1/lel").expect("alarm");
    assert_eq!(
        view.state,
        AlarmState::Acknowledged,
        "latched: still active"
    );
    assert!(out.iter().any(|e| e.action == Action::ConditionCleared));
    engine
        .command(&key, &Command::Reset, &operator, 61_000, &mut out)
        .expect("reset");
    let reset = out.last().expect("reset event");
    assert_eq!(reset.action, Action::Reset);
    assert_eq!(reset.state, AlarmState::Normal);
    assert_eq!(
        reset.operator.as_ref().map(|o| o.name.as_str()),
        Some("wang")
    );
    assert!(engine.alarms().iter().all(|a| a.key != "R11/g1/lel"));
}

#[test]
fn smoke_fire_alarm_is_critical_and_latched_and_a_test_press_is_a_test() {
    let (mut engine, _dir) = engine("");
    let event = |e: &str| reading("s1", "nb_smoke", "event", Value::Text(Arc::from(e)));
    let events = feed(&mut engine, event("test"), 0);
    let test: Vec<_> = events
        .iter()
        .filter(|e| e.action == Action::Raised)
        .collect();
    assert_eq!(test.len(), 1, "{events:#?}");
    assert_eq!(test[0].kind, AlarmKind::Test);
    let events = feed(&mut engine, event("alarm"), 1000);
    let fire = events
        .iter()
        .find(|e| e.rule.as_ref() == "R13")
        .expect("fire alarm");
    assert_eq!(
        (fire.severity, fire.kind),
        (Severity::Critical, AlarmKind::Alarm)
    );
    // Neither a heartbeat nor a test press nor a silenced sounder ends a fire alarm: the
    // detector will not send `alarm` again, so only its explicit clear does.
    for (at, quiet) in [(2000, "heartbeat"), (2500, "test")] {
        let events = feed(&mut engine, event(quiet), at);
        assert!(
            !events.iter().any(|e| e.rule.as_ref() == "R13"),
            "{quiet}: {events:#?}"
        );
    }
    let events = feed(&mut engine, event("silenced"), 3000);
    assert!(events
        .iter()
        .any(|e| e.rule.as_ref() == "R13" && e.action == Action::Silenced));
    let alarm = engine.alarm("R13/s1/event").expect("alarm");
    assert!(alarm.silenced);
    assert_eq!(alarm.state, AlarmState::Unacknowledged);
    let operator = Operator {
        name: "wang".into(),
        comment: None,
    };
    let target = Target::Alarm("R13/s1/event".into());
    let mut out = Vec::new();
    engine
        .command(&target, &Command::ConfirmFire, &operator, 3400, &mut out)
        .expect("confirm");
    assert_eq!(
        engine.command(&target, &Command::Reset, &operator, 3500, &mut out),
        Err(CommandError::ConditionPresent),
        "reset refused while the detector is in alarm"
    );
    let shelve = Command::Shelve {
        until_ms: 100_000,
        reason: "noisy".into(),
    };
    assert_eq!(
        engine.command(&target, &shelve, &operator, 3600, &mut out),
        Err(CommandError::NotShelvable),
        "a fire alarm is never shelved"
    );
    // The explicit clear ends the condition; the latch holds until reset.
    let events = feed(&mut engine, event("alarm_clear"), 4000);
    assert!(events
        .iter()
        .any(|e| e.rule.as_ref() == "R13" && e.action == Action::ConditionCleared));
    engine
        .command(&target, &Command::Reset, &operator, 4500, &mut out)
        .expect("reset once cleared");
}

#[test]
fn site_overrides_change_thresholds_by_scope_and_can_switch_a_rule_off() {
    let (mut engine, _dir) = engine(
        "[[rule_overrides]]\nrule = \"R1\"\nat = { low = 400 }\n\
         [[rule_overrides]]\nrule = \"R1\"\ndevice = \"m1\"\nat = { low = 150 }\non_delay_s = 0\n\
         [[rule_overrides]]\nrule = \"R11\"\nlocation = \"l\"\nenabled = false\n",
    );
    let events = feed(&mut engine, leak(160.0), 0);
    assert_eq!(
        summary(&events),
        vec![(0, "raised", Severity::Low)],
        "device override wins"
    );
    let events = feed(
        &mut engine,
        reading("g1", "gas_detector_lel", "lel", Value::Float(90.0)),
        1000,
    );
    assert!(events.is_empty(), "R11 is off at location l: {events:#?}");
}

#[test]
fn overcurrent_scales_by_the_devices_rated_current() {
    let (mut engine, _dir) = engine("");
    let ia = |v: f64| reading("m1", "adw300_json", "ia", Value::Float(v));
    let mut events = Vec::new();
    for t in (0..=10_000).step_by(1000) {
        events.extend(feed(&mut engine, ia(135.0), t));
    }
    // 135 A on a 100 A circuit: >= 1.3 In, critical after its own 10 s on-delay.
    let r7: Vec<_> = events.iter().filter(|e| e.rule.as_ref() == "R7").collect();
    assert_eq!(r7.len(), 1, "{events:#?}");
    assert_eq!((r7[0].at_ms, r7[0].severity), (10_000, Severity::Critical));
    assert_eq!(r7[0].threshold, Some(130.0));
}

#[test]
fn hottest_probe_and_phase_loss_are_derived_per_device() {
    let (mut engine, _dir) = engine("");
    let m = |q: &str, v: f64| reading("m1", "adw300_json", q, Value::Float(v));
    let mut events = Vec::new();
    for t in (0..=10_000).step_by(1000) {
        let batch = [
            m("t1", 40.0),
            m("t2", 75.0),
            m("ua", 230.0),
            m("ub", 20.0),
            m("uc", 231.0),
        ];
        engine.tick(t, &mut events);
        evaluate(&mut engine, &batch, t, &mut events);
    }
    let temp = events
        .iter()
        .find(|e| e.key.as_ref() == "R2/m1")
        .expect("R2 on the max");
    assert_eq!(temp.severity, Severity::High);
    assert_eq!(
        temp.value,
        Some(parkguard::model::alarm::Observed::Number(75.0))
    );
    let loss = events
        .iter()
        .find(|e| e.key.as_ref() == "R6/m1")
        .expect("phase loss");
    assert_eq!(loss.at_ms, 3_000);
}

#[test]
fn more_than_ten_new_alarms_in_ten_minutes_start_a_flood_and_chatter_is_flagged() {
    let (mut engine, _dir) = engine("[[rule_overrides]]\nrule = \"R14\"\noff_delay_s = 0\n");
    let mut events = Vec::new();
    // The CT-open bit toggling: 6 activations within a minute.
    for k in 0..6 {
        let t = k * 5_000;
        events.extend(feed(
            &mut engine,
            reading("d1", "arcm_combo_detector", "ct_open", Value::Bool(true)),
            t,
        ));
        events.extend(feed(
            &mut engine,
            reading("d1", "arcm_combo_detector", "ct_open", Value::Bool(false)),
            t + 2_000,
        ));
    }
    assert!(events
        .iter()
        .any(|e| e.action == Action::ChatterFlagged && e.key.as_ref() == "R14/d1/ct_open"));
    // Other bits raise more alarms in the same park.
    for (k, bit) in [
        "ct_short",
        "t1_probe_fault",
        "t2_probe_fault",
        "t3_probe_fault",
        "t4_probe_fault",
        "arc_alarm",
    ]
    .iter()
    .enumerate()
    {
        events.extend(feed(
            &mut engine,
            reading("d1", "arcm_combo_detector", bit, Value::Bool(true)),
            40_000 + k as i64,
        ));
    }
    let floods: Vec<_> = events
        .iter()
        .filter(|e| e.key.as_ref() == "flood/p")
        .collect();
    assert_eq!(floods.len(), 1, "{:#?}", summary(&events));
    assert_eq!(floods[0].action, Action::Raised);
    assert_eq!(engine.floods(), vec!["p".to_string()]);
    let mut out = Vec::new();
    engine.tick(40_000 + 11 * 60_000, &mut out);
    assert!(out
        .iter()
        .any(|e| e.key.as_ref() == "flood/p" && e.action == Action::Cleared));
}

#[test]
fn a_restored_active_alarm_is_not_raised_again_and_clears_when_the_value_returns() {
    let (mut engine, dir) = engine("");
    let mut events = Vec::new();
    for t in (0..=10_000).step_by(1000) {
        events.extend(feed(&mut engine, leak(350.0), t));
    }
    let raised = events
        .iter()
        .rfind(|e| e.rule.as_ref() == "R1")
        .expect("raised");
    let persisted = PersistedAlarm {
        alarm: raised.alarm.clone(),
        filters: raised.filters.clone(),
    };
    // A new engine, as after a restart.
    let config = Config::load(&dir.path().join("site.toml")).expect("config");
    let mut engine = RuleEngine::new(&config, &parkguard::status::device(&config), 100_000);
    let retired = engine.restore(
        vec![
            ("R1/m1/leakage".to_string(), persisted.clone()),
            ("R99/gone".to_string(), persisted),
        ],
        100_000,
    );
    assert_eq!(retired.len(), 1);
    assert_eq!(retired[0].action, Action::Retired);
    let mut events = Vec::new();
    for t in (100_000..=120_000).step_by(1000) {
        events.extend(feed(&mut engine, leak(350.0), t));
    }
    assert!(
        events.iter().all(|e| e.rule.as_ref() != "R1"),
        "not raised twice: {events:#?}"
    );
    for t in (121_000..=160_000).step_by(1000) {
        events.extend(feed(&mut engine, leak(100.0), t));
    }
    let r1: Vec<_> = events.iter().filter(|e| e.rule.as_ref() == "R1").collect();
    assert_eq!(r1.len(), 1);
    assert_eq!((r1[0].action, r1[0].at_ms), (Action::Cleared, 151_000));
}

#[test]
fn commands_need_an_operator_and_a_known_alarm() {
    let (mut engine, _dir) = engine("");
    let mut out = Vec::new();
    assert_eq!(
        engine.command(
            &Target::Alarm("R1/m1/leakage".into()),
            &Command::Acknowledge,
            &Operator::default(),
            0,
            &mut out
        ),
        Err(CommandError::OperatorRequired)
    );
    assert!(matches!(
        engine.command(
            &Target::Alarm("nope".into()),
            &Command::Acknowledge,
            &Operator::system(),
            0,
            &mut out
        ),
        Err(CommandError::UnknownAlarm(_))
    ));
    // Maintenance mode for a whole device.
    engine
        .command(
            &Target::Device("g1".into()),
            &Command::Suppress {
                until_ms: 3_600_000,
            },
            &Operator::system(),
            0,
            &mut out,
        )
        .expect("suppress device");
    let events = feed(
        &mut engine,
        reading("g1", "gas_detector_lel", "lel", Value::Float(30.0)),
        1000,
    );
    let mut later = Vec::new();
    for t in (2_000..=5_000).step_by(1000) {
        later.extend(feed(
            &mut engine,
            reading("g1", "gas_detector_lel", "lel", Value::Float(30.0)),
            t,
        ));
    }
    let raised = events
        .iter()
        .chain(&later)
        .find(|e| e.action == Action::Raised)
        .expect("raised");
    assert!(
        !raised.annunciated,
        "suppressed by maintenance: journaled, not annunciated"
    );
}

#[test]
fn journal_verify_finds_an_edited_a_removed_and_a_truncated_entry() {
    use parkguard::store::Store;
    let (mut engine, dir) = engine("");
    let mut events = Vec::new();
    // Raised, escalated, cleared: three entries.
    for t in (0..=90_000).step_by(1000) {
        let v = match t {
            0..20_000 => 350.0,
            20_000..40_000 => 600.0,
            _ => 50.0,
        };
        events.extend(feed(&mut engine, leak(v), t));
    }
    assert_eq!(events.len(), 3, "{events:#?}");
    let path = dir.path().join("journal.db");
    let mut store = Store::open(&path).expect("store");
    for e in &events {
        store.record(std::slice::from_ref(e), None).expect("record");
    }
    let ok = store.verify_journal().expect("verify");
    assert_eq!((ok.entries as usize, ok.problem), (events.len(), None));
    let db = store.connection();
    db.execute(
        "UPDATE journal SET message = 'nothing happened' WHERE seq = 2",
        [],
    )
    .expect("edit");
    let edited = store.verify_journal().expect("verify");
    assert_eq!(
        edited.problem.map(|p| p.0),
        Some(2),
        "the edited entry is named"
    );
    // A removed entry in the middle breaks the sequence.
    let mut store = Store::open(&dir.path().join("journal2.db")).expect("store");
    store.record(&events, None).expect("record");
    store
        .connection()
        .execute("DELETE FROM journal WHERE seq = 2", [])
        .expect("delete");
    assert_eq!(
        store.verify_journal().expect("verify").problem.map(|p| p.0),
        Some(2)
    );
    // A removed last entry leaves the chain whole; the head still names it.
    let mut store3 = Store::open(&dir.path().join("journal3.db")).expect("store");
    store3.record(&events, None).expect("record");
    let last = events.len() as i64;
    store3
        .connection()
        .execute("DELETE FROM journal WHERE seq = ?1", [last])
        .expect("delete last");
    assert!(
        store3.verify_journal().expect("verify").problem.is_some(),
        "a removed last entry is found by the head"
    );
}

#[test]
fn chatter_of_a_delayed_rule_is_flagged_and_cleared_after_a_calm_period() {
    // R1 needs 10 s above 200 mA to raise and 30 s below to clear: a cycle takes 40 s, so
    // four activations can never fit in one minute. The window fits the rule: 4 cycles.
    let (mut engine, _dir) = engine("");
    let mut events = Vec::new();
    let mut t = 0;
    for _ in 0..4 {
        for _ in 0..11 {
            events.extend(feed(&mut engine, leak(250.0), t));
            t += 1_000;
        }
        for _ in 0..31 {
            events.extend(feed(&mut engine, leak(20.0), t));
            t += 1_000;
        }
    }
    let raises = events
        .iter()
        .filter(|e| e.key.as_ref() == "R1/m1/leakage" && e.action == Action::Raised)
        .count();
    assert_eq!(raises, 4, "{:#?}", summary(&events));
    assert!(
        events.iter().any(|e| e.action == Action::ChatterFlagged),
        "four activations in {} s of a 40 s-cycle rule are chatter",
        t / 1000
    );
    assert!(engine.alarm("R1/m1/leakage").expect("alarm").chattering);
    // Calm for two windows (2 x 160 s): no longer flagged, the deadband back to normal.
    let mut out = Vec::new();
    engine.tick(t + 2 * 160_000 + 1_000, &mut out);
    assert!(
        out.iter().any(|e| e.action == Action::ChatterCleared),
        "{:#?}",
        summary(&out)
    );
    assert!(!engine.alarm("R1/m1/leakage").expect("alarm").chattering);
}

#[test]
fn a_latched_gas_alarm_keeps_level_2_when_the_gas_returns_only_to_a_pre_alarm() {
    let (mut engine, _dir) = engine("");
    let lel = |v: f64| reading("g1", "gas_detector_lel", "lel", Value::Float(v));
    for t in (0..=4_000).step_by(1000) {
        feed(&mut engine, lel(55.0), t);
    }
    let key = "R11/g1/lel";
    assert_eq!(
        engine.alarm(key).expect("alarm").severity,
        Some(Severity::Critical)
    );
    // Gone (30 s off-delay), then back at 12 %LEL: still the level 2 alarm, not a pre-alarm.
    for t in (5_000..=40_000).step_by(1000) {
        feed(&mut engine, lel(0.0), t);
    }
    for t in (41_000..=50_000).step_by(1000) {
        feed(&mut engine, lel(12.0), t);
    }
    let alarm = engine.alarm(key).expect("alarm");
    assert_eq!(alarm.severity, Some(Severity::Critical), "{alarm:?}");
    assert!(alarm.latched);
}

#[test]
fn an_override_of_a_scaled_rule_is_in_the_rules_own_units() {
    // R7 speaks multiples of the rated current (100 A here): an override `critical = 1.1`
    // means 110 A, not 1.1 A.
    let (mut engine, _dir) =
        engine("[[rule_overrides]]\nrule = \"R7\"\ndevice = \"m1\"\nat = { critical = 1.1 }\n");
    let ia = |v: f64| reading("m1", "adw300_json", "ia", Value::Float(v));
    let mut events = Vec::new();
    for t in (0..=12_000).step_by(1000) {
        events.extend(feed(&mut engine, ia(105.0), t));
    }
    assert!(
        !events
            .iter()
            .any(|e| e.rule.as_ref() == "R7" && e.severity == Severity::Critical),
        "105 A is below 1.1 In: {:#?}",
        summary(&events)
    );
    for t in (13_000..=25_000).step_by(1000) {
        events.extend(feed(&mut engine, ia(115.0), t));
    }
    let critical = events
        .iter()
        .find(|e| e.rule.as_ref() == "R7" && e.severity == Severity::Critical)
        .expect("115 A is over 1.1 In");
    let threshold = critical.threshold.expect("threshold");
    assert!((threshold - 110.0).abs() < 1e-9, "{threshold}");
}

#[test]
fn span_gas_during_calibration_is_suppressed_by_design_and_comes_back_if_still_there() {
    let (mut engine, _dir) = engine("");
    let g = |q: &str, v: Value| reading("g1", "gas_detector_lel", q, v);
    let text = |s: &str| Value::Text(Arc::from(s));
    let mut events = Vec::new();
    // The calibration state arrives in the same message as the span gas, after it.
    for t in (0..=4_000).step_by(1000) {
        engine.tick(t, &mut events);
        evaluate(
            &mut engine,
            &[
                g("lel", Value::Float(55.0)),
                g("status", text("calibration")),
            ],
            t,
            &mut events,
        );
    }
    let raised: Vec<_> = events
        .iter()
        .filter(|e| e.key.as_ref() == "R11/g1/lel" && e.action == Action::Raised)
        .collect();
    assert_eq!(raised.len(), 1, "{:#?}", summary(&events));
    assert!(
        !raised[0].annunciated,
        "evaluated and journaled, not pushed"
    );
    assert_eq!(
        engine
            .alarm("R11/g1/lel")
            .expect("alarm")
            .maintenance
            .as_deref(),
        Some("calibration")
    );
    // Calibration ends with the gas still there: annunciated again, to be acknowledged.
    let mut out = Vec::new();
    engine.tick(5_000, &mut out);
    evaluate(
        &mut engine,
        &[g("lel", Value::Float(55.0)), g("status", text("normal"))],
        5_000,
        &mut out,
    );
    assert!(
        out.iter()
            .any(|e| e.key.as_ref() == "R11/g1/lel" && e.action == Action::Reannunciated),
        "{:#?}",
        summary(&out)
    );
    assert_eq!(
        engine.alarm("R11/g1/lel").expect("alarm").state,
        AlarmState::Unacknowledged
    );
}

#[test]
fn the_detectors_own_alarm_raises_the_rule_alarm_and_the_earlier_of_the_two_wins() {
    let (mut engine, _dir) = engine("");
    let d = |q: &str, v: Value| reading("d1", "arcm_combo_detector", q, v);
    // 210 mA: under the gateway's 300 mA, but the detector's own set-point (200 mA) says alarm
    // and its red lamp is on.
    let mut events = Vec::new();
    engine.tick(0, &mut events);
    evaluate(
        &mut engine,
        &[
            d("leak", Value::Float(210.0)),
            d("leak_alarm", Value::Bool(true)),
        ],
        0,
        &mut events,
    );
    let raised = events
        .iter()
        .find(|e| e.key.as_ref() == "R1/d1/leak" && e.action == Action::Raised)
        .expect("raised at once by the device's decision");
    assert_eq!(raised.severity, Severity::High);
    // The gateway's threshold passes the critical level later: it escalates.
    let mut events = Vec::new();
    for t in (1_000..=12_000).step_by(1000) {
        engine.tick(t, &mut events);
        evaluate(
            &mut engine,
            &[
                d("leak", Value::Float(520.0)),
                d("leak_alarm", Value::Bool(true)),
            ],
            t,
            &mut events,
        );
    }
    assert!(events
        .iter()
        .any(|e| e.key.as_ref() == "R1/d1/leak" && e.severity == Severity::Critical));
    // The value falls; the lamp stays on: still an alarm (high). The lamp goes off: clears.
    let mut events = Vec::new();
    for t in (13_000..=50_000).step_by(1000) {
        engine.tick(t, &mut events);
        evaluate(
            &mut engine,
            &[
                d("leak", Value::Float(20.0)),
                d("leak_alarm", Value::Bool(true)),
            ],
            t,
            &mut events,
        );
    }
    let alarm = engine.alarm("R1/d1/leak").expect("alarm");
    assert_eq!(
        alarm.severity,
        Some(Severity::High),
        "{:#?}",
        summary(&events)
    );
    assert_ne!(alarm.state, AlarmState::ReturnedUnacknowledged);
    let mut events = Vec::new();
    engine.tick(51_000, &mut events);
    evaluate(
        &mut engine,
        &[
            d("leak", Value::Float(20.0)),
            d("leak_alarm", Value::Bool(false)),
        ],
        51_000,
        &mut events,
    );
    assert!(
        events
            .iter()
            .any(|e| e.key.as_ref() == "R1/d1/leak" && e.action == Action::Cleared),
        "{:#?}",
        summary(&events)
    );
}

#[test]
fn the_gas_detectors_own_level_2_raises_the_latched_critical_gas_alarm() {
    let (mut engine, _dir) = engine("");
    let g = |q: &str, v: Value| reading("g1", "gas_detector_lel", q, v);
    let mut events = Vec::new();
    engine.tick(0, &mut events);
    evaluate(
        &mut engine,
        &[
            g("lel", Value::Float(8.0)),
            g("status", Value::Text(Arc::from("high_alarm"))),
        ],
        0,
        &mut events,
    );
    let alarm = engine.alarm("R11/g1/lel").expect("alarm");
    assert_eq!(alarm.severity, Some(Severity::Critical));
    assert!(alarm.latched, "level 2 latches, whoever decided it");
}

#[test]
fn span_gas_that_latched_during_calibration_is_not_annunciated_when_calibration_ends() {
    let (mut engine, _dir) = engine("");
    let g = |q: &str, v: Value| reading("g1", "gas_detector_lel", q, v);
    let text = |s: &str| Value::Text(Arc::from(s));
    let mut events = Vec::new();
    for t in (0..=4_000).step_by(1000) {
        engine.tick(t, &mut events);
        evaluate(
            &mut engine,
            &[
                g("status", text("calibration")),
                g("lel", Value::Float(55.0)),
            ],
            t,
            &mut events,
        );
    }
    // The span gas is removed (30 s off-delay), then calibration ends.
    for t in (5_000..=40_000).step_by(1000) {
        engine.tick(t, &mut events);
        evaluate(
            &mut engine,
            &[
                g("status", text("calibration")),
                g("lel", Value::Float(0.0)),
            ],
            t,
            &mut events,
        );
    }
    let mut out = Vec::new();
    engine.tick(41_000, &mut out);
    evaluate(
        &mut engine,
        &[g("status", text("normal")), g("lel", Value::Float(0.0))],
        41_000,
        &mut out,
    );
    assert!(
        !out.iter().any(|e| e.action == Action::Reannunciated),
        "no fire-department push for the span gas: {:#?}",
        summary(&out)
    );
}

/// Residual current on m1, stamped by the device at `sent_ms` and received at `received_ms`.
fn replayed(
    engine: &mut RuleEngine,
    ma: f64,
    sent_ms: i64,
    received_ms: i64,
    out: &mut Vec<AlarmEvent>,
) {
    engine.tick(received_ms, out);
    evaluate_sent(engine, &[leak(ma)], sent_ms, received_ms, out);
}

#[test]
fn a_condition_that_held_during_an_outage_is_raised_late_with_when_it_began() {
    let (mut engine, _dir) = engine("");
    let mut out = Vec::new();
    replayed(&mut engine, 50.0, 0, 0, &mut out);
    // The gateway was away from 60 s to 600 s; the broker replays what m1 sent meanwhile, 10 ms
    // apart: 350 mA from 100 s on (R1: alarm at 300 mA after 10 s).
    let back = 600_000;
    for (n, sent) in (100_000..=200_000).step_by(10_000).enumerate() {
        let received = back + n as i64 * 10;
        replayed(&mut engine, 350.0, sent, received, &mut out);
    }
    let raised: Vec<&AlarmEvent> = out.iter().filter(|e| e.action == Action::Raised).collect();
    assert_eq!(raised.len(), 1, "{:?}", summary(&out));
    let raised = raised[0];
    assert_eq!(raised.severity, Severity::High);
    assert_eq!(
        raised.late_began_ms,
        Some(100_000),
        "when the condition began"
    );
    assert!(
        (back..back + 200).contains(&raised.at_ms),
        "raised during the replay, not an on-delay after it: {}",
        raised.at_ms
    );
    assert!(
        raised.message.contains("reported late"),
        "{}",
        raised.message
    );
    // Live again: the next message is on time and nothing is late any more.
    out.clear();
    replayed(&mut engine, 600.0, back + 5_000, back + 5_000, &mut out);
    replayed(&mut engine, 600.0, back + 15_000, back + 15_000, &mut out);
    let escalated: Vec<&AlarmEvent> = out
        .iter()
        .filter(|e| e.action == Action::Escalated)
        .collect();
    assert_eq!(escalated.len(), 1, "{:?}", summary(&out));
    assert_eq!(escalated[0].at_ms, back + 15_000);
    assert_eq!(escalated[0].late_began_ms, None);
}

#[test]
fn a_condition_that_came_and_went_during_an_outage_is_journaled_raised_and_cleared() {
    let (mut engine, _dir) = engine("");
    let mut out = Vec::new();
    replayed(&mut engine, 50.0, 0, 0, &mut out);
    let back = 900_000;
    // 350 mA from 100 s to 150 s, then 50 mA until 300 s (R1 clears after 30 s below 270 mA).
    let sent: Vec<(i64, f64)> = (100_000..=300_000)
        .step_by(10_000)
        .map(|t| (t, if t <= 150_000 { 350.0 } else { 50.0 }))
        .collect();
    for (n, (t, ma)) in sent.iter().enumerate() {
        replayed(&mut engine, *ma, *t, back + n as i64 * 10, &mut out);
    }
    // (m1's silence meanwhile was an offline alarm, R17, raised and cleared on the gateway's
    // clock.)
    out.retain(|e| e.rule.as_ref() == "R1");
    let actions: Vec<(&str, Option<i64>)> = out
        .iter()
        .map(|e| (e.action.as_str(), e.late_began_ms))
        .collect();
    assert_eq!(
        actions,
        vec![("raised", Some(100_000)), ("cleared", Some(160_000))],
        "{:?}",
        summary(&out)
    );
    assert!(out
        .iter()
        .all(|e| e.at_ms >= back && e.at_ms < back + 1_000));
}

#[test]
fn the_gateways_clock_running_on_between_replayed_messages_does_not_end_a_delay() {
    let (mut engine, _dir) = engine("");
    let mut out = Vec::new();
    replayed(&mut engine, 50.0, 0, 0, &mut out);
    let back = 600_000;
    // 350 mA for 5 s only: shorter than R1's on-delay, though its deadline (110 s, device
    // time) is long past on the gateway's clock.
    replayed(&mut engine, 350.0, 100_000, back, &mut out);
    engine.tick(back + 1, &mut out);
    assert!(out.is_empty(), "{:?}", summary(&out));
    replayed(&mut engine, 50.0, 105_000, back + 2, &mut out);
    engine.tick(back + 120_000, &mut out);
    assert!(out.is_empty(), "{:?}", summary(&out));
    // The same 5 s received live is nothing either; 350 mA held live is raised on time.
    replayed(&mut engine, 350.0, back + 200_000, back + 200_000, &mut out);
    engine.tick(back + 209_999, &mut out);
    assert!(out.is_empty(), "{:?}", summary(&out));
    engine.tick(back + 210_000, &mut out);
    assert_eq!(
        summary(&out),
        vec![(back + 210_000, "raised", Severity::High)]
    );
    assert_eq!(out[0].late_began_ms, None);
}

#[test]
fn the_last_replayed_condition_runs_on_at_the_gateways_pace_and_timestamps_too_old_are_not_believed(
) {
    let (mut behind, _behind_dir) = engine("");
    let (mut engine, _dir) = engine("");
    let mut out = Vec::new();
    replayed(&mut engine, 50.0, 0, 0, &mut out);
    let back = 600_000;
    // The replay ends 4 s into a 350 mA condition: the device's clock runs on from there.
    replayed(&mut engine, 350.0, 100_000, back, &mut out);
    replayed(&mut engine, 350.0, 104_000, back + 1, &mut out);
    engine.tick(back + 5_999, &mut out);
    assert!(out.is_empty(), "{:?}", summary(&out));
    engine.tick(back + 6_001, &mut out);
    assert_eq!(out.len(), 1, "{:?}", summary(&out));
    assert_eq!(out[0].action, Action::Raised);
    assert_eq!(out[0].late_began_ms, Some(100_000));
    // A device clock two days behind is not believed: judged on arrival, not late.
    let mut out = Vec::new();
    let now = 3 * 86_400_000;
    replayed(&mut behind, 350.0, 1_000, now, &mut out);
    replayed(&mut behind, 350.0, 2_000, now + 10_000, &mut out);
    out.retain(|e| e.rule.as_ref() == "R1");
    assert_eq!(
        summary(&out),
        vec![(now + 10_000, "raised", Severity::High)]
    );
    assert_eq!(out[0].late_began_ms, None);
}

#[test]
fn residual_current_monitor_loop_states_are_faults_or_the_monitors_own_alarm() {
    let (mut engine, _dir) =
        engine("[[devices]]\nid = \"r1\"\nlocation = \"l\"\nprofile = \"acrel_aim_r100\"\n");
    let state = |n: u32, s: &str| {
        reading(
            "r1",
            "acrel_aim_r100",
            &format!("loop{n}_state"),
            Value::Text(Arc::from(s)),
        )
    };
    let loops = |states: &[(u32, &str)]| -> Vec<Reading> {
        let mut all: Vec<Reading> = (1..=12).map(|n| state(n, "normal")).collect();
        for (n, s) in states {
            all[*n as usize - 1] = state(*n, s);
        }
        all.push(reading(
            "r1",
            "acrel_aim_r100",
            "leak_3",
            Value::Float(40.0),
        ));
        all
    };
    let mut out = Vec::new();
    // Loop 1's CT comes open (state 10): a fault after 5 s, not a leakage alarm.
    for t in (0..=6_000).step_by(1000) {
        engine.tick(t, &mut out);
        evaluate(&mut engine, &loops(&[(1, "open")]), t, &mut out);
    }
    assert_eq!(summary(&out), vec![(5_000, "raised", Severity::Medium)]);
    assert_eq!(out[0].key.as_ref(), "R14c/r1/loop1_state");
    assert_eq!(out[0].kind, AlarmKind::Fault);
    out.clear();
    // Loop 3 over the monitor's own set-point (state 11) while its current reads 40 mA, far
    // below the gateway's 300 mA: the monitor's decision raises R1 on loop 3 at once.
    evaluate(
        &mut engine,
        &loops(&[(1, "open"), (3, "overload")]),
        7_000,
        &mut out,
    );
    let r1: Vec<&AlarmEvent> = out.iter().filter(|e| e.rule.as_ref() == "R1").collect();
    assert_eq!(r1.len(), 1, "{:?}", summary(&out));
    assert_eq!(r1[0].key.as_ref(), "R1/r1/leak_3");
    assert_eq!(
        (r1[0].action, r1[0].severity, r1[0].at_ms),
        (Action::Raised, Severity::High, 7_000)
    );
    // Both back to normal: the fault clears, the alarm's condition ends.
    out.clear();
    for t in (8_000..=40_000).step_by(1000) {
        engine.tick(t, &mut out);
        evaluate(&mut engine, &loops(&[]), t, &mut out);
    }
    let ended: Vec<(&str, &str)> = out
        .iter()
        .map(|e| (e.key.as_ref(), e.action.as_str()))
        .collect();
    assert!(
        ended.contains(&("R14c/r1/loop1_state", "cleared")),
        "{ended:?}"
    );
    assert!(ended.contains(&("R1/r1/leak_3", "cleared")), "{ended:?}");
}

#[test]
fn a_shelved_alarm_that_turns_critical_comes_back_before_its_escalation() {
    let (mut engine, _dir) = engine("");
    let operator = Operator {
        name: "wang".into(),
        comment: None,
    };
    let mut out = Vec::new();
    for t in (0..=11_000).step_by(1000) {
        out.extend(feed(&mut engine, leak(350.0), t));
    }
    assert_eq!(summary(&out), vec![(10_000, "raised", Severity::High)]);
    let target = Target::Alarm("R1/m1/leakage".into());
    let shelve = Command::Shelve {
        until_ms: 3_600_000,
        reason: "insulation work, electrician on site".into(),
    };
    out.clear();
    engine
        .command(&target, &shelve, &operator, 12_000, &mut out)
        .expect("a high residual-current alarm may be shelved");
    // 600 mA for R1's on-delay: critical, which no shelving hides.
    out.clear();
    for t in (13_000..=24_000).step_by(1000) {
        out.extend(feed(&mut engine, leak(600.0), t));
    }
    let actions: Vec<&str> = out.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        vec!["unshelved", "escalated"],
        "{:?}",
        summary(&out)
    );
    let escalated = &out[1];
    assert_eq!(escalated.severity, Severity::Critical);
    assert!(escalated.annunciated, "pushed and shown");
    assert_eq!(
        engine.command(&target, &shelve, &operator, 25_000, &mut out),
        Err(CommandError::NotShelvable),
        "and it cannot be shelved again while critical"
    );
}

/// R3 measures the rise per minute over its 60 s window from a few kept samples, not from
/// every reading: a terminal heating at 6 °C/min (0.1 °C per 1 Hz reading) raises the
/// 5 °C/min pre-alarm, 12 °C/min the 10 °C/min alarm, and 3 °C/min nothing; and nothing is
/// judged before half a window of samples.
#[test]
fn temperature_rise_rate_is_measured_over_the_window() {
    fn run(per_second: f64) -> Vec<(i64, Action, Severity)> {
        let (mut engine, _dir) = engine("");
        let mut seen = Vec::new();
        for s in 0..=180 {
            let t = reading(
                "m1",
                "adw300_json",
                "t1",
                Value::Float(30.0 + per_second * s as f64),
            );
            for e in feed(&mut engine, t, s * 1000) {
                if &*e.rule == "R3" {
                    seen.push((s, e.action, e.severity));
                }
            }
        }
        seen
    }
    assert!(run(0.05).is_empty(), "3 °C/min is no alarm");
    let slow = run(0.1);
    assert_eq!(slow.len(), 1, "{slow:?}");
    let (at, action, severity) = slow[0];
    assert_eq!((action, severity), (Action::Raised, Severity::Low));
    // Half a window of samples (30 s), then R3's on-delay, if any; never before.
    assert!((30..=60).contains(&at), "raised at {at} s");
    let fast = run(0.2);
    assert!(
        fast.iter().any(
            |(_, a, s)| *s == Severity::High && matches!(a, Action::Raised | Action::Escalated)
        ),
        "{fast:?}"
    );
}

#[test]
fn a_fire_waits_for_a_verdict_and_counts_as_confirmed_when_nobody_answers() {
    use parkguard::model::alarm::{FalseAlarmReason, FireVerdict};
    let (mut engine, _dir) = engine("[fire]\nconfirm_timeout_s = 60\n");
    let event = |e: &str| reading("s1", "nb_smoke", "event", Value::Text(Arc::from(e)));
    let key = "R13/s1/event";
    let target = Target::Alarm(key.into());
    let wang = Operator {
        name: "wang".into(),
        comment: None,
    };
    let raised = feed(&mut engine, event("alarm"), 1000);
    let fire = raised
        .iter()
        .find(|e| e.key.as_ref() == key)
        .expect("raised");
    assert_eq!(
        fire.alarm.fire,
        Some(FireVerdict::Pending {
            since_ms: 1000,
            due_ms: 61_000
        }),
        "the raise carries the pending verdict"
    );
    // Acknowledging is not a verdict: the countdown runs on.
    let mut out = Vec::new();
    engine
        .command(&target, &Command::Acknowledge, &wang, 2000, &mut out)
        .expect("ack");
    let mut out = Vec::new();
    engine.tick(60_999, &mut out);
    assert!(out.is_empty(), "not due yet: {out:#?}");
    engine.tick(61_000, &mut out);
    assert_eq!(
        summary(&out),
        vec![(61_000, "fire_confirmed", Severity::Critical)]
    );
    let confirmed = &out[0];
    assert_eq!(
        confirmed.operator.as_ref().map(|o| o.name.as_str()),
        Some("system")
    );
    assert!(matches!(
        confirmed.alarm.fire,
        Some(FireVerdict::Confirmed {
            automatic: true,
            ..
        })
    ));
    // An operator who looks later can still confirm it (it was automatic) or mark it false.
    let mut out = Vec::new();
    engine
        .command(&target, &Command::ConfirmFire, &wang, 62_000, &mut out)
        .expect("confirm after automatic");
    assert_eq!(
        engine.command(&target, &Command::ConfirmFire, &wang, 62_500, &mut out),
        Err(CommandError::AlreadyConfirmed)
    );
    let other = Command::FalseAlarm {
        reason: FalseAlarmReason::Other,
    };
    assert_eq!(
        engine.command(&target, &other, &wang, 63_000, &mut out),
        Err(CommandError::CommentRequired),
        "`other` needs a comment"
    );
    let cooking = Command::FalseAlarm {
        reason: FalseAlarmReason::Cooking,
    };
    let mut out = Vec::new();
    engine
        .command(&target, &cooking, &wang, 64_000, &mut out)
        .expect("false alarm");
    assert_eq!(
        summary(&out),
        vec![(64_000, "false_alarm", Severity::Critical)]
    );
    let view = engine.alarm(key).expect("view");
    assert_eq!(
        view.fire,
        Some(FireVerdict::FalseAlarm {
            at_ms: 64_000,
            by: "wang".into(),
            reason: FalseAlarmReason::Cooking
        })
    );
    // The verdict belongs to this fire: after clear and reset, the next fire is judged anew.
    feed(&mut engine, event("alarm_clear"), 65_000);
    let mut out = Vec::new();
    engine
        .command(&target, &Command::Reset, &wang, 66_000, &mut out)
        .expect("reset");
    let again = feed(&mut engine, event("alarm"), 70_000);
    let next = again.iter().find(|e| e.key.as_ref() == key).expect("again");
    assert!(
        matches!(
            next.alarm.fire,
            Some(FireVerdict::Pending {
                since_ms: 70_000,
                ..
            })
        ),
        "{:?}",
        next.alarm.fire
    );
}

#[test]
fn only_fire_levels_are_confirmed_gas_level_1_is_not_a_fire() {
    use parkguard::model::alarm::FireVerdict;
    let (mut engine, _dir) = engine("");
    let gas = |v: f64| reading("g1", "gas_detector_lel", "lel", Value::Float(v));
    let key = "R11/g1/lel";
    let target = Target::Alarm(key.into());
    let wang = Operator {
        name: "wang".into(),
        comment: None,
    };
    feed(&mut engine, gas(30.0), 0);
    let level1 = feed(&mut engine, gas(30.0), 4000);
    let high = level1
        .iter()
        .find(|e| e.key.as_ref() == key)
        .expect("level 1");
    assert_eq!(high.severity, Severity::High);
    assert_eq!(high.alarm.fire, None, "gas level 1 is not a fire");
    let mut out = Vec::new();
    assert_eq!(
        engine.command(&target, &Command::ConfirmFire, &wang, 5000, &mut out),
        Err(CommandError::NotFire)
    );
    feed(&mut engine, gas(60.0), 6000);
    let level2 = feed(&mut engine, gas(60.0), 10_000);
    let critical = level2
        .iter()
        .find(|e| e.key.as_ref() == key && e.action == Action::Escalated)
        .expect("level 2");
    assert!(
        matches!(critical.alarm.fire, Some(FireVerdict::Pending { due_ms, .. }) if due_ms == critical.at_ms + 180_000),
        "level 2 waits 180 s by default: {:?}",
        critical.alarm.fire
    );
    // A leakage alarm of a meter is not a fire either.
    feed(&mut engine, leak(400.0), 11_000);
    let leak_raised = feed(&mut engine, leak(400.0), 60_000);
    assert!(leak_raised.iter().all(|e| e.alarm.fire.is_none()));
}
