//! Interoperability with a Modbus implementation parkguard did not write: a pymodbus server
//! (installed from PyPI by ./scripts/test) encodes typed values with its own
//! `convert_to_registers` and serves them; parkguard polls it and the readings in InfluxDB
//! must equal the values the server holds: every data type in all four word orders, and the
//! shipped P1 (three-phase meter) and P5 (gas detector) register maps.
//!
//! The expected values here are computed from the profiles' TOML directly, not through
//! parkguard's decoder, so a decoding mistake cannot cancel itself out.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use parkguard::config::Config;
use parkguard::pipeline::Gateway;
use serde_json::{json, Value as Json};
use support::pymodbus::start_pymodbus;
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
