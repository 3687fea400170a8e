//! parkguard's GB/T 26875.3 encoder and decoder against the golden frames in
//! tests/golden/gb26875, which the independent test centre (tests/interop/gb26875_centre.py)
//! made from the standard's description and explains byte by byte in that folder's README.
//! Every frame parkguard can send is encoded from the golden's meaning and must equal its
//! bytes; every golden decodes to its meaning; the corrupt one is refused for its stated
//! reason.

use std::path::Path;

use parkguard::config::northbound::gb18030;
use parkguard::northbound::gb26875::frame::{Decoder, Frame, FrameError, TimeTag};
use parkguard::northbound::gb26875::unit::{self, parse_downlink, Component, Downlink};
use serde_json::Value as Json;

fn golden_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/gb26875"))
}

fn hex_bytes(name: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(golden_dir().join(format!("{name}.hex")))
        .unwrap_or_else(|e| panic!("{name}.hex: {e}"));
    let digits: String = text.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("hex"))
        .collect()
}

fn meaning(name: &str) -> Json {
    let text = std::fs::read_to_string(golden_dir().join(format!("{name}.json")))
        .unwrap_or_else(|e| panic!("{name}.json: {e}"));
    serde_json::from_str(&text).expect("json")
}

/// `YYYY-MM-DDTHH:MM:SS` as a time tag: second, minute, hour, day, month, year - 2000.
fn tag(text: &Json) -> TimeTag {
    let t = text.as_str().expect("time");
    let n = |range: std::ops::Range<usize>| t[range].parse::<u16>().expect("number");
    [
        n(17..19) as u8,
        n(14..16) as u8,
        n(11..13) as u8,
        n(8..10) as u8,
        n(5..7) as u8,
        (n(0..4) - 2000) as u8,
    ]
}

fn component(o: &Json) -> Component {
    Component {
        system_type: o["system_type"].as_u64().expect("system_type") as u8,
        system_address: o["system_address"].as_u64().expect("system_address") as u8,
        component_type: o["component_type"].as_u64().unwrap_or(0) as u8,
        component_address: o["component_address"].as_u64().unwrap_or(0) as u32,
        description: gb18030(o["description"].as_str().unwrap_or("")),
    }
}

/// The application data parkguard makes for the golden's meaning.
fn unit_of(unit: &Json) -> Vec<u8> {
    if unit.is_null() {
        return Vec::new();
    }
    let o = &unit["objects"][0];
    let n = |key: &str| o[key].as_i64().unwrap_or_else(|| panic!("{key} in {o}"));
    match unit["type"].as_u64().expect("type") {
        2 => unit::component_state(&component(o), n("state") as u16, tag(&o["time"])),
        3 => unit::analog_value(
            &component(o),
            n("analog_type") as u8,
            n("value") as i16,
            tag(&o["time"]),
        ),
        4 => unit::operation_record(
            &component(o),
            n("operation") as u8,
            n("operator") as u8,
            tag(&o["time"]),
        ),
        21 => unit::device_state(n("state") as u8, tag(&o["time"])),
        24 => unit::device_operation(n("operation") as u8, n("operator") as u8, tag(&o["time"])),
        other => panic!("parkguard does not send type {other}"),
    }
}

fn frame_of(m: &Json, unit: Vec<u8>) -> Frame {
    Frame {
        serial: m["serial"].as_u64().expect("serial") as u16,
        user_version: m["version"][1].as_u64().expect("version") as u8,
        time: tag(&m["time"]),
        source: m["source"].as_u64().expect("source"),
        destination: m["destination"].as_u64().expect("destination"),
        command: m["command"].as_u64().expect("command") as u8,
        unit,
    }
}

fn decode_one(bytes: &[u8]) -> Result<Frame, FrameError> {
    let mut decoder = Decoder::default();
    decoder.push(bytes);
    let frame = decoder.next_frame().expect("a whole frame");
    assert_eq!(decoder.buffered(), 0, "bytes left after the frame");
    frame
}

/// What the gateway sends (send data, confirm, deny): encoded from the meaning, byte for
/// byte the golden.
#[test]
fn every_frame_parkguard_sends_is_the_golden_byte_for_byte() {
    for name in [
        "fire_smoke",
        "gas_analog",
        "operation_confirm",
        "operation_false_alarm",
        "uitd_state_channel_fault",
        "duty_check_answer",
        "clock_sync_confirm",
        "duty_check_confirm",
        "uitd_time",
    ] {
        let m = meaning(name);
        if name == "uitd_time" {
            // Type 28 (the device's clock) has no time tag of its own; parkguard does not
            // send it unasked, so only its framing is checked here.
            let golden = hex_bytes(name);
            let frame = decode_one(&golden).expect("decodes");
            assert_eq!(frame.encode(), golden, "{name}");
            continue;
        }
        let encoded = frame_of(&m, unit_of(&m["unit"])).encode();
        assert_eq!(
            encoded,
            hex_bytes(name),
            "{name}: parkguard's bytes differ from the golden"
        );
    }
}

/// What the centre sends (confirm, deny, clock sync, duty check): decoded as the golden
/// says, and a control command's data understood.
#[test]
fn every_golden_decodes_to_its_meaning() {
    for name in [
        "fire_smoke",
        "fire_smoke_confirm",
        "gas_analog",
        "gas_analog_deny",
        "operation_confirm",
        "operation_false_alarm",
        "uitd_state_channel_fault",
        "system_state",
        "clock_sync",
        "clock_sync_confirm",
        "duty_check",
        "duty_check_confirm",
        "duty_check_answer",
    ] {
        let m = meaning(name);
        let frame = decode_one(&hex_bytes(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected = frame_of(&m, frame.unit.clone());
        assert_eq!(frame, expected, "{name}: header");
        if m["unit"].is_null() {
            assert!(frame.unit.is_empty(), "{name}: no application data");
            continue;
        }
        assert_eq!(
            u64::from(frame.unit[0]),
            m["unit"]["type"].as_u64().expect("type"),
            "{name}: type flag"
        );
        assert_eq!(frame.unit[1], 1, "{name}: one object");
    }
    let clock = decode_one(&hex_bytes("clock_sync")).expect("clock sync");
    assert_eq!(
        parse_downlink(&clock.unit),
        Ok(Downlink::ClockSync(tag(
            &meaning("clock_sync")["unit"]["objects"][0]["time"]
        )))
    );
    let duty = decode_one(&hex_bytes("duty_check")).expect("duty check");
    assert_eq!(
        parse_downlink(&duty.unit),
        Ok(Downlink::DutyCheck {
            timeout_minutes: 10
        })
    );
}

#[test]
fn the_corrupt_golden_is_refused_for_its_checksum_and_the_next_frame_still_decodes() {
    assert_eq!(meaning("corrupt_checksum")["error"], "checksum");
    let mut stream = hex_bytes("corrupt_checksum");
    stream.extend_from_slice(b"noise");
    stream.extend_from_slice(&hex_bytes("fire_smoke_confirm"));
    let mut decoder = Decoder::default();
    decoder.push(&stream);
    match decoder.next_frame() {
        Some(Err(FrameError::Checksum { serial: 1, .. })) => {}
        other => panic!("expected a checksum refusal of serial 1: {other:?}"),
    }
    assert!(matches!(
        decoder.next_frame(),
        Some(Err(FrameError::Start { skipped: 5 }))
    ));
    let confirm = decoder.next_frame().expect("frame").expect("good");
    assert_eq!(confirm.command, 3);
    assert_eq!(confirm.serial, 1);
    assert!(decoder.next_frame().is_none());
}

/// A stream cut anywhere gives the same frames as the whole.
#[test]
fn frames_split_at_every_byte_decode_the_same() {
    let whole = hex_bytes("fire_smoke");
    for cut in 1..whole.len() {
        let mut decoder = Decoder::default();
        decoder.push(&whole[..cut]);
        assert!(decoder.next_frame().is_none(), "complete at {cut}?");
        decoder.push(&whole[cut..]);
        let frame = decoder.next_frame().expect("frame").expect("good");
        assert_eq!(frame.encode(), whole);
    }
}

/// The centre's own check of the goldens and of its protocol handling (an in-process device
/// written in the self-test only): it must hold before the daemon is tried against it.
#[test]
fn the_independent_centre_passes_its_self_test() {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/gb26875_centre.py"
    );
    let out = std::process::Command::new("python3")
        .args([script, "--self-test"])
        .arg(golden_dir())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
