//! Golden fixtures for the register decoder: each folder under tests/fixtures/registers holds
//! `input.toml` (a shipped profile's id and blocks of raw words as a device answers them) and
//! `expected.toml` (every reading, in profile order, with its quality). Each bug fix adds a case.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use parkguard::config::{Profile, SourceFile};
use parkguard::decode::registers::{Area, RegisterDecoder};
use parkguard::model::{Quality, Tags, Value};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    profile: String,
    block: Vec<Block>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Block {
    area: Area,
    start: u16,
    words: Vec<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expected {
    reading: Vec<ExpectedReading>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedReading {
    quantity: String,
    value: toml::Value,
    quality: String,
}

fn load<T: serde::de::DeserializeOwned>(path: &Path) -> T {
    SourceFile::read(path)
        .unwrap_or_else(|p| panic!("{p}"))
        .deserialize()
        .unwrap_or_else(|p| panic!("{p:#?}"))
}

fn run_case(dir: &Path) -> Result<(), String> {
    let input: Input = load(&dir.join("input.toml"));
    let expected: Expected = load(&dir.join("expected.toml"));
    let profile_path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("firmware-config/profiles")
        .join(format!("{}.toml", input.profile));
    let profile: Profile = load(&profile_path);
    let modbus = profile.modbus.as_ref().ok_or("profile has no [modbus]")?;
    let mut memory: BTreeMap<(Area, u16), u16> = BTreeMap::new();
    for block in &input.block {
        for (i, w) in block.words.iter().enumerate() {
            memory.insert((block.area, block.start + i as u16), *w);
        }
    }
    let tags = Arc::new(Tags::default());
    let measurement: Arc<str> = Arc::from(profile.measurement());
    let mut readings = Vec::new();
    for mapping in &modbus.registers {
        let decoder = RegisterDecoder::new(mapping, modbus.address_base);
        let words: Option<Vec<u16>> = (0..decoder.width())
            .map(|i| {
                memory
                    .get(&(decoder.area(), decoder.pdu_address + i))
                    .copied()
            })
            .collect();
        let words =
            words.ok_or_else(|| format!("input lacks the words of `{}`", mapping.quantity))?;
        decoder.readings(&words, &tags, &measurement, 0, &mut readings);
    }
    if readings.len() != expected.reading.len() {
        return Err(format!(
            "{} readings, expected {}",
            readings.len(),
            expected.reading.len()
        ));
    }
    for (got, want) in readings.iter().zip(&expected.reading) {
        let context = format!("quantity `{}`", want.quantity);
        if got.quantity.as_ref() != want.quantity {
            return Err(format!("{context}: got quantity `{}`", got.quantity));
        }
        let quality = match want.quality.as_str() {
            "good" => Quality::Good,
            "invalid" => Quality::Invalid,
            other => {
                return Err(format!(
                    "{context}: unknown quality `{other}` in expected.toml"
                ))
            }
        };
        if got.quality != quality {
            return Err(format!(
                "{context}: quality {:?}, expected {quality:?}",
                got.quality
            ));
        }
        if quality != Quality::Good {
            continue;
        }
        let matches = match (&got.value, &want.value) {
            (Value::Float(a), toml::Value::Float(b)) => a == b,
            (Value::Int(a), toml::Value::Integer(b)) => a == b,
            (Value::Bool(a), toml::Value::Boolean(b)) => a == b,
            (Value::Text(a), toml::Value::String(b)) => a.as_ref() == b,
            _ => false,
        };
        if !matches {
            return Err(format!(
                "{context}: got {:?}, expected {}",
                got.value, want.value
            ));
        }
    }
    Ok(())
}

#[test]
fn every_register_fixture_decodes_to_its_expected_readings() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/registers");
    let mut failures = Vec::new();
    let mut cases = 0;
    for entry in std::fs::read_dir(&root).expect("fixtures folder") {
        let dir = entry.expect("entry").path();
        if dir.is_dir() {
            cases += 1;
            if let Err(err) = run_case(&dir) {
                failures.push(format!("{}: {err}", dir.display()));
            }
        }
    }
    assert!(cases >= 3, "only {cases} fixture cases");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
