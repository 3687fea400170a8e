//! Interoperability with a Modbus implementation parkguard did not write: a pymodbus server
//! (installed from PyPI by ./scripts/test) encodes typed values with its own
//! `convert_to_registers` and serves them; parkguard polls it and the readings in InfluxDB
//! must equal the values the server holds: every data type in all four word orders, and the
//! shipped P1 (three-phase meter) and P5 (gas detector) register maps.
//!
//! The expected values here are computed from the profiles' TOML directly, not through
//! parkguard's decoder, so a decoding mistake cannot cancel itself out.
//!
//! RTU against pymodbus's RTU framer: over TCP (a serial server in transparent mode), and on a
//! pseudo-terminal behind a relay that plays a real line (tests/interop/pymodbus_rtu.py): the
//! unit hears parkguard only when parkguard's end is set to the unit's baud rate, parity and
//! stop bits. `modbus scan --try-settings` finds the unit at exactly its settings, a daemon set
//! to the wrong parity sees it offline (comm-loss alarm) and the right one polls it, and a
//! unit id that never answers does not hold up the other units on the bus.

use crate::support;

use std::collections::BTreeMap;
use std::time::Duration;

use parkguard::config::Config;
use parkguard::pipeline::Gateway;
use serde_json::{json, Value as Json};
use support::pymodbus::{start_pymodbus, start_pymodbus_rtu_over_tcp, start_pymodbus_serial};
use support::*;

const ORDERS: [&str; 4] = ["ABCD", "CDAB", "BADC", "DCBA"];

/// What one field in InfluxDB must read.
#[derive(Debug, Clone)]
enum Expect {
    Int(i64),
    Float(f64),
    Text(String),
    Bool(bool),
}

fn pymodbus_type(ty: &str, area: &str) -> &'static str {
    if area == "coil" || area == "discrete_input" {
        return "BOOL";
    }
    match ty {
        "u16" | "bool" => "UINT16",
        "i16" => "INT16",
        "u32" => "UINT32",
        "i32" => "INT32",
        "u64" => "UINT64",
        "i64" => "INT64",
        "f32" => "FLOAT32",
        "f64" => "FLOAT64",
        "string" => "STRING",
        other => panic!("no pymodbus type for {other}"),
    }
}

fn pymodbus_area(area: &str) -> &'static str {
    match area {
        "holding" => "holding",
        "input" => "input",
        "coil" => "coil",
        "discrete_input" => "discrete",
        other => panic!("unknown area {other}"),
    }
}

/// A raw value for register `i` of type `ty` that is neither a sentinel nor out of the type.
fn raw_value(ty: &str, i: i64, invalid: &[i64]) -> Json {
    let mut n = 100 + 37 * i;
    while invalid.contains(&n) {
        n += 1;
    }
    match ty {
        "u16" | "u32" | "u64" => json!(n),
        "bool" | "bit" => json!(i % 2 == 0),
        "i16" | "i32" | "i64" => json!(if i % 2 == 0 { -n } else { n }),
        "f32" | "f64" => json!(n as f64 + 0.25),
        "string" => json!("PG-OK"),
        other => panic!("no raw value for {other}"),
    }
}

/// Spec entries for the pymodbus server and the fields expected in InfluxDB, for every
/// register of the profile file `name` served as unit `unit`.
fn from_profile(name: &str, unit: u8, spec: &mut Vec<Json>) -> BTreeMap<String, Expect> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("firmware-config/profiles")
        .join(format!("{name}.toml"));
    let profile: toml::Table =
        toml::from_str(&std::fs::read_to_string(path).expect("profile")).expect("profile parses");
    let modbus = profile["modbus"].as_table().expect("[modbus]");
    let base = modbus
        .get("address_base")
        .and_then(|b| b.as_integer())
        .unwrap_or(0);
    let mut expected = BTreeMap::new();
    for (i, register) in modbus["registers"]
        .as_array()
        .expect("registers")
        .iter()
        .enumerate()
    {
        let r = register.as_table().expect("register");
        let text = |k: &str| r.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let number = |k: &str| {
            r.get(k)
                .and_then(|v| v.as_float().or_else(|| v.as_integer().map(|n| n as f64)))
        };
        let quantity = text("quantity").expect("quantity");
        let area = text("area").expect("area");
        let ty = text("type").expect("type");
        let order = text("order").unwrap_or_else(|| "ABCD".into());
        let address = r["address"].as_integer().expect("address") - base;
        let invalid: Vec<i64> = r
            .get("invalid")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|v| v.as_integer()).collect())
            .unwrap_or_default();
        let states = r.get("enum").and_then(|v| v.as_table());
        let bits = r.get("bits").and_then(|v| v.as_table());
        let mut value = raw_value(&ty, i as i64, &invalid);
        if let Some(states) = states {
            let (first, state) = states.iter().nth(i % states.len()).expect("a state");
            value = json!(first.parse::<i64>().expect("numeric enum key"));
            expected.insert(
                quantity.clone(),
                Expect::Text(state.as_str().expect("state name").into()),
            );
        } else if let Some(bits) = bits {
            let word = 0b1_0100_0101i64;
            value = json!(word);
            expected.insert(quantity.clone(), Expect::Int(word));
            for (bit, flag) in bits {
                let set = word >> bit.parse::<u32>().expect("bit number") & 1 == 1;
                expected.insert(flag.as_str().expect("flag").into(), Expect::Bool(set));
            }
        } else {
            let scale = number("scale").unwrap_or(1.0);
            let offset = number("offset").unwrap_or(0.0);
            let scaled = scale != 1.0 || offset != 0.0;
            let expect = match (&ty[..], value.clone()) {
                (_, Json::Bool(b)) => Expect::Bool(b),
                ("string", Json::String(s)) => Expect::Text(s),
                ("f32" | "f64", v) => Expect::Float(v.as_f64().expect("f") * scale + offset),
                (_, v) if scaled => Expect::Float(v.as_i64().expect("i") as f64 * scale + offset),
                (_, v) => Expect::Int(v.as_i64().expect("i")),
            };
            expected.insert(quantity.clone(), expect);
        }
        spec.push(json!({
            "unit": unit,
            "area": pymodbus_area(&area),
            "address": address,
            "type": pymodbus_type(&ty, &area),
            "order": order,
            "value": value,
        }));
    }
    expected
}

/// A profile with one register per data type and word order, and the spec serving it.
fn all_types_profile(unit: u8, spec: &mut Vec<Json>) -> (String, BTreeMap<String, Expect>) {
    let cases: [(&str, Json, u16); 8] = [
        ("u16", json!(51234), 1),
        ("i16", json!(-12345), 1),
        ("u32", json!(3_000_000_123u64), 2),
        ("i32", json!(-123_456_789), 2),
        ("u64", json!(72_623_859_790_382_856u64), 4),
        ("i64", json!(-1_234_567_890_123_456_789i64), 4),
        ("f32", json!(123.456), 2),
        ("f64", json!(-98765.4321), 4),
    ];
    let mut toml = String::from(
        "manufacturer = \"test\"\nmodel = \"every type\"\nkind = \"meter\"\nmeasurement = \"interop\"\n\
         [modbus]\npoll_classes = { fast = 500 }\naddress_base = 0\n",
    );
    let mut expected = BTreeMap::new();
    let mut address = 0u16;
    let mut register = |quantity: String, ty: &str, order: &str, width: u16, value: Json| {
        let length = if ty == "string" {
            format!("length = {width}\n")
        } else {
            String::new()
        };
        toml.push_str(&format!(
            "[[modbus.registers]]\nquantity = \"{quantity}\"\narea = \"holding\"\naddress = {address}\ntype = \"{ty}\"\norder = \"{order}\"\n{length}poll = \"fast\"\n"
        ));
        spec.push(json!({
            "unit": unit, "area": "holding", "address": address,
            "type": pymodbus_type(ty, "holding"), "order": order, "value": value,
        }));
        address += width;
    };
    for (ty, value, width) in &cases {
        for order in ORDERS {
            let quantity = format!("{ty}_{}", order.to_lowercase());
            register(quantity.clone(), ty, order, *width, value.clone());
            let expect = match ty {
                &"f32" | &"f64" => Expect::Float(value.as_f64().expect("float")),
                _ => Expect::Int(value.as_i64().expect("int")),
            };
            expected.insert(quantity, expect);
        }
    }
    // Strings: plain, and with the bytes of each word swapped (common on Chinese meters).
    for order in ["ABCD", "BADC"] {
        let quantity = format!("string_{}", order.to_lowercase());
        register(quantity.clone(), "string", order, 4, json!("PARK-07A"));
        expected.insert(quantity, Expect::Text("PARK-07A".into()));
    }
    toml.push_str(
        "[[modbus.registers]]\nquantity = \"door_open\"\narea = \"coil\"\naddress = 5\ntype = \"bit\"\npoll = \"fast\"\n\
         [[modbus.registers]]\nquantity = \"breaker_closed\"\narea = \"discrete_input\"\naddress = 9\ntype = \"bit\"\npoll = \"fast\"\n",
    );
    spec.push(json!({"unit": unit, "area": "coil", "address": 5, "type": "BOOL", "order": "ABCD", "value": true}));
    spec.push(json!({"unit": unit, "area": "discrete", "address": 9, "type": "BOOL", "order": "ABCD", "value": true}));
    expected.insert("door_open".into(), Expect::Bool(true));
    expected.insert("breaker_closed".into(), Expect::Bool(true));
    (toml, expected)
}

fn check(row: &Json, expected: &BTreeMap<String, Expect>, what: &str) {
    let mut wrong = Vec::new();
    for (field, expect) in expected {
        let got = &row[field];
        let ok = match expect {
            Expect::Int(n) => got.as_i64() == Some(*n),
            Expect::Float(f) => got
                .as_f64()
                .is_some_and(|g| (g - f).abs() <= 1e-9 * f.abs().max(1.0)),
            Expect::Text(t) => got.as_str() == Some(t),
            Expect::Bool(b) => got.as_bool() == Some(*b),
        };
        if !ok {
            wrong.push(format!("{field}: expected {expect:?}, InfluxDB has {got}"));
        }
    }
    assert!(wrong.is_empty(), "{what}:\n{}", wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_equal_what_a_pymodbus_server_holds_for_every_type_and_word_order() {
    let influx = influxd();
    create_database(&influx, "pg").await;
    let mut spec = Vec::new();
    let (all_types, all_expected) = all_types_profile(1, &mut spec);
    let p1_expected = from_profile("acrel_adw300_3p", 2, &mut spec);
    let p5_expected = from_profile("gas_detector_lel", 3, &mut spec);
    let site_text = format!(
        "{}[[devices]]\nid = \"every-type\"\nlocation = \"l\"\nprofile = \"interop_all_types\"\n\
         [[devices]]\nid = \"p1\"\nlocation = \"l\"\nprofile = \"acrel_adw300_3p\"\n\
         [[devices]]\nid = \"p5\"\nlocation = \"l\"\nprofile = \"gas_detector_lel\"\n\
         [[modbus]]\nname = \"pymodbus\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:PORT\"\ntimeout_ms = 1000\n\
         [[modbus.units]]\ndevice = \"every-type\"\nunit_id = 1\n\
         [[modbus.units]]\ndevice = \"p1\"\nunit_id = 2\n\
         [[modbus.units]]\ndevice = \"p5\"\nunit_id = 3\n\
         [[influx]]\nname = \"i\"\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"pg\"\nbatch_age_ms = 100\n",
        site_header("l", ""),
        influx.url()
    );
    let (dir, path) = site("");
    let (_server, port) = start_pymodbus(&Json::Array(spec), dir.path());
    std::fs::write(&path, site_text.replace("PORT", &port.to_string())).expect("site");
    std::fs::write(
        dir.path().join("profiles/interop_all_types.toml"),
        all_types,
    )
    .expect("profile");
    let gateway = Gateway::start(Config::load(&path).unwrap_or_else(|p| panic!("{p:#?}")))
        .await
        .expect("start");
    // Fast and slow poll classes are separate polls (separate rows): merge each device's rows,
    // first value of each field.
    let merged = |measurement: &'static str, device: &'static str| {
        let influx = &influx;
        async move {
            let all = rows(
                &influxql(
                    influx,
                    "pg",
                    &format!("SELECT * FROM {measurement} WHERE device = '{device}'"),
                )
                .await,
            );
            let mut fields = serde_json::Map::new();
            for row in all {
                for (k, v) in row {
                    if !v.is_null() {
                        fields.entry(k).or_insert(v);
                    }
                }
            }
            Json::Object(fields)
        }
    };
    let cases = [
        ("interop", "every-type", &all_expected),
        ("electrical", "p1", &p1_expected),
        ("gas", "p5", &p5_expected),
    ];
    for (measurement, device, expected) in cases {
        // Wait for every field; on timeout, `check` says which are missing or wrong.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            let row = merged(measurement, device).await;
            if expected.keys().all(|k| row.get(k).is_some()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        check(&merged(measurement, device).await, expected, device);
    }
    let metrics = gateway.metrics.modbus("pymodbus");
    assert_eq!(
        metrics
            .polls_failed
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "pymodbus answered every request"
    );
    gateway.shutdown().await;
}

/// The settings of the unit on the pseudo-terminal line.
const LINE: &str = "19200 8E1";

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// Every setting `scan --try-settings` tries, as the relay names them.
fn every_setting() -> Vec<String> {
    let mut all = Vec::new();
    for baud in [9600, 19200, 4800, 38400, 115_200, 2400] {
        for parity in ["N", "E", "O"] {
            all.push(format!("{baud} 8{parity}1"));
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_try_settings_finds_a_pymodbus_rtu_unit_only_at_its_line_settings() {
    let dir = tempfile::TempDir::new().expect("dir");
    let spec = json!([{"unit": 2, "area": "holding", "address": 0, "type": "UINT16", "order": "ABCD", "value": 42}]);
    let line = start_pymodbus_serial(&spec, dir.path(), LINE);
    let started = std::time::Instant::now();
    let out = parkguard(args(&[
        "modbus",
        "scan",
        "--serial",
        &line.gateway_end,
        "--try-settings",
        "--from",
        "2",
        "--to",
        "3",
        "--timeout-ms",
        "150",
    ]))
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let found: Vec<&str> = stdout.lines().filter(|l| l.contains("answers")).collect();
    assert_eq!(
        found,
        [format!(
            "{} 19200 8E1: unit 2 answers (Holding 0 = 42)",
            line.gateway_end
        )],
        "{stdout}"
    );
    assert!(stdout.contains("1 unit(s) found"), "{stdout}");
    // The relay saw both unit ids probed at each of the 18 settings and let through only
    // those at the unit's own.
    let frames = line.frames();
    for setting in every_setting() {
        let at: Vec<_> = frames.iter().filter(|f| f.line == setting).collect();
        assert_eq!(
            at.iter().map(|f| f.unit).collect::<Vec<_>>(),
            [2, 3],
            "probes at {setting}: {frames:?}"
        );
        assert!(
            at.iter().all(|f| f.heard == (setting == LINE)),
            "{setting}: {frames:?}"
        );
    }
    assert_eq!(frames.len(), 36, "{frames:?}");
    eprintln!("scan of 18 settings took {:?}", started.elapsed());
}

/// A site with `units` arcm_combo_detector devices `d{id}` on one `[[modbus]]` line named
/// "bus" (`link`: transport, address and serial settings).
fn detectors_site(units: impl IntoIterator<Item = u8> + Clone, link: &str) -> String {
    let mut text = site_header("l", "");
    for id in units.clone() {
        text.push_str(&format!(
            "[[devices]]\nid = \"d{id}\"\nlocation = \"l\"\nprofile = \"arcm_combo_detector\"\n"
        ));
    }
    text.push_str(&format!(
        "[[modbus]]\nname = \"bus\"\n{link}\ntimeout_ms = 200\noffline_after_failures = 3\noffline_retry_s = 60\n"
    ));
    for id in units {
        text.push_str(&format!(
            "[[modbus.units]]\ndevice = \"d{id}\"\nunit_id = {id}\n"
        ));
    }
    text
}

fn detectors_spec(units: impl IntoIterator<Item = u8>) -> Json {
    let mut spec = Vec::new();
    for id in units {
        from_profile("arcm_combo_detector", id, &mut spec);
    }
    Json::Array(spec)
}

fn serial_link(path: &str, parity: &str) -> String {
    format!("transport = \"rtu\"\naddress = \"{path}\"\nserial = {{ baud = 19200, parity = \"{parity}\" }}")
}

/// Devices with a comm-loss alarm that is not normal.
async fn comm_loss(gateway: &Gateway) -> Vec<String> {
    gateway
        .rules
        .alarms()
        .await
        .into_iter()
        .filter(|a| a.comm_loss && a.rule == "R16")
        .map(|a| a.device)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_at_the_wrong_parity_sees_the_pymodbus_unit_offline_and_at_the_right_one_polls_it()
{
    use std::sync::atomic::Ordering::Relaxed;
    let (dir, wrong_path) = site("");
    let line = start_pymodbus_serial(&detectors_spec([1]), dir.path(), LINE);
    std::fs::write(
        &wrong_path,
        detectors_site([1], &serial_link(&line.gateway_end, "none")),
    )
    .expect("site");
    let gateway = Gateway::start(Config::load(&wrong_path).unwrap_or_else(|p| panic!("{p:#?}")))
        .await
        .expect("start");
    let metrics = gateway.metrics.modbus("bus");
    eventually(
        "d1 offline with a comm-loss alarm at 19200 8N1",
        Duration::from_secs(20),
        || async {
            metrics.units_offline.load(Relaxed) == 1 && comm_loss(&gateway).await == ["d1"]
        },
    )
    .await;
    assert_eq!(metrics.polls_ok.load(Relaxed), 0);
    gateway.shutdown().await;
    let frames = line.frames();
    assert!(frames.len() >= 3, "{frames:?}");
    assert!(
        frames.iter().all(|f| f.line == "19200 8N1" && !f.heard),
        "the unit must not hear a line set to no parity: {frames:?}"
    );
    let before = frames.len();

    let (_right_dir, right_path) = site(&detectors_site(
        [1],
        &serial_link(&line.gateway_end, "even"),
    ));
    let gateway = Gateway::start(Config::load(&right_path).unwrap_or_else(|p| panic!("{p:#?}")))
        .await
        .expect("start");
    let metrics = gateway.metrics.modbus("bus");
    eventually(
        "three good polls at 19200 8E1",
        Duration::from_secs(20),
        || {
            let metrics = std::sync::Arc::clone(&metrics);
            async move { metrics.polls_ok.load(Relaxed) >= 3 }
        },
    )
    .await;
    assert_eq!(metrics.polls_failed.load(Relaxed), 0);
    assert_eq!(metrics.units_offline.load(Relaxed), 0);
    assert!(comm_loss(&gateway).await.is_empty());
    gateway.shutdown().await;
    let frames = &line.frames()[before..];
    assert!(
        frames.iter().all(|f| f.line == LINE && f.heard),
        "{frames:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_unit_on_a_pymodbus_rtu_line_does_not_stall_the_others() {
    use std::sync::atomic::Ordering::Relaxed;
    let good = [1u8, 2, 4, 5, 6, 7, 8];
    let (dir, path) = site("");
    let line = start_pymodbus_serial(&detectors_spec(good), dir.path(), LINE);
    std::fs::write(
        &path,
        detectors_site(1..=8, &serial_link(&line.gateway_end, "even")),
    )
    .expect("site");
    let gateway = Gateway::start(Config::load(&path).unwrap_or_else(|p| panic!("{p:#?}")))
        .await
        .expect("start");
    let metrics = gateway.metrics.modbus("bus");
    let interval = 1.0;
    let timeout = 0.2;
    let window = 5.0;
    // Unit 3 is asked three times (three timeouts) and then left alone for a minute; wait until
    // the relay has seen `window` seconds of polling after its last request.
    let frames_after_offline = || {
        let frames = line.frames();
        let silent: Vec<f64> = frames.iter().filter(|f| f.unit == 3).map(|f| f.t).collect();
        (silent.len() >= 3).then(|| (silent[2], frames))
    };
    eventually(
        "unit 3 offline and 5 s of polling after it",
        Duration::from_secs(30),
        || {
            let ready = frames_after_offline()
                .is_some_and(|(off, frames)| frames.last().is_some_and(|f| f.t >= off + window));
            async move { ready }
        },
    )
    .await;
    let (offline_at, frames) = frames_after_offline().expect("unit 3's timeouts");
    assert_eq!(metrics.units_offline.load(Relaxed), 1);
    assert_eq!(comm_loss(&gateway).await, ["d3"]);
    gateway.shutdown().await;
    assert!(frames.iter().all(|f| f.heard), "{frames:?}");
    assert_eq!(
        frames.iter().filter(|f| f.unit == 3).count(),
        3,
        "unit 3 is asked offline_after_failures times, then not before offline_retry_s"
    );
    let first = frames[0].t;
    for id in good {
        let polls: Vec<f64> = frames
            .iter()
            .filter(|f| f.unit == id)
            .map(|f| f.t)
            .collect();
        // From the first poll on (unit 3's timeouts included), no cycle of a good unit is longer
        // than the interval plus the one timeout unit 3 costs a cycle.
        let longest = polls.windows(2).map(|w| w[1] - w[0]).fold(0.0f64, f64::max);
        assert!(
            longest <= interval + timeout,
            "unit {id}: {longest:.3} s between two polls, more than {interval} s + {timeout} s ({:?})",
            polls.iter().map(|t| t - first).collect::<Vec<_>>()
        );
        // One fast request a second after unit 3 went offline (the slow class is due once a
        // minute): 5 in 5 s, allowing one for where the window cuts the cadence.
        let in_window = polls
            .iter()
            .filter(|&&t| t > offline_at && t <= offline_at + window)
            .count();
        eprintln!("unit {id}: longest cycle {longest:.3} s, {in_window} polls in the {window} s after unit 3 went offline");
        assert!(
            (4..=6).contains(&in_window),
            "unit {id} was asked {in_window} times in the {window} s after unit 3 went offline"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_over_tcp_against_pymodbus_rtu_framer_polls_the_units_and_isolates_a_silent_one() {
    use std::sync::atomic::Ordering::Relaxed;
    let (dir, path) = site("");
    let mut spec = detectors_spec([7, 9]);
    spec.as_array_mut()
        .expect("spec")
        .push(json!({"unit": 7, "area": "holding", "address": 200, "type": "UINT16", "order": "ABCD", "value": 412}));
    let (_server, port) = start_pymodbus_rtu_over_tcp(&spec, dir.path());
    let address = format!("127.0.0.1:{port}");
    // The technician's read over RTU framing gets the value; Modbus TCP framing to the same
    // serial server gets nothing, so the frames really are RTU.
    let out = parkguard(args(&[
        "modbus",
        "read",
        "--rtu-over-tcp",
        &address,
        "--unit",
        "7",
        "200",
        "1",
    ]))
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.split_whitespace().nth(3) == Some("412")),
        "{stdout}"
    );
    let out = parkguard(args(&[
        "modbus",
        "read",
        "--tcp",
        &address,
        "--unit",
        "7",
        "200",
        "1",
        "--timeout-ms",
        "300",
    ]))
    .await;
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    std::fs::write(
        &path,
        detectors_site(
            [7, 8, 9],
            &format!("transport = \"rtu_over_tcp\"\naddress = \"{address}\""),
        ),
    )
    .expect("site");
    let gateway = Gateway::start(Config::load(&path).unwrap_or_else(|p| panic!("{p:#?}")))
        .await
        .expect("start");
    let metrics = gateway.metrics.modbus("bus");
    eventually(
        "units 7 and 9 polled, silent unit 8 offline",
        Duration::from_secs(20),
        || async {
            metrics.polls_ok.load(Relaxed) >= 6
                && metrics.units_offline.load(Relaxed) == 1
                && comm_loss(&gateway).await == ["d8"]
        },
    )
    .await;
    assert_eq!(
        metrics.polls_failed.load(Relaxed),
        3,
        "only unit 8's three timeouts fail"
    );
    gateway.shutdown().await;
}
