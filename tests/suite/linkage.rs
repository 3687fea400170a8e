//! Linkage through the real daemon against the Modbus simulator over TCP: a gas detector at
//! level 2 closes the kitchen's shut-off valve (confirmed by its limit switch), starts the
//! fan and sounds the kitchen's sounder only; clearing stops fan and sounder and leaves the
//! valve closed until a technician releases it; a valve that does not confirm raises the
//! critical linkage fault; a restart writes nothing; a reset of a latched arc alarm writes the
//! detector's reset register; `check` refuses a linkage to an unknown output and warns on a
//! power trip.

use crate::support;

use std::path::Path;
use std::time::Duration;

use parkguard::config::Config;
use parkguard::decode::registers::Area;
use parkguard::model::alarm::Operator;
use parkguard::pipeline::Gateway;
use parkguard::rules::alarm::Command;
use parkguard::rules::engine::Target;
use parkguard::sim::modbus::SimulatedBus;
use parkguard::store::{JournalEntry, Store};
use support::*;

const GAS: u8 = 2;
const ARCM: u8 = 3;
const RELAYS: u8 = 9;
const STORE_RELAYS: u8 = 10;

async fn serve(bus: SimulatedBus) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(bus.serve_tcp(listener));
    port
}

/// The gas detector's concentration, %LEL, as its float register (CDAB) holds it.
fn set_lel(bus: &SimulatedBus, lel: f32) {
    let bits = lel.to_bits();
    let words = [(bits & 0xFFFF) as u16, (bits >> 16) as u16];
    bus.unit(GAS)
        .expect("gas")
        .set_words(Area::Holding, 8, &words);
}

fn site_text(port: u16, valve_extra: &str) -> String {
    format!(
        r#"[gateway]
profiles_dir = "profiles"
[[parks]]
id = "p"
[[enterprises]]
id = "e"
park = "p"
[[locations]]
id = "kitchen"
enterprise = "e"
[[locations]]
id = "store"
enterprise = "e"
[[devices]]
id = "gas-1"
location = "kitchen"
profile = "gas_detector_lel"
[[devices]]
id = "arcm-1"
location = "store"
profile = "arcm_combo_detector"
[[modbus]]
name = "bus"
transport = "tcp"
address = "127.0.0.1:{port}"
timeout_ms = 500
[[modbus.units]]
device = "gas-1"
unit_id = {GAS}
[[modbus.units]]
device = "arcm-1"
unit_id = {ARCM}
[[rule_overrides]]
rule = "R11"
on_delay_s = 0
off_delay_s = 0
[[outputs]]
id = "valve"
name = "Kitchen gas valve"
kind = "gas_valve"
location = "kitchen"
modbus = {{ connection = "bus", unit_id = {RELAYS}, area = "coil", address = 0, readback = {{ area = "discrete_input", address = 0 }} }}
{valve_extra}
[[outputs]]
id = "fan"
kind = "fan"
location = "kitchen"
modbus = {{ connection = "bus", unit_id = {RELAYS}, area = "coil", address = 1 }}
[[outputs]]
id = "sounder-kitchen"
kind = "sounder"
location = "kitchen"
modbus = {{ connection = "bus", unit_id = {RELAYS}, area = "coil", address = 2 }}
[[outputs]]
id = "sounder-store"
kind = "sounder"
location = "store"
modbus = {{ connection = "bus", unit_id = {STORE_RELAYS}, area = "coil", address = 2 }}
[[linkage]]
name = "gas level 2 shuts the valve"
device_kinds = ["gas"]
severity = "critical"
outputs = ["valve"]
[[linkage]]
name = "gas level 2 runs the fan"
device_kinds = ["gas"]
severity = "critical"
outputs = ["fan"]
release = "clear"
[[linkage]]
name = "gas level 2 sounds its location"
device_kinds = ["gas"]
severity = "critical"
output_kinds = ["sounder"]
release = "clear"
"#
    )
}

fn bus() -> SimulatedBus {
    let bus = SimulatedBus::new([GAS, ARCM, RELAYS, STORE_RELAYS]);
    // The valve's limit switch (discrete input 0) follows its coil.
    bus.unit(RELAYS).expect("relays").mirror_coil(0, 0);
    set_lel(&bus, 0.0);
    bus
}

fn journal(dir: &Path) -> Vec<JournalEntry> {
    let store = Store::open(&dir.join("parkguard.db")).expect("store");
    let mut entries = store.journal(None, 10_000).expect("journal");
    entries.sort_by_key(|e| e.seq);
    entries
}

fn coil(bus: &SimulatedBus, unit: u8, address: u16) -> u16 {
    bus.unit(unit)
        .and_then(|u| u.word(Area::Coil, address))
        .unwrap_or(0)
}

async fn start(path: &Path) -> Gateway {
    Gateway::start(Config::load(path).unwrap_or_else(|p| panic!("{p:#?}")))
        .await
        .expect("start")
}

async fn output_state(gateway: &Gateway, id: &str) -> parkguard::linkage::OutputView {
    gateway
        .linkage
        .outputs()
        .await
        .into_iter()
        .find(|o| o.id == id)
        .expect("output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gas_level_two_shuts_the_valve_runs_the_fan_and_sounds_only_its_location() {
    let bus = bus();
    let port = serve(bus.clone()).await;
    let (dir, path) = site(&site_text(port, ""));
    let gateway = start(&path).await;

    set_lel(&bus, 60.0);
    eventually(
        "valve closed (limit switch), fan running, kitchen sounder on",
        Duration::from_secs(15),
        || async {
            bus.unit(RELAYS)
                .and_then(|u| u.word(Area::DiscreteInput, 0))
                == Some(1)
                && coil(&bus, RELAYS, 1) == 1
                && coil(&bus, RELAYS, 2) == 1
        },
    )
    .await;
    eventually("valve confirmed", Duration::from_secs(5), || async {
        output_state(&gateway, "valve").await.confirmed == Some(true)
    })
    .await;
    assert_eq!(
        coil(&bus, STORE_RELAYS, 2),
        0,
        "the sounder of the other location stays silent"
    );
    eventually(
        "the confirmation journaled",
        Duration::from_secs(5),
        || async {
            journal(dir.path())
                .iter()
                .any(|e| e.action == "linkage" && e.message.contains("confirmed"))
        },
    )
    .await;
    let entries = journal(dir.path());
    let raised = entries
        .iter()
        .find(|e| e.key == "R11/gas-1/lel" && e.action == "raised" && e.severity == "critical")
        .or_else(|| {
            entries.iter().find(|e| {
                e.key == "R11/gas-1/lel" && e.action == "escalated" && e.severity == "critical"
            })
        })
        .unwrap_or_else(|| {
            panic!(
                "gas level 2 journaled: {:?}",
                entries
                    .iter()
                    .map(|e| (&e.key, &e.action, &e.severity))
                    .collect::<Vec<_>>()
            )
        });
    let confirmed = entries
        .iter()
        .find(|e| {
            e.key == "R11/gas-1/lel"
                && e.action == "linkage"
                && e.message.contains("Kitchen gas valve closed")
                && e.message.contains("confirmed")
        })
        .unwrap_or_else(|| panic!("valve confirmation journaled on the alarm: {entries:#?}"));
    let latency = confirmed.at_ms - raised.at_ms;
    eprintln!(
        "alarm to confirmed valve: {latency} ms ({})",
        confirmed.message
    );
    assert!(
        latency < 1000,
        "the valve is closed and read back within 1 s of the alarm, took {latency} ms"
    );
    let alarm = gateway
        .rules
        .alarm("R11/gas-1/lel")
        .await
        .expect("gas alarm");
    assert!(
        alarm
            .linkage
            .iter()
            .any(|l| l.contains("Kitchen gas valve closed")),
        "the alarm's view says what was done: {:?}",
        alarm.linkage
    );

    // The gas is still there: the valve cannot be reopened by hand.
    let technician = Operator {
        name: "li".into(),
        comment: Some("leak found and fixed".into()),
    };
    let refused = gateway
        .linkage
        .operate("valve", false, technician.clone())
        .await;
    assert!(
        matches!(refused, Err(parkguard::linkage::LinkageError::HolderActive(ref k)) if k == "R11/gas-1/lel"),
        "{refused:?}"
    );

    // The gas clears: fan and sounder stop, the valve stays closed.
    set_lel(&bus, 0.0);
    eventually("fan and sounder off", Duration::from_secs(15), || async {
        coil(&bus, RELAYS, 1) == 0 && coil(&bus, RELAYS, 2) == 0
    })
    .await;
    assert_eq!(coil(&bus, RELAYS, 0), 1, "the valve stays closed on clear");
    let valve = output_state(&gateway, "valve").await;
    assert_eq!(valve.state, "closed");
    assert_eq!(valve.holders, vec!["R11/gas-1/lel".to_string()]);

    // A technician releases it, with a reason: journaled with name and reason.
    gateway
        .linkage
        .operate("valve", false, technician)
        .await
        .expect("released by hand");
    eventually("valve open again", Duration::from_secs(10), || async {
        output_state(&gateway, "valve").await.confirmed == Some(false)
    })
    .await;
    assert_eq!(coil(&bus, RELAYS, 0), 0);
    eventually("the release journaled", Duration::from_secs(5), || async {
        journal(dir.path()).iter().any(|e| e.key == "output/valve")
    })
    .await;
    let entries = journal(dir.path());
    assert!(
        entries.iter().any(|e| e.key == "output/valve"
            && e.operator.as_deref() == Some("li")
            && e.comment.as_deref() == Some("leak found and fixed")),
        "the manual release is journaled with name and reason: {entries:#?}"
    );
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valve_that_does_not_confirm_raises_the_critical_linkage_fault() {
    let bus = bus();
    bus.unit(RELAYS).expect("relays").set_refuse_writes(true);
    let port = serve(bus.clone()).await;
    let (dir, path) = site(&site_text(port, "confirm_ms = 300\nattempts = 2"));
    let gateway = start(&path).await;
    set_lel(&bus, 60.0);
    eventually(
        "linkage fault G11 raised",
        Duration::from_secs(20),
        || async {
            gateway.rules.alarms().await.iter().any(|a| {
                a.rule == "G11"
                    && a.source.contains("valve")
                    && a.severity == Some(parkguard::config::Severity::Critical)
            })
        },
    )
    .await;
    let valve = output_state(&gateway, "valve").await;
    assert!(
        valve
            .failing
            .as_deref()
            .is_some_and(|f| f.contains("still reads 0")),
        "{valve:?}"
    );
    assert_eq!(valve.state, "closing", "commanded, never confirmed");
    eventually(
        "the failure journaled on the alarm",
        Duration::from_secs(5),
        || async {
            journal(dir.path()).iter().any(|e| {
                e.key == "R11/gas-1/lel"
                    && e.action == "linkage"
                    && e.message.contains("NOT confirmed")
            })
        },
    )
    .await;

    // The valve frees itself: the next retry confirms and the fault clears.
    bus.unit(RELAYS).expect("relays").set_refuse_writes(false);
    eventually("fault cleared", Duration::from_secs(40), || async {
        output_state(&gateway, "valve").await.confirmed == Some(true)
            && !gateway
                .rules
                .alarms()
                .await
                .iter()
                .any(|a| a.rule == "G11" && a.condition)
    })
    .await;
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_writes_nothing_and_reports_an_output_changed_by_hand() {
    let bus = bus();
    let port = serve(bus.clone()).await;
    let (dir, path) = site(&site_text(port, ""));
    let gateway = start(&path).await;
    set_lel(&bus, 60.0);
    eventually("valve confirmed", Duration::from_secs(15), || async {
        output_state(&gateway, "valve").await.confirmed == Some(true)
    })
    .await;
    eventually("fan confirmed", Duration::from_secs(5), || async {
        output_state(&gateway, "fan").await.confirmed == Some(true)
    })
    .await;
    gateway.shutdown().await;

    // While the daemon was down, someone opened the valve by hand on site.
    let relays = bus.unit(RELAYS).expect("relays");
    relays.set_words(Area::Coil, 0, &[0]);
    relays.set_words(Area::DiscreteInput, 0, &[0]);
    let writes_before = relays.writes() + bus.unit(STORE_RELAYS).expect("store").writes();

    let gateway = start(&path).await;
    eventually(
        "the difference is reported",
        Duration::from_secs(10),
        || async { output_state(&gateway, "valve").await.mismatch.is_some() },
    )
    .await;
    // Let the engine see the standing gas alarm again and linkage plan on it.
    eventually(
        "gas alarm still active",
        Duration::from_secs(10),
        || async {
            gateway
                .rules
                .alarm("R11/gas-1/lel")
                .await
                .is_some_and(|a| a.condition)
        },
    )
    .await;
    let fan = output_state(&gateway, "fan").await;
    assert_eq!(
        fan.state, "running",
        "kept from before the restart: {fan:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await; // a quiet window: nothing may be written
    let writes_after = relays.writes() + bus.unit(STORE_RELAYS).expect("store").writes();
    assert_eq!(
        writes_after, writes_before,
        "a restart re-sends nothing and releases nothing"
    );
    assert_eq!(coil(&bus, RELAYS, 1), 1, "the fan still runs");
    eventually(
        "the difference journaled",
        Duration::from_secs(5),
        || async { journal(dir.path()).iter().any(|e| e.key == "output/valve") },
    )
    .await;
    let entries = journal(dir.path());
    assert!(
        entries.iter().any(|e| e.key == "output/valve"
            && e.message.contains("at start open")
            && e.message.contains("last commanded closed")),
        "{:#?}",
        entries
            .iter()
            .filter(|e| e.key.starts_with("output/"))
            .collect::<Vec<_>>()
    );
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_of_a_latched_arc_alarm_writes_the_detectors_reset_register() {
    let bus = bus();
    let arcm = bus.unit(ARCM).expect("arcm");
    // The detector drops its latched status bits when 1 is written to its reset register.
    arcm.on_write(Area::Holding, 20, 1, vec![(Area::Holding, 8, 0)]);
    let port = serve(bus.clone()).await;
    let (dir, path) = site(&site_text(port, ""));
    let gateway = start(&path).await;
    arcm.set_words(Area::Holding, 8, &[1 << 6]); // arc alarm, latched by the detector
    eventually("arc alarm raised", Duration::from_secs(15), || async {
        gateway
            .rules
            .alarm("R10/arcm-1/arc_alarm")
            .await
            .is_some_and(|a| a.condition)
    })
    .await;
    let operator = Operator {
        name: "wang".into(),
        comment: Some("checked the circuit".into()),
    };
    gateway
        .rules
        .command(
            Target::Alarm("R10/arcm-1/arc_alarm".into()),
            Command::ConfirmFire,
            Operator {
                name: "wang".into(),
                comment: None,
            },
        )
        .await
        .expect("the arc judged");
    gateway
        .rules
        .command(
            Target::Alarm("R10/arcm-1/arc_alarm".into()),
            Command::Reset,
            operator,
        )
        .await
        .expect("the reset is taken, though the device still holds the alarm");
    eventually("the alarm is reset", Duration::from_secs(15), || async {
        gateway
            .rules
            .alarm("R10/arcm-1/arc_alarm")
            .await
            .is_none_or(|a| a.state == parkguard::model::alarm::AlarmState::Normal)
    })
    .await;
    assert_eq!(
        arcm.word(Area::Holding, 20),
        Some(1),
        "the reset register was written"
    );
    eventually("the reset journaled", Duration::from_secs(5), || async {
        journal(dir.path())
            .iter()
            .any(|e| e.key == "R10/arcm-1/arc_alarm" && e.action == "reset")
    })
    .await;
    let entries = journal(dir.path());
    let actions: Vec<&str> = entries
        .iter()
        .filter(|e| e.key == "R10/arcm-1/arc_alarm")
        .map(|e| e.action.as_str())
        .collect();
    let requested = actions.iter().position(|a| *a == "reset_requested");
    let reset = actions.iter().position(|a| *a == "reset");
    assert!(
        requested.is_some() && reset > requested,
        "requested, then reset: {actions:?}"
    );
    assert!(entries.iter().any(|e| e.key == "R10/arcm-1/arc_alarm"
        && e.action == "reset"
        && e.operator.as_deref() == Some("wang")));
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_the_detector_ignores_fails_and_the_alarm_stays() {
    let bus = bus();
    let arcm = bus.unit(ARCM).expect("arcm");
    let port = serve(bus.clone()).await;
    let (dir, path) = site(&site_text(port, ""));
    // A shorter wait than the shipped profile's, so that the test does not wait 10 s.
    let profile = dir.path().join("profiles/arcm_combo_detector.toml");
    let text = std::fs::read_to_string(&profile).expect("profile");
    std::fs::write(&profile, text.replace("wait_s = 10", "wait_s = 1")).expect("profile");
    let gateway = start(&path).await;
    arcm.set_words(Area::Holding, 8, &[1 << 6]);
    eventually("arc alarm raised", Duration::from_secs(15), || async {
        gateway
            .rules
            .alarm("R10/arcm-1/arc_alarm")
            .await
            .is_some_and(|a| a.condition)
    })
    .await;
    gateway
        .rules
        .command(
            Target::Alarm("R10/arcm-1/arc_alarm".into()),
            Command::ConfirmFire,
            Operator {
                name: "wang".into(),
                comment: None,
            },
        )
        .await
        .expect("the arc judged");
    gateway
        .rules
        .command(
            Target::Alarm("R10/arcm-1/arc_alarm".into()),
            Command::Reset,
            Operator {
                name: "wang".into(),
                comment: None,
            },
        )
        .await
        .expect("reset requested");
    eventually("reset failed", Duration::from_secs(10), || async {
        journal(dir.path())
            .iter()
            .any(|e| e.key == "R10/arcm-1/arc_alarm" && e.action == "reset_failed")
    })
    .await;
    let alarm = gateway
        .rules
        .alarm("R10/arcm-1/arc_alarm")
        .await
        .expect("alarm");
    assert!(alarm.condition && !alarm.reset_pending, "{alarm:?}");
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_a_linkage_to_an_unknown_output_and_warns_on_a_power_trip() {
    let unknown = site_text(1502, "").replace("outputs = [\"fan\"]", "outputs = [\"fan-2\"]");
    let (_dir, path) = site(&unknown);
    let out = parkguard(vec!["check".into(), path.display().to_string()]).await;
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("linkage[1].outputs[0]") && text.contains("no output `fan-2`"),
        "{text}"
    );

    let trip = "[[outputs]]\nid = \"trip\"\nkind = \"power_trip\"\nlocation = \"kitchen\"\n\
        modbus = { connection = \"bus\", unit_id = 9, area = \"coil\", address = 5 }\n\
        [[linkage]]\nname = \"arc trips the circuit\"\nrules = [\"R10\"]\nseverity = \"high\"\noutputs = [\"trip\"]\n";
    let (_dir, path) = site(&(site_text(1502, "") + trip));
    let out = parkguard(vec!["check".into(), path.display().to_string()]).await;
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "a trip without allow_power_trip is refused: {text}"
    );
    assert!(text.contains("allow_power_trip"), "{text}");

    let allowed = trip.replace(
        "severity = \"high\"",
        "severity = \"high\"\nallow_power_trip = true",
    );
    let (_dir, path) = site(&(site_text(1502, "") + &allowed));
    let out = parkguard(vec!["check".into(), path.display().to_string()]).await;
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("GB 50116") && text.contains("cuts power automatically"),
        "check warns, quoting the code: {text}"
    );
}
