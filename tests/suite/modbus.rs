//! Modbus polling against the in-process simulator (a tokio-modbus server) over TCP, RTU on a
//! socat pseudo-terminal pair, and RTU over TCP: readings reach InfluxDB with the profile's
//! decoding, and on one bus carrying 8 units a silent unit goes offline while a busy one and
//! the healthy ones keep their cadence.

use crate::support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use parkguard::config::{Config, Parity, SerialConfig};
use parkguard::decode::registers::Area;
use parkguard::pipeline::Gateway;
use parkguard::sim::modbus::{Behaviour, SimulatedBus};
use support::*;
use tokio_modbus::prelude::ExceptionCode;

async fn serve(bus: SimulatedBus) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(bus.serve_tcp(listener));
    port
}

/// A location with a Chinese name, as in the parks: it must survive every stage as a tag.
const LOCATION: &str = "配电房";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meter_and_gas_detector_readings_reach_influxdb_decoded_by_their_profiles() {
    let influx = influxd();
    create_database(&influx, "pg").await;
    let bus = SimulatedBus::new([1, 2]);
    let meter = bus.unit(1).expect("unit 1");
    meter.set_words(Area::Holding, 20, &[2301, 2298, 2310]);
    meter.set_words(Area::Holding, 30, &[0xFFFF, 0xFB50]); // pa = -1200 W
    meter.set_words(Area::Holding, 111, &[355, 0x7FFF]); // t1 35.5, t2 probe open
    meter.set_words(Area::Holding, 120, &[0x0101]);
    let gas = bus.unit(2).expect("unit 2");
    gas.set_words(Area::Holding, 3, &[2]); // high alarm
    gas.set_words(Area::Holding, 8, &[0xCCCD, 0x4244]); // 49.2 %LEL, CDAB
    let port = serve(bus).await;
    let site_text = format!(
        "{header}[[devices]]\nid = \"m1\"\nlocation = \"配电房\"\nprofile = \"acrel_adw300_3p\"\n\
         [[devices]]\nid = \"g1\"\nlocation = \"配电房\"\nprofile = \"gas_detector_lel\"\n\
         [[modbus]]\nname = \"rs485-1\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{port}\"\ntimeout_ms = 500\n\
         [[modbus.units]]\ndevice = \"m1\"\nunit_id = 1\n[[modbus.units]]\ndevice = \"g1\"\nunit_id = 2\n\
         [[influx]]\nname = \"i\"\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"pg\"\nbatch_age_ms = 100\n",
        influx.url(),
        header = site_header(LOCATION, ""),
    );
    let (_dir, path) = site(&site_text);
    let gateway = Gateway::start(Config::load(&path).unwrap_or_else(|p| panic!("{p:#?}")))
        .await
        .expect("start");
    eventually("meter and gas rows", Duration::from_secs(20), || async {
        !rows(&influxql(&influx, "pg", "SELECT * FROM electrical").await).is_empty()
            && !rows(&influxql(&influx, "pg", "SELECT * FROM gas").await).is_empty()
    })
    .await;
    let m = &rows(
        &influxql(
            &influx,
            "pg",
            "SELECT * FROM electrical WHERE ua > 0 LIMIT 1",
        )
        .await,
    )[0];
    assert_eq!(m["location"], "配电房");
    assert_eq!(m["ua"].as_f64(), Some(230.1));
    assert_eq!(m["pa"], -1200);
    assert_eq!(m["t1"].as_f64(), Some(35.5));
    assert!(
        m.get("t2").is_none_or(|v| v.is_null()),
        "an open probe has no value"
    );
    assert_eq!(m["t2_quality"], "invalid");
    assert_eq!(m["leak_alarm"], true);
    assert_eq!(m["phase_loss"], true);
    let g = &rows(&influxql(&influx, "pg", "SELECT * FROM gas WHERE lel > 0 LIMIT 1").await)[0];
    assert_eq!(g["status"], "high_alarm");
    assert_eq!(g["lel"].as_f64(), Some(49.2));
    gateway.shutdown().await;
}

/// Eight arcm_combo_detector units on one connection (`link` is the `[[modbus]]` line
/// settings): unit 3 never answers and unit 5 answers busy (0x06) every other time. Unit 3
/// goes offline; every other unit keeps its 1 s cadence within one timeout (200 ms).
async fn fault_isolation_on_one_bus(bus: SimulatedBus, link: &str) {
    let mut site_text = site_header(LOCATION, "");
    for id in 1..=8 {
        site_text.push_str(&format!("[[devices]]\nid = \"d{id}\"\nlocation = \"配电房\"\nprofile = \"arcm_combo_detector\"\n"));
    }
    site_text.push_str(&format!(
        "[[modbus]]\nname = \"bus\"\n{link}\ntimeout_ms = 200\noffline_after_failures = 3\noffline_retry_s = 60\n"
    ));
    for id in 1..=8 {
        site_text.push_str(&format!(
            "[[modbus.units]]\ndevice = \"d{id}\"\nunit_id = {id}\n"
        ));
    }
    let (_dir, path) = site(&site_text);
    let gateway = Gateway::start(Config::load(&path).unwrap_or_else(|p| panic!("{p:#?}")))
        .await
        .expect("start");
    let metrics = gateway.metrics.modbus("bus");
    let started = std::time::Instant::now();
    eventually("unit 3 offline", Duration::from_secs(20), || {
        let metrics = std::sync::Arc::clone(&metrics);
        async move { metrics.units_offline.load(Ordering::Relaxed) == 1 }
    })
    .await;
    // Unit 3 costs three timeouts (0.6 s) and is then left alone for a minute.
    for id in 1..=8 {
        bus.unit(id).expect("unit").take_arrivals();
    }
    let window = Duration::from_secs(5);
    tokio::time::sleep(window).await;
    let interval = Duration::from_millis(1000);
    let timeout = Duration::from_millis(200);
    for id in [1u8, 2, 4, 5, 6, 7, 8] {
        let arrivals = bus.unit(id).expect("unit").take_arrivals();
        // One fast request a second (the slow class is due once a minute): 5 in 5 s, allowing
        // one for where the window cuts the cadence.
        assert!(
            (4..=6).contains(&arrivals.len()),
            "unit {id} was asked {} times in {window:?}",
            arrivals.len()
        );
        let longest_cycle = arrivals
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default();
        assert!(
            longest_cycle <= interval + timeout,
            "unit {id}: {longest_cycle:?} between two polls, more than {interval:?} + {timeout:?}"
        );
    }
    assert!(
        bus.unit(3).expect("unit 3").take_arrivals().is_empty(),
        "offline unit 3 is not retried before offline_retry_s"
    );
    assert!(
        metrics.exceptions.load(Ordering::Relaxed) >= 2,
        "unit 5's busy answers are counted"
    );
    assert_eq!(
        metrics.units_offline.load(Ordering::Relaxed),
        1,
        "a busy unit is not offline"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    gateway.shutdown().await;
}

fn bus_with_silent_3_and_busy_5() -> SimulatedBus {
    let bus = SimulatedBus::new(1..=8);
    bus.unit(3)
        .expect("unit 3")
        .set_behaviour(Behaviour::Silent);
    bus.unit(5)
        .expect("unit 5")
        .set_behaviour(Behaviour::ExceptionEveryOther(
            ExceptionCode::ServerDeviceBusy,
        ));
    bus
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_silent_and_busy_units_do_not_stall_the_other_units_on_their_connection() {
    let bus = bus_with_silent_3_and_busy_5();
    let port = serve(bus.clone()).await;
    fault_isolation_on_one_bus(
        bus,
        &format!("transport = \"tcp\"\naddress = \"127.0.0.1:{port}\""),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_serial_silent_and_busy_units_do_not_stall_the_other_units_on_the_bus() {
    let pty = pty_pair();
    let bus = bus_with_silent_3_and_busy_5();
    let settings = SerialConfig {
        baud: 19200,
        parity: Parity::Even,
        data_bits: 8,
        stop_bits: 1,
    };
    let device_end = pty.device_end.clone();
    let server = bus.clone();
    tokio::spawn(async move { server.serve_rtu_serial(&device_end, &settings).await });
    fault_isolation_on_one_bus(
        bus,
        &format!(
            "transport = \"rtu\"\naddress = \"{}\"\nserial = {{ baud = 19200, parity = \"even\" }}",
            pty.gateway_end
        ),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_serial_readings_reach_influxdb_decoded_by_their_profiles() {
    let influx = influxd();
    create_database(&influx, "pg").await;
    let pty = pty_pair();
    let bus = SimulatedBus::new([1, 2]);
    bus.unit(1)
        .expect("unit 1")
        .set_words(Area::Holding, 20, &[2301, 2298, 2310]);
    bus.unit(2)
        .expect("unit 2")
        .set_words(Area::Holding, 8, &[0xCCCD, 0x4244]); // 49.2 %LEL, CDAB
    let device_end = pty.device_end.clone();
    tokio::spawn(async move {
        bus.serve_rtu_serial(&device_end, &SerialConfig::default())
            .await
    });
    let site_text = format!(
        "{header}[[devices]]\nid = \"m1\"\nlocation = \"配电房\"\nprofile = \"acrel_adw300_3p\"\n\
         [[devices]]\nid = \"g1\"\nlocation = \"配电房\"\nprofile = \"gas_detector_lel\"\n\
         [[modbus]]\nname = \"rs485-1\"\ntransport = \"rtu\"\naddress = \"{}\"\ntimeout_ms = 500\nrequest_pause_ms = 20\n\
         [[modbus.units]]\ndevice = \"m1\"\nunit_id = 1\n[[modbus.units]]\ndevice = \"g1\"\nunit_id = 2\n\
         [[influx]]\nname = \"i\"\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"pg\"\nbatch_age_ms = 100\n",
        pty.gateway_end,
        influx.url(),
        header = site_header(LOCATION, ""),
    );
    let (_dir, path) = site(&site_text);
    let gateway = Gateway::start(Config::load(&path).unwrap_or_else(|p| panic!("{p:#?}")))
        .await
        .expect("start");
    eventually(
        "meter and gas rows over RTU",
        Duration::from_secs(20),
        || async {
            !rows(&influxql(&influx, "pg", "SELECT ua FROM electrical WHERE ua > 0").await)
                .is_empty()
                && !rows(&influxql(&influx, "pg", "SELECT lel FROM gas WHERE lel > 0").await)
                    .is_empty()
        },
    )
    .await;
    let m = &rows(
        &influxql(
            &influx,
            "pg",
            "SELECT ua FROM electrical WHERE ua > 0 LIMIT 1",
        )
        .await,
    )[0];
    assert_eq!(m["ua"].as_f64(), Some(230.1));
    let g = &rows(&influxql(&influx, "pg", "SELECT lel FROM gas WHERE lel > 0 LIMIT 1").await)[0];
    assert_eq!(g["lel"].as_f64(), Some(49.2));
    assert_eq!(
        gateway
            .metrics
            .modbus("rs485-1")
            .polls_failed
            .load(Ordering::Relaxed),
        0
    );
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_over_tcp_serial_server_carries_several_units() {
    let bus = SimulatedBus::new([7, 9]);
    bus.unit(7)
        .expect("unit 7")
        .set_words(Area::Holding, 0, &[412]);
    bus.unit(9)
        .expect("unit 9")
        .set_words(Area::Holding, 0, &[88]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(bus.clone().serve_rtu_over_tcp(listener));
    let mut site_text = site_header(LOCATION, "");
    for id in [7, 9] {
        site_text.push_str(&format!("[[devices]]\nid = \"d{id}\"\nlocation = \"配电房\"\nprofile = \"arcm_combo_detector\"\n"));
    }
    site_text.push_str(&format!(
        "[[modbus]]\nname = \"dtu\"\ntransport = \"rtu_over_tcp\"\naddress = \"127.0.0.1:{port}\"\ntimeout_ms = 500\n\
         [[modbus.units]]\ndevice = \"d7\"\nunit_id = 7\n[[modbus.units]]\ndevice = \"d9\"\nunit_id = 9\n"
    ));
    let (_dir, path) = site(&site_text);
    let gateway = Gateway::start(Config::load(&path).unwrap_or_else(|p| panic!("{p:#?}")))
        .await
        .expect("start");
    let metrics = gateway.metrics.modbus("dtu");
    eventually(
        "both units polled over RTU framing",
        Duration::from_secs(20),
        || {
            let metrics = std::sync::Arc::clone(&metrics);
            async move { metrics.polls_ok.load(Ordering::Relaxed) >= 4 }
        },
    )
    .await;
    assert_eq!(metrics.polls_failed.load(Ordering::Relaxed), 0);
    assert!(bus.unit(7).expect("7").requests() >= 2 && bus.unit(9).expect("9").requests() >= 2);
    gateway.shutdown().await;
}

#[tokio::test]
async fn writes_reach_the_device_and_refusals_are_reported() {
    use parkguard::config::ModbusLink;
    use parkguard::ingest::modbus::{write, RequestError, Write};
    let bus = SimulatedBus::new([1, 2]);
    bus.unit(2)
        .expect("unit 2")
        .set_behaviour(Behaviour::Exception(ExceptionCode::IllegalDataAddress));
    let port = serve(bus.clone()).await;
    let link = ModbusLink::tcp(format!("127.0.0.1:{port}"));
    let limit = Duration::from_millis(500);
    // Set the leakage alarm threshold (register 16) to 500 mA, then reset the latch (20 = 1).
    write(
        &link,
        1,
        &Write::Registers {
            start: 16,
            words: vec![500, 200],
        },
        limit,
    )
    .await
    .expect("write two registers");
    write(
        &link,
        1,
        &Write::Registers {
            start: 20,
            words: vec![1],
        },
        limit,
    )
    .await
    .expect("write one register");
    write(
        &link,
        1,
        &Write::Coils {
            start: 3,
            bits: vec![true],
        },
        limit,
    )
    .await
    .expect("write a coil");
    let mut ctx = parkguard::ingest::modbus::connect(&link, limit)
        .await
        .expect("connect");
    use tokio_modbus::prelude::{Reader, Slave, SlaveContext};
    ctx.set_slave(Slave(1));
    let words = ctx
        .read_holding_registers(16, 5)
        .await
        .expect("transport")
        .expect("answer");
    assert_eq!(words, [500, 200, 0, 0, 1]);
    let coils = ctx
        .read_coils(3, 1)
        .await
        .expect("transport")
        .expect("answer");
    assert_eq!(coils, [true]);
    let refused = write(
        &link,
        2,
        &Write::Registers {
            start: 0,
            words: vec![1],
        },
        limit,
    )
    .await;
    assert!(
        matches!(refused, Err(RequestError::Exception(ref e)) if e.contains("IllegalDataAddress")),
        "{refused:?}"
    );
    let empty = write(
        &link,
        1,
        &Write::Coils {
            start: 0,
            bits: vec![],
        },
        limit,
    )
    .await;
    assert!(matches!(empty, Err(RequestError::Empty)));
    let (dead_port, _held) = reserved_port();
    let dead = format!("127.0.0.1:{dead_port}");
    let unreachable = write(
        &ModbusLink::tcp(dead),
        1,
        &Write::Registers {
            start: 0,
            words: vec![1],
        },
        limit,
    )
    .await;
    assert!(
        matches!(unreachable, Err(RequestError::Link(_))),
        "{unreachable:?}"
    );
}
