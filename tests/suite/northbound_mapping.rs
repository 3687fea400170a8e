//! What the fire-monitoring centre is told of alarm transitions (`northbound::gb26875::
//! mapping`), driven by the rule engine with the shipped rules: a component's state word is
//! its device's, every standing alarm adding its bit; fires count once confirmed; the words
//! of states supersede each other, fires' never.

use crate::support;

use std::sync::Arc;

use parkguard::config::Config;
use parkguard::model::alarm::AlarmEvent;
use parkguard::model::{Quality, Reading, Tags, Value};
use std::collections::HashMap;

use parkguard::northbound::gb26875::mapping::{DeviceState, Mapper, Outgoing, Priority};
use parkguard::rules::alarm::{Command, Operator};
use parkguard::rules::engine::{RuleEngine, Target};

fn setup(send_fires: &str) -> (Config, RuleEngine, Mapper, tempfile::TempDir) {
    let text = format!(
        r#"{header}
[[devices]]
id = "d1"
location = "l"
profile = "arcm_combo_detector"
[[devices]]
id = "s1"
location = "l"
profile = "nb_smoke"
[[rule_overrides]]
rule = "R1"
on_delay_s = 0
off_delay_s = 0
[[northbound]]
name = "city"
type = "gb26875"
centre = "127.0.0.1:9"
device_address = 1
send_fires = "{send_fires}"
"#,
        header = support::site_header("l", "")
    );
    let (dir, path) = support::site(&text);
    let config = Config::load(&path).unwrap_or_else(|p| panic!("{p:#?}"));
    let engine = RuleEngine::new(&config, &parkguard::status::device(&config), 0);
    let mapper = Mapper::new(&config, &config.site.northbound[0]);
    (config, engine, mapper, dir)
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

fn feed(engine: &mut RuleEngine, r: Reading, at: i64) -> Vec<AlarmEvent> {
    let mut out = Vec::new();
    engine.tick(at, &mut out);
    let r = Reading {
        timestamp_ns: at * 1_000_000,
        ..r
    };
    engine.on_readings(&[r], at, &mut out);
    out
}

/// What the centre was last given, by device, as the queue keeps it.
#[derive(Default)]
struct Centre(HashMap<String, DeviceState>);

fn sent(mapper: &Mapper, centre: &mut Centre, events: &[AlarmEvent]) -> Vec<Outgoing> {
    events
        .iter()
        .flat_map(|e| {
            let state = centre.0.entry(e.tags.device.clone()).or_default();
            mapper.messages(e, state, false)
        })
        .collect()
}

/// The state words sent, as (priority, word).
fn words(out: &[Outgoing]) -> Vec<(Priority, u16)> {
    out.iter()
        .filter(|o| o.unit[0] == 2)
        .map(|o| (o.priority, u16::from_le_bytes([o.unit[9], o.unit[10]])))
        .collect()
}

const RUNNING: u16 = 1;
const FIRE: u16 = 2;
const FAULT: u16 = 4;
const SUPERVISORY: u16 = 16;

#[test]
fn a_devices_word_holds_every_standing_alarm_and_a_pre_alarm_adds_nothing() {
    let (_config, mut engine, mapper, _dir) = setup("confirmed");
    let mut centre = Centre::default();
    let leak = |v: f64| reading("d1", "arcm_combo_detector", "leak", Value::Float(v));
    let ct_open = |on: bool| reading("d1", "arcm_combo_detector", "ct_open", Value::Bool(on));

    let out = sent(
        &mapper,
        &mut centre,
        &feed(&mut engine, ct_open(true), 1000),
    );
    assert_eq!(words(&out), vec![(Priority::Status, RUNNING | FAULT)]);
    let out = sent(&mapper, &mut centre, &feed(&mut engine, leak(350.0), 2000));
    assert_eq!(
        words(&out),
        vec![(Priority::Status, RUNNING | FAULT | SUPERVISORY)],
        "the leakage alarm adds to the fault, it does not replace it"
    );
    assert!(out
        .iter()
        .all(|o| o.supersedes.as_deref() == Some("state/d1") || o.unit[0] != 2));
    // Down to a pre-alarm: no longer supervisory; the fault stays.
    let out = sent(&mapper, &mut centre, &feed(&mut engine, leak(250.0), 3000));
    assert_eq!(words(&out), vec![(Priority::Status, RUNNING | FAULT)]);
    // The fault clears: normal.
    let out = sent(
        &mapper,
        &mut centre,
        &feed(&mut engine, ct_open(false), 4000),
    );
    assert_eq!(words(&out), vec![(Priority::Status, RUNNING)]);
    // Nothing changed, nothing sent.
    let out = sent(
        &mapper,
        &mut centre,
        &feed(&mut engine, ct_open(false), 5000),
    );
    assert!(words(&out).is_empty(), "{out:?}");
}

#[test]
fn a_fire_counts_once_confirmed_and_its_verdict_and_reset_follow_as_records() {
    let (_config, mut engine, mapper, _dir) = setup("confirmed");
    let mut centre = Centre::default();
    let smoke = |e: &str| reading("s1", "nb_smoke", "event", Value::Text(Arc::from(e)));
    let key = Target::Alarm("R13/s1/event".into());
    let wang = Operator {
        name: "wang".into(),
        comment: None,
    };
    let out = sent(
        &mapper,
        &mut centre,
        &feed(&mut engine, smoke("alarm"), 1000),
    );
    assert_eq!(
        words(&out),
        vec![(Priority::Status, RUNNING | SUPERVISORY)],
        "a fire being judged is something going on, not yet a fire"
    );

    let mut events = Vec::new();
    engine
        .command(&key, &Command::ConfirmFire, &wang, 2000, &mut events)
        .expect("confirm");
    let out = sent(&mapper, &mut centre, &events);
    assert_eq!(words(&out), vec![(Priority::Fire, RUNNING | FIRE)]);
    assert_eq!(out[0].supersedes.as_deref(), Some("state/s1"));
    let record = out
        .iter()
        .find(|o| o.unit[0] == 4)
        .expect("operation record");
    assert_eq!(record.priority, Priority::Fire);
    assert_eq!(record.unit[4], 1 << 5, "confirm");

    feed(&mut engine, smoke("alarm_clear"), 3000);
    let mut events = Vec::new();
    engine
        .command(&key, &Command::Reset, &wang, 4000, &mut events)
        .expect("reset");
    let out = sent(&mapper, &mut centre, &events);
    assert_eq!(
        words(&out),
        vec![(Priority::Fire, RUNNING)],
        "the fire's end goes with the fires, ahead of states"
    );
    assert!(
        out.iter().any(|o| o.unit[0] == 4 && o.unit[4] == 1),
        "reset record"
    );
}

#[test]
fn a_false_alarm_is_never_a_fire_and_clears_only_a_fire_the_centre_had() {
    use parkguard::model::alarm::FalseAlarmReason;
    for (mode, words_expected, record_expected) in [
        (
            "confirmed",
            vec![
                (Priority::Status, RUNNING | SUPERVISORY),
                (Priority::Status, RUNNING),
            ],
            false,
        ),
        (
            "at_once",
            vec![(Priority::Fire, RUNNING | FIRE), (Priority::Fire, RUNNING)],
            true,
        ),
    ] {
        let (_config, mut engine, mapper, _dir) = setup(mode);
        let mut centre = Centre::default();
        let smoke = |e: &str| reading("s1", "nb_smoke", "event", Value::Text(Arc::from(e)));
        let mut out = sent(
            &mapper,
            &mut centre,
            &feed(&mut engine, smoke("alarm"), 1000),
        );
        let mut events = Vec::new();
        engine
            .command(
                &Target::Alarm("R13/s1/event".into()),
                &Command::FalseAlarm {
                    reason: FalseAlarmReason::Steam,
                },
                &Operator {
                    name: "wang".into(),
                    comment: None,
                },
                2000,
                &mut events,
            )
            .expect("false alarm");
        out.extend(sent(&mapper, &mut centre, &events));
        assert_eq!(words(&out), words_expected, "{mode}");
        // "Alarm cleared" names the whole system: only for a fire the centre had.
        let record = out.iter().find(|o| o.unit[0] == 4);
        assert_eq!(record.is_some(), record_expected, "{mode}: {out:?}");
        if let Some(record) = record {
            assert_eq!(record.unit[4], 1 << 3, "{mode}: alarm cleared");
        }
    }
}

#[test]
fn at_start_every_devices_word_is_brought_up_to_date_with_the_standing_alarms() {
    use parkguard::northbound::queue::{head, Planner};
    let (config, mut engine, _mapper, dir) = setup("confirmed");
    let ct_open = reading("d1", "arcm_combo_detector", "ct_open", Value::Bool(true));
    feed(&mut engine, ct_open, 1000);
    let planner = Planner::from_config(&config).expect("a link");
    let mut store = parkguard::store::Store::open(&dir.path().join("nb.db")).expect("store");
    let standing = engine.not_normal(1500);
    // A new link: the standing fault is news to the centre.
    let reconcile = |store: &mut parkguard::store::Store, standing: &[AlarmEvent], at| {
        planner.reconcile(store, standing, at).expect("reconcile")
    };
    assert_eq!(reconcile(&mut store, &standing, 1500), 1);
    // Again: nothing has changed.
    assert_eq!(reconcile(&mut store, &standing, 1600), 0);
    // The fault's rule is gone (nothing stands): the centre is told the device is normal.
    assert_eq!(reconcile(&mut store, &[], 1700), 1);
    let rows = head(store.connection(), "city", 10, &[]).expect("head");
    let words: Vec<u16> = rows
        .iter()
        .map(|r| u16::from_le_bytes([r.unit[9], r.unit[10]]))
        .collect();
    assert_eq!(
        words,
        vec![RUNNING],
        "the newer word replaced the unsent one"
    );
}
