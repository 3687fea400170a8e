//! `parkguard modbus read`, the technician's first look at a device, run as a program against
//! the simulator over Modbus TCP and over RTU on a socat pseudo-terminal pair: the raw words,
//! every type in all four word orders side by side, and clear errors for an exception and a
//! unit that never answers.

use crate::support;

use std::process::{Command, Output};

use parkguard::config::{Parity, SerialConfig};
use parkguard::decode::registers::Area;
use parkguard::sim::modbus::{Behaviour, SimulatedBus};
use support::*;
use tokio_modbus::prelude::ExceptionCode;

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// 230.5 as f32 in ABCD at 100-101, word-swapped (CDAB) at 102-103, and -2 as i16 at 104.
fn load(bus: &SimulatedBus) {
    let unit = bus.unit(1).expect("unit 1");
    let bits = 230.5f32.to_bits();
    let (hi, lo) = ((bits >> 16) as u16, (bits & 0xffff) as u16);
    unit.set_words(Area::Holding, 100, &[hi, lo, lo, hi, 0xFFFE]);
    unit.set_words(Area::Coil, 0, &[1, 0, 1, 1]);
}

/// The cells of the `ty` row (u32, i32, f32, u64, i64, f64) for `address` in the every-order
/// table: ABCD, CDAB, BADC, DCBA.
fn cells(stdout: &str, address: u16, ty: &str) -> Vec<String> {
    let lines: Vec<&str> = stdout.lines().collect();
    let first = if ty.ends_with("64") { "u64" } else { "u32" };
    let start = lines
        .iter()
        .position(|l| {
            l.split_whitespace()
                .take(2)
                .eq([address.to_string().as_str(), first])
        })
        .unwrap_or_else(|| panic!("no {first} rows for {address}:\n{stdout}"));
    let offset = match &ty[..1] {
        "u" => 0,
        "i" => 1,
        _ => 2,
    };
    let row = lines[start + offset];
    let mut cells: Vec<String> = row.split_whitespace().map(str::to_string).collect();
    if offset == 0 {
        cells.remove(0);
    }
    assert_eq!(cells[0], ty, "{row}");
    cells[1..].to_vec()
}

fn f32_cells(stdout: &str, address: u16) -> Vec<String> {
    cells(stdout, address, "f32")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modbus_read_over_tcp_shows_words_and_every_word_order() {
    let bus = SimulatedBus::new([1, 2, 3]);
    load(&bus);
    bus.unit(2)
        .expect("unit 2")
        .set_behaviour(Behaviour::Exception(ExceptionCode::IllegalDataAddress));
    bus.unit(3)
        .expect("unit 3")
        .set_behaviour(Behaviour::Silent);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    tokio::spawn(bus.clone().serve_tcp(listener));

    let out = parkguard(args(&[
        "modbus", "read", "--tcp", &address, "--unit", "1", "100", "5",
    ]))
    .await;
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("FC03 holding registers 100..104"),
        "{stdout}"
    );
    assert!(
        stdout.contains("    104  0x0068  0xFFFE   65534      -2  1111 1111 1111 1110"),
        "{stdout}"
    );
    // The plain float reads right in ABCD, the word-swapped one in CDAB.
    assert_eq!(f32_cells(&stdout, 100)[0], "230.5");
    assert_ne!(f32_cells(&stdout, 100)[1], "230.5");
    assert_eq!(f32_cells(&stdout, 102)[1], "230.5");
    assert!(stdout.contains("64-bit values"));

    // A manual that counts from 1: address 101 is wire address 100.
    let out = parkguard(args(&[
        "modbus", "read", "--tcp", &address, "--unit", "1", "--base", "1", "101", "2",
    ]))
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("wire address 100, manual counts from 1"),
        "{stdout}"
    );
    assert_eq!(f32_cells(&stdout, 101)[0], "230.5");

    let out = parkguard(args(&[
        "modbus", "read", "--tcp", &address, "--area", "coil", "0", "4",
    ]))
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("FC01 coils 0..3"), "{stdout}");
    assert!(stdout.contains("      0  0x0000  1 0 1 1"), "{stdout}");

    let out = parkguard(args(&[
        "modbus", "read", "--tcp", &address, "--unit", "2", "0", "2",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refused") && stderr.contains("IllegalDataAddress"),
        "{stderr}"
    );

    let out = parkguard(args(&[
        "modbus",
        "read",
        "--tcp",
        &address,
        "--unit",
        "3",
        "--timeout-ms",
        "300",
        "0",
        "2",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no answer within 300 ms"), "{stderr}");

    let out = parkguard(args(&["modbus", "read", "--tcp", &address, "0", "126"])).await;
    assert_eq!(
        out.status.code(),
        Some(64),
        "126 registers is more than one request may ask: a usage error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modbus_read_write_and_profile_test_over_rtu_on_a_serial_line() {
    let pty = pty_pair();
    let bus = SimulatedBus::new([1, 2]);
    load(&bus);
    bus.unit(2)
        .expect("unit 2")
        .set_words(Area::Holding, 0, &gas_words(true));
    let watched = bus.clone();
    let settings = SerialConfig {
        baud: 19200,
        parity: Parity::Even,
        data_bits: 8,
        stop_bits: 1,
    };
    let device_end = pty.device_end.clone();
    tokio::spawn(async move { bus.serve_rtu_serial(&device_end, &settings).await });
    let out = parkguard(args(&[
        "modbus",
        "read",
        "--serial",
        &pty.gateway_end,
        "--baud",
        "19200",
        "--parity",
        "even",
        "--unit",
        "1",
        "100",
        "4",
    ]))
    .await;
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(f32_cells(&stdout, 100)[0], "230.5", "{stdout}");
    assert_eq!(f32_cells(&stdout, 102)[1], "230.5", "{stdout}");

    let line = |extra: &[&str]| {
        let mut all = vec![
            "--serial",
            pty.gateway_end.as_str(),
            "--baud",
            "19200",
            "--parity",
            "even",
        ];
        all.extend_from_slice(extra);
        all.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let mut write = args(&["modbus", "write"]);
    write.extend(line(&["--unit", "2", "--yes", "4", "200"]));
    let out = parkguard(write).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        watched.unit(2).and_then(|u| u.word(Area::Holding, 4)),
        Some(200)
    );

    let dir = profiles_dir();
    let mut test = args(&["modbus", "profile-test"]);
    test.extend(line(&[
        "--unit",
        "2",
        "--profile",
        "gas_detector_lel",
        "--profiles-dir",
        &dir,
    ]));
    let out = parkguard(test).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("lel ") && l.contains(" 30 ")),
        "{stdout}"
    );
    // The set-point just written, read through the profile's scale.
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("al1_set ") && l.contains(" 20 ")),
        "{stdout}"
    );
}

fn profiles_dir() -> String {
    format!("{}/firmware-config/profiles", env!("CARGO_MANIFEST_DIR"))
}

/// P5 gas detector registers at 30 %LEL (low alarm), the float word-swapped as the profile says.
fn gas_words(float_order_cdab: bool) -> Vec<u16> {
    let bits = 30.0f32.to_bits();
    let (hi, lo) = ((bits >> 16) as u16, (bits & 0xffff) as u16);
    let float = if float_order_cdab { [lo, hi] } else { [hi, lo] };
    vec![300, 1, 1, 1, 250, 500, 0, 1800, float[0], float[1]]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_test_judges_every_quantity_and_names_the_flags() {
    let bus = SimulatedBus::new([1, 2, 3, 4]);
    bus.unit(1)
        .expect("unit")
        .set_words(Area::Holding, 0, &gas_words(true));
    // The same detector with the float in the wrong word order (a wiring of the wrong profile).
    bus.unit(2)
        .expect("unit")
        .set_words(Area::Holding, 0, &gas_words(false));
    // P4 combined detector: CT open (bit 8) and a temperature probe open (0x7FFF).
    let detector = bus.unit(3).expect("unit");
    detector.set_words(
        Area::Holding,
        0,
        &[40, 321, 0x7FFF, 315, 330, 2, 0, 0, 1 << 8],
    );
    detector.set_words(Area::Holding, 16, &[300, 200, 70, 50]);
    bus.unit(4).expect("unit").set_behaviour(Behaviour::Silent);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    tokio::spawn(bus.clone().serve_tcp(listener));
    let dir = profiles_dir();
    let test = |unit: &str, profile: &str| {
        parkguard(args(&[
            "modbus",
            "profile-test",
            "--tcp",
            &address,
            "--unit",
            unit,
            "--profile",
            profile,
            "--profiles-dir",
            &dir,
            "--timeout-ms",
            "300",
        ]))
    };

    let out = test("1", "gas_detector_lel").await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let lel = stdout
        .lines()
        .find(|l| l.starts_with("lel "))
        .expect("lel row");
    assert!(
        lel.contains("30") && lel.contains("%LEL") && lel.contains("ok (range 0..100)"),
        "{lel}"
    );
    let status = stdout
        .lines()
        .find(|l| l.starts_with("status "))
        .expect("status row");
    assert!(status.contains("low_alarm"), "{status}");
    assert!(stdout.contains("result: every quantity read and plausible"));

    let out = test("2", "gas_detector_lel").await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let lel = stdout
        .lines()
        .find(|l| l.starts_with("lel "))
        .expect("lel row");
    assert!(
        lel.contains("IMPLAUSIBLE float: check the word order"),
        "{lel}"
    );

    let out = test("3", "arcm_combo_detector").await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("status flags set: ct_open\n"), "{stdout}");
    let t2 = stdout
        .lines()
        .find(|l| l.starts_with("t2 "))
        .expect("t2 row");
    assert!(t2.contains("INVALID"), "{t2}");
    let t1 = stdout
        .lines()
        .find(|l| l.starts_with("t1 "))
        .expect("t1 row");
    assert!(t1.contains("32.1") && t1.contains("°C"), "{t1}");

    let out = test("4", "gas_detector_lel").await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout.contains("READ FAILED") && stdout.contains("no answer within 300 ms"),
        "{stdout}"
    );
}

/// Against pymodbus, which encodes the values itself: `modbus read` shows the word-swapped
/// float in the CDAB column and `profile-test` reads the P5 map right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_and_profile_test_agree_with_a_pymodbus_server() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let u16_at = |address: u16, value: u64| serde_json::json!({"unit": 1, "area": "holding", "address": address, "type": "UINT16", "order": "ABCD", "value": value});
    let spec = serde_json::json!([
        u16_at(0, 300), u16_at(1, 1), u16_at(2, 1), u16_at(3, 1), u16_at(4, 250), u16_at(5, 500),
        u16_at(6, 0), u16_at(7, 1800),
        {"unit": 1, "area": "holding", "address": 8, "type": "FLOAT32", "order": "CDAB", "value": 30.0},
        {"unit": 1, "area": "holding", "address": 20, "type": "FLOAT32", "order": "ABCD", "value": -12.25},
        {"unit": 1, "area": "holding", "address": 22, "type": "INT32", "order": "DCBA", "value": -123456},
    ]);
    let (_server, port) = support::pymodbus::start_pymodbus(&spec, dir.path());
    let address = format!("127.0.0.1:{port}");

    let out = parkguard(args(&["modbus", "read", "--tcp", &address, "8", "2"])).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(f32_cells(&stdout, 8)[1], "30", "{stdout}");

    let out = parkguard(args(&["modbus", "read", "--tcp", &address, "20", "4"])).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(f32_cells(&stdout, 20)[0], "-12.25", "{stdout}");
    // ABCD, CDAB, BADC, DCBA: the value reads right only in DCBA.
    let i32_cells = cells(&stdout, 22, "i32");
    assert_eq!(i32_cells[3], "-123456", "{stdout}");
    assert!(i32_cells[..3].iter().all(|c| c != "-123456"), "{stdout}");

    let out = parkguard(args(&[
        "modbus",
        "profile-test",
        "--tcp",
        &address,
        "--profile",
        "gas_detector_lel",
        "--profiles-dir",
        &profiles_dir(),
    ]))
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("lel ") && l.contains(" 30 ")),
        "{stdout}"
    );
}

async fn parkguard_with_stdin(args: Vec<String>, input: &'static str) -> Output {
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_parkguard"))
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run parkguard");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("answer");
        child.wait_with_output().expect("output")
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modbus_write_asks_first_writes_and_reads_back() {
    let bus = SimulatedBus::new([1]);
    let unit = bus.unit(1).expect("unit");
    unit.set_words(Area::Holding, 16, &[300, 200]);
    unit.set_words(Area::Coil, 0, &[1, 1, 1, 1]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    tokio::spawn(bus.clone().serve_tcp(listener));
    let read = |start: u16, count: usize, area: Area| {
        let unit = bus.unit(1).expect("unit");
        (0..count)
            .map(|i| unit.word(area, start + i as u16))
            .collect::<Vec<_>>()
    };

    // Declined: nothing is written.
    let out = parkguard_with_stdin(
        args(&["modbus", "write", "--tcp", &address, "16", "250"]),
        "n\n",
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Write register 16 = 250 on unit 1"));
    assert_eq!(read(16, 1, Area::Holding), [Some(300)]);

    // Confirmed at the prompt.
    let out = parkguard_with_stdin(
        args(&["modbus", "write", "--tcp", &address, "16", "250", "0xB4"]),
        "y\n",
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("read back: [250, 180] (as written)"));
    assert_eq!(read(16, 2, Area::Holding), [Some(250), Some(180)]);

    // A coil with --yes.
    let out = parkguard(args(&[
        "modbus", "write", "--tcp", &address, "--area", "coil", "--yes", "2", "0",
    ]))
    .await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(read(0, 4, Area::Coil), [Some(1), Some(1), Some(0), Some(1)]);

    let out = parkguard(args(&[
        "modbus", "write", "--tcp", &address, "--area", "input", "--yes", "0", "1",
    ]))
    .await;
    assert_eq!(
        out.status.code(),
        Some(64),
        "input registers are read-only: a usage error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modbus_scan_finds_the_units_that_answer_over_tcp_and_serial() {
    let bus = SimulatedBus::new([1, 7]);
    bus.unit(1)
        .expect("unit")
        .set_words(Area::Holding, 0, &[42]);
    bus.unit(7)
        .expect("unit")
        .set_behaviour(Behaviour::Exception(ExceptionCode::IllegalDataAddress));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    tokio::spawn(bus.clone().serve_tcp(listener));
    let out = parkguard(args(&[
        "modbus",
        "scan",
        "--tcp",
        &address,
        "--to",
        "10",
        "--timeout-ms",
        "100",
    ]))
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("unit 1 answers (Holding 0 = 42)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("unit 7 answers with exception IllegalDataAddress"),
        "{stdout}"
    );
    assert!(stdout.contains("2 unit(s) found"), "{stdout}");

    // RTU on a serial line, trying the common settings. A pseudo-terminal does not model baud
    // rate or parity, so the unit answers at every setting; what is checked is that each
    // setting is tried and reported.
    let pty = pty_pair();
    let serial_bus = SimulatedBus::new([2]);
    let device_end = pty.device_end.clone();
    tokio::spawn(async move {
        serial_bus
            .serve_rtu_serial(&device_end, &SerialConfig::default())
            .await
    });
    let out = parkguard(args(&[
        "modbus",
        "scan",
        "--serial",
        &pty.gateway_end,
        "--try-settings",
        "--from",
        "2",
        "--to",
        "3",
        "--timeout-ms",
        "100",
    ]))
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    for setting in ["9600 8N1", "19200 8E1", "2400 8O1"] {
        assert!(
            stdout.contains(&format!("{setting}: unit 2 answers")),
            "{setting}: {stdout}"
        );
    }
    assert!(!stdout.contains("unit 3"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_tap_shows_how_each_message_decodes_and_marks_errors() {
    use std::io::{BufRead, BufReader, Read};
    let mosquitto = mosquitto();
    let site_text = format!(
        "{}[[devices]]\nid = \"m1\"\nlocation = \"l\"\nprofile = \"adw300_json\"\n\
         [[mqtt]]\nname = \"park\"\nhost = \"127.0.0.1\"\nport = {}\n\
         [[mqtt.subscriptions]]\ntopic = \"park/{{park}}/meter/{{device}}/up\"\nprofile = \"adw300_json\"\n",
        site_header("l", ""),
        mosquitto.port
    );
    let (_dir, path) = site(&site_text);
    let mut tap = Command::new(env!("CARGO_BIN_EXE_parkguard"))
        .args(["mqtt", "tap", "-c"])
        .arg(&path)
        .args(["--count", "3", "park/#"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start tap");
    let mut stderr = BufReader::new(tap.stderr.take().expect("stderr"));
    let mut line = String::new();
    while !line.contains("subscribed to park/#") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).expect("read") > 0,
            "tap ended before subscribing"
        );
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    let good = format!(
        r#"{{"ts":{now_ms},"ua":230.1,"ub":229.8,"uc":231.0,"ia":12.5,"ib":11.0,"ic":13.25,"p_total":8350,"leakage":42,"t":[35.5,36.0,34.25,41.0]}}"#
    );
    mosquitto_pub(mosquitto.port, "park/p/meter/m1/up", &[good.as_bytes()]);
    mosquitto_pub(mosquitto.port, "park/p/meter/m1/up", &[b"{\"ts\": 17"]);
    mosquitto_pub(mosquitto.port, "park/p/meter/m9/up", &[good.as_bytes()]);
    let mut stdout = String::new();
    tap.stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut stdout)
        .expect("read stdout");
    let status = tap.wait().expect("wait");
    assert!(status.success());
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].contains("park/p/meter/m1/up  m1 (adw300_json): ")
            && lines[0].contains("ua=230.1 V")
            && lines[0].contains("leakage=42 mA"),
        "{stdout}"
    );
    assert!(lines[1].contains("!! DECODE ERROR bad_json"), "{stdout}");
    assert!(lines[2].contains("payload: {\"ts\": 17"), "{stdout}");
    // Undeclared devices are accepted by default (`unknown_devices`), and flagged.
    assert!(
        lines[3].contains("park/p/meter/m9/up  m9 (adw300_json)"),
        "{stdout}"
    );
    assert!(
        lines[4].starts_with("!!   problem: unknown_device: device `m9` is not declared"),
        "{stdout}"
    );
}
