//! `parkguard modbus read`, the technician's first look at a device, run as a program against
//! the simulator over Modbus TCP and over RTU on a socat pseudo-terminal pair: the raw words,
//! every type in all four word orders side by side, and clear errors for an exception and a
//! unit that never answers.

mod support;

use std::process::{Command, Output};

use parkguard::config::{Parity, SerialConfig};
use parkguard::decode::registers::Area;
use parkguard::sim::modbus::{Behaviour, SimulatedBus};
use support::*;
use tokio_modbus::prelude::ExceptionCode;

async fn parkguard(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_parkguard"))
            .args(&args)
            .output()
            .expect("run parkguard")
    })
    .await
    .expect("join")
}

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

/// The cells of the f32 row for `address` in the every-order table: ABCD, CDAB, BADC, DCBA.
fn f32_cells(stdout: &str, address: u16) -> Vec<String> {
    let lines: Vec<&str> = stdout.lines().collect();
    let start = lines
        .iter()
        .position(|l| {
            l.split_whitespace()
                .take(2)
                .eq([address.to_string().as_str(), "u32"])
        })
        .unwrap_or_else(|| panic!("no 32-bit rows for {address}:\n{stdout}"));
    let row = lines[start + 2];
    let cells: Vec<String> = row.split_whitespace().map(str::to_string).collect();
    assert_eq!(cells[0], "f32", "{row}");
    cells[1..].to_vec()
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
        Some(2),
        "126 registers is more than one request may ask"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modbus_read_over_rtu_on_a_serial_line() {
    let pty = pty_pair();
    let bus = SimulatedBus::new([1]);
    load(&bus);
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
}
