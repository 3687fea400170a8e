//! The demo's simulated park: a site file for a small-factory park (about 20 enterprises, each
//! with a 4G meter and an NB-IoT smoke detector publishing over MQTT, a combined
//! electrical-fire detector on Modbus, and a gas detector in every other one), the Modbus units
//! that answer for the detectors, MQTT publishers for the meters and smoke detectors, and a
//! script of hazards so that alarms occur within the first minute.
//!
//! Owns: the simulated devices' values over time. Must not touch: the daemon's stages; it talks
//! to them only over MQTT and Modbus like real devices do.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, MqttOptions, QoS};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::decode::registers::Area;
use crate::sim::modbus::{Behaviour, SimulatedBus, SimulatedUnit};

/// The shipped device profiles and rule sets, embedded so that the demo runs from the binary
/// alone.
pub const PROFILES: &[(&str, &str)] = &[
    (
        "adw300_json",
        include_str!("../../firmware-config/profiles/adw300_json.toml"),
    ),
    (
        "nb_smoke",
        include_str!("../../firmware-config/profiles/nb_smoke.toml"),
    ),
    (
        "arcm_combo_detector",
        include_str!("../../firmware-config/profiles/arcm_combo_detector.toml"),
    ),
    (
        "gas_detector_lel",
        include_str!("../../firmware-config/profiles/gas_detector_lel.toml"),
    ),
];
pub const DEFAULT_RULES: &str = include_str!("../../firmware-config/rules/default.toml");

const ENTERPRISE_NAMES: [&str; 24] = [
    "宏达五金加工厂",
    "利鑫服装厂",
    "金盛塑料制品",
    "永丰包装印刷",
    "华美家具厂",
    "鑫源电子组装",
    "恒通汽配",
    "佳佳食品作坊",
    "新星纺织",
    "东方木业",
    "腾飞机械加工",
    "广源五金电镀",
    "明辉灯饰",
    "顺达物流仓储",
    "富康鞋业",
    "嘉华玩具厂",
    "天宇模具",
    "安泰电器维修",
    "瑞丰印染",
    "盛世箱包",
    "立新服装辅料",
    "宏图彩印",
    "金鼎不锈钢",
    "百川化工试剂",
];
const PARK: &str = "xinghe";

/// Where the demo's pieces listen and what they write to.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub dir: PathBuf,
    pub enterprises: usize,
    pub web_listen: String,
    pub mqtt_listen: String,
    /// The simulated detectors' Modbus TCP port.
    pub modbus_port: u16,
    /// Password of the demo logins (`operator`, `viewer`, `admin`).
    pub password: String,
    /// Extra TOML appended to the site (an `[[influx]]` section).
    pub influx: Option<String>,
}

fn meter_id(e: usize) -> String {
    format!("meter-{:02}", e + 1)
}
fn smoke_id(e: usize) -> String {
    // IMEI-like ids, as NB-IoT detectors report them.
    format!("8699750312{:05}", e + 1)
}
fn detector_id(e: usize) -> String {
    format!("arcm-{:02}", e + 1)
}
fn gas_id(e: usize) -> String {
    format!("gas-{:02}", e + 1)
}
fn has_gas(e: usize) -> bool {
    e % 2 == 1
}
fn detector_unit(e: usize) -> u8 {
    (e + 1) as u8
}
/// The enterprise (0-based) whose gas leak closes a valve and runs a fan.
const LINKAGE_ENTERPRISE: usize = 3;
/// Its relay module's unit id.
const RELAY_UNIT: u8 = 200;

fn gas_unit(e: usize) -> u8 {
    (100 + e + 1) as u8
}

/// Writes the demo's profiles, rules and site file into `options.dir`; returns the site path.
pub fn write_site(options: &DemoOptions) -> std::io::Result<PathBuf> {
    let profiles = options.dir.join("profiles");
    let rules = options.dir.join("rules");
    std::fs::create_dir_all(&profiles)?;
    std::fs::create_dir_all(&rules)?;
    for (name, text) in PROFILES {
        std::fs::write(profiles.join(format!("{name}.toml")), text)?;
    }
    std::fs::write(rules.join("default.toml"), DEFAULT_RULES)?;
    let path = options.dir.join("site.toml");
    std::fs::write(&path, site_text(options))?;
    Ok(path)
}

fn site_text(options: &DemoOptions) -> String {
    let mqtt_port = options
        .mqtt_listen
        .rsplit_once(':')
        .map_or("1883", |(_, port)| port);
    let mut s = String::new();
    let _ = write!(
        s,
        "# Written by `parkguard demo`; rewritten at every start.\n\
         [gateway]\nname = \"demo-gw\"\nprofiles_dir = \"profiles\"\nstore = \"parkguard.db\"\n\
         shutdown_grace_s = 3\n\n\
         [broker.embedded]\nlisten = \"{}\"\n\n\
         [[parks]]\nid = \"{PARK}\"\nname = \"星河小微企业园 (demo)\"\n\n",
        options.mqtt_listen
    );
    for e in 0..options.enterprises {
        let name = ENTERPRISE_NAMES[e % ENTERPRISE_NAMES.len()];
        let _ = write!(
            s,
            "[[enterprises]]\nid = \"e{n:02}\"\npark = \"{PARK}\"\nname = \"{name}\"\n\
             [[locations]]\nid = \"e{n:02}-box\"\nenterprise = \"e{n:02}\"\nname = \"配电箱\"\n\
             [[locations]]\nid = \"e{n:02}-shop\"\nenterprise = \"e{n:02}\"\nname = \"车间\"\n\
             [[devices]]\nid = \"{meter}\"\nlocation = \"e{n:02}-box\"\nprofile = \"adw300_json\"\nname = \"总进线电表\"\n\
             [[devices]]\nid = \"{detector}\"\nlocation = \"e{n:02}-box\"\nprofile = \"arcm_combo_detector\"\nname = \"电气火灾探测器\"\n\
             [[devices]]\nid = \"{smoke}\"\nlocation = \"e{n:02}-shop\"\nprofile = \"nb_smoke\"\nname = \"车间烟感\"\n",
            n = e + 1,
            meter = meter_id(e),
            detector = detector_id(e),
            smoke = smoke_id(e),
        );
        if has_gas(e) {
            let _ = write!(
                s,
                "[[devices]]\nid = \"{}\"\nlocation = \"e{:02}-shop\"\nprofile = \"gas_detector_lel\"\nname = \"可燃气体探测器\"\n",
                gas_id(e),
                e + 1
            );
        }
        s.push('\n');
    }
    let _ = write!(
        s,
        "[[mqtt]]\nname = \"embedded\"\nhost = \"127.0.0.1\"\nport = {mqtt_port}\n\
         client_id = \"parkguard-demo\"\nqos = 1\n\
         [[mqtt.subscriptions]]\ntopic = \"park/{{park}}/smoke/{{device}}/up\"\nprofile = \"nb_smoke\"\n\
         [[mqtt.subscriptions]]\ntopic = \"park/{{park}}/meter/{{device}}/up\"\nprofile = \"adw300_json\"\n\n\
         [[modbus]]\nname = \"rs485-gateway\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{}\"\ntimeout_ms = 500\n",
        options.modbus_port
    );
    for e in 0..options.enterprises {
        let _ = write!(
            s,
            "[[modbus.units]]\ndevice = \"{}\"\nunit_id = {}\n",
            detector_id(e),
            detector_unit(e)
        );
        if has_gas(e) {
            let _ = write!(
                s,
                "[[modbus.units]]\ndevice = \"{}\"\nunit_id = {}\n",
                gas_id(e),
                gas_unit(e)
            );
        }
    }
    // Linkage: the enterprise with the gas leak has a relay module on the bus switching the
    // kitchen's emergency gas valve (limit switch on discrete input 0) and its exhaust fan.
    if options.enterprises > LINKAGE_ENTERPRISE {
        let n = LINKAGE_ENTERPRISE + 1;
        let _ = write!(
            s,
            "\n[[outputs]]\nid = \"e{n:02}-gas-valve\"\nkind = \"gas_valve\"\nlocation = \"e{n:02}-shop\"\nname = \"车间燃气紧急切断阀\"\n\
             modbus = {{ connection = \"rs485-gateway\", unit_id = {RELAY_UNIT}, area = \"coil\", address = 0, readback = {{ area = \"discrete_input\", address = 0 }} }}\n\
             [[outputs]]\nid = \"e{n:02}-exhaust-fan\"\nkind = \"fan\"\nlocation = \"e{n:02}-shop\"\nname = \"车间排风机\"\n\
             modbus = {{ connection = \"rs485-gateway\", unit_id = {RELAY_UNIT}, area = \"coil\", address = 1 }}\n\
             [[linkage]]\nname = \"燃气二级报警关阀 / gas level 2 shuts the valve\"\ndevice_kinds = [\"gas\"]\nseverity = \"critical\"\n\
             output_kinds = [\"gas_valve\"]\nscope = \"location\"\n\
             [[linkage]]\nname = \"燃气报警启动排风 / gas alarm runs the fan\"\ndevice_kinds = [\"gas\"]\nseverity = \"high\"\n\
             output_kinds = [\"fan\"]\nscope = \"location\"\nrelease = \"clear\"\n"
        );
    }
    // Pushes: every alarm's state retained on the embedded broker; the fire department's own
    // topic gets smoke fire alarms and gas level 2 at once, and whatever the operators leave
    // unacknowledged for 5 minutes.
    let web_url = if options.web_listen.ends_with(":0") {
        String::new()
    } else {
        format!("web_url = \"http://{}\"\n", options.web_listen)
    };
    let _ = write!(
        s,
        "\n[alerts]\n{web_url}\
         [[alerts.channels]]\nname = \"broker-state\"\ntype = \"mqtt\"\nmqtt = \"embedded\"\ntopic_prefix = \"parkguard/alarms\"\n\
         [[alerts.channels]]\nname = \"fire-topic\"\ntype = \"mqtt\"\nmqtt = \"embedded\"\ntopic_prefix = \"parkguard/fire\"\n\
         [[alerts.routes]]\nname = \"park-operators\"\nchannels = [\"broker-state\"]\n\
         escalate_to = \"fire-department\"\nack_deadline_s = 300\n\
         [[alerts.routes]]\nname = \"fire-department\"\nrules = [\"R13\", \"R11\"]\nseverities = [\"critical\"]\n\
         channels = [\"fire-topic\"]\nescalation_only = false\n"
    );
    let _ = write!(s, "\n[web]\nlisten = \"{}\"\n", options.web_listen);
    for (user, role) in [
        ("operator", "operator"),
        ("viewer", "viewer"),
        ("technician", "technician"),
        ("admin", "admin"),
    ] {
        let hash = crate::web::hash_password(&options.password).unwrap_or_default();
        let _ = write!(
            s,
            "[[web.users]]\nname = \"{user}\"\nrole = \"{role}\"\npassword_hash = \"{hash}\"\n"
        );
    }
    if let Some(influx) = &options.influx {
        s.push('\n');
        s.push_str(influx);
    }
    s
}

/// The hazards the demo plays, by seconds since start (enterprise indexes are 0-based).
struct Script {
    started: Instant,
    enterprises: usize,
}

/// What a device shows at one moment.
struct MeterState {
    leakage: f64,
    current: f64,
}

impl Script {
    fn t(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Ramps from `from` to `to` between `start` and `end` seconds.
    fn ramp(&self, start: f64, end: f64, from: f64, to: f64) -> f64 {
        let t = self.t();
        if t <= start {
            from
        } else if t >= end {
            to
        } else {
            from + (to - from) * (t - start) / (end - start)
        }
    }

    /// Small, smooth variation so that charts look alive.
    fn wobble(&self, seed: usize, size: f64) -> f64 {
        (self.t() / 37.0 + seed as f64 * 1.7).sin() * size
    }

    fn meter(&self, e: usize) -> MeterState {
        let mut state = MeterState {
            leakage: 60.0 + (e % 5) as f64 * 15.0 + self.wobble(e, 8.0),
            current: 18.0 + (e % 7) as f64 * 4.0 + self.wobble(e + 3, 2.0),
        };
        // Enterprise 3: insulation failing, residual current ramps to critical.
        if e == 2 % self.enterprises {
            state.leakage = self.ramp(8.0, 45.0, 90.0, 560.0);
        }
        state
    }

    fn smoke_event(&self, e: usize) -> &'static str {
        // Enterprise 7: fire alarm at 5 s.
        if e == 6 % self.enterprises && self.t() >= 5.0 {
            "alarm"
        } else {
            "heartbeat"
        }
    }

    fn lel(&self, e: usize) -> f64 {
        // Enterprise 4: a gas leak to level 2 (50 %LEL) over 40 s.
        if e == 3 % self.enterprises {
            self.ramp(12.0, 52.0, 2.0, 56.0)
        } else {
            1.0 + self.wobble(e, 0.8).abs()
        }
    }

    /// Detector registers 0-8: leak, t1..t4 (x10), arc counters, status bits.
    fn detector_words(&self, e: usize) -> [u16; 9] {
        let mut temps = [
            32.0 + self.wobble(e, 1.5),
            33.0 + self.wobble(e + 1, 1.5),
            31.5 + self.wobble(e + 2, 1.5),
            34.0 + self.wobble(e + 3, 1.5),
        ];
        let mut status = 0u16;
        // Enterprise 15: a loose terminal heats up past 70 °C.
        if e == 14 % self.enterprises {
            temps[1] = self.ramp(20.0, 50.0, 38.0, 78.0);
        }
        // Enterprise 11: a current transformer comes loose (a fault, not an alarm).
        if e == 10 % self.enterprises && self.t() >= 20.0 {
            status |= 1 << 8;
        }
        let t = |v: f64| ((v * 10.0).round() as i16) as u16;
        let leak = (40.0 + self.wobble(e, 5.0)).round() as u16;
        [
            leak,
            t(temps[0]),
            t(temps[1]),
            t(temps[2]),
            t(temps[3]),
            0,
            0,
            0,
            status,
        ]
    }
}

fn f32_cdab(value: f32) -> [u16; 2] {
    let bits = value.to_bits();
    [(bits & 0xffff) as u16, (bits >> 16) as u16]
}

fn gas_words(lel: f64) -> [u16; 10] {
    let status = if lel >= 50.0 {
        2
    } else if lel >= 25.0 {
        1
    } else {
        0
    };
    let float = f32_cdab(lel as f32);
    [
        (lel * 10.0).round() as u16,
        1,
        1,
        status,
        250,
        500,
        0,
        1800,
        float[0],
        float[1],
    ]
}

/// The simulated detectors' Modbus units, ready to serve.
pub fn modbus_bus(enterprises: usize) -> SimulatedBus {
    let mut ids = Vec::new();
    for e in 0..enterprises {
        ids.push(detector_unit(e));
        if has_gas(e) {
            ids.push(gas_unit(e));
        }
    }
    if enterprises > LINKAGE_ENTERPRISE {
        ids.push(RELAY_UNIT);
    }
    let bus = SimulatedBus::new(ids);
    if let Some(relays) = bus.unit(RELAY_UNIT) {
        // The valve's limit switch follows its coil.
        relays.mirror_coil(0, 0);
    }
    for e in 0..enterprises {
        if let Some(unit) = bus.unit(detector_unit(e)) {
            // Settings registers 16-19 as the P4 profile documents.
            unit.set_words(Area::Holding, 16, &[300, 200, 70, 50]);
        }
    }
    bus
}

struct EnterpriseUnits {
    detector: Option<Arc<SimulatedUnit>>,
    gas: Option<Arc<SimulatedUnit>>,
}

/// Runs the park until `cancel`: MQTT publishers (meters every 5 s, smoke heartbeats every
/// 30 s, smoke alarms every 5 s while present) and the detectors' registers every second.
pub async fn run(
    enterprises: usize,
    mqtt_host: String,
    mqtt_port: u16,
    bus: &SimulatedBus,
    cancel: CancellationToken,
) {
    let script = Arc::new(Script {
        started: Instant::now(),
        enterprises: enterprises.max(1),
    });
    // Per enterprise: its detector's and its gas detector's Modbus unit.
    let units: Vec<EnterpriseUnits> = (0..enterprises)
        .map(|e| EnterpriseUnits {
            detector: bus.unit(detector_unit(e)),
            gas: bus.unit(gas_unit(e)),
        })
        .collect();

    let mut options = MqttOptions::new("parkguard-demo-devices", mqtt_host, mqtt_port);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(options, 1000);
    let poller = tokio::spawn(async move {
        loop {
            if let Err(err) = events.poll().await {
                debug!(error = %err, "Demo devices: MQTT connection error; retrying.");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    });

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut second: u64 = 0;
    let mut seq: u64 = 0;
    let mut silent_set = false;
    info!(
        enterprises,
        "Simulated park running: hazards start within 5 s."
    );
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => break,
        }
        for (e, units) in units.iter().enumerate() {
            if let Some(unit) = &units.detector {
                unit.set_words(Area::Holding, 0, &script.detector_words(e));
            }
            if let Some(unit) = &units.gas {
                unit.set_words(Area::Holding, 0, &gas_words(script.lel(e)));
            }
        }
        // Enterprise 19's detector stops answering at 30 s (its RS-485 wire is cut).
        if !silent_set && script.t() >= 30.0 {
            if let Some(unit) = units
                .get(18 % units.len().max(1))
                .and_then(|u| u.detector.as_ref())
            {
                unit.set_behaviour(Behaviour::Silent);
            }
            silent_set = true;
        }
        let now_ms = crate::model::now_ms();
        for e in 0..enterprises {
            // Spread the meters over the 5-second period.
            if (second + e as u64) % 5 == 0 {
                let m = script.meter(e);
                let payload = format!(
                    r#"{{"ts":{now_ms},"ua":{:.1},"ub":{:.1},"uc":{:.1},"ia":{:.2},"ib":{:.2},"ic":{:.2},"p_total":{:.0},"leakage":{:.0},"t":[{:.1},{:.1},{:.1},{:.1}]}}"#,
                    229.0 + script.wobble(e, 2.0),
                    230.0 + script.wobble(e + 1, 2.0),
                    228.5 + script.wobble(e + 2, 2.0),
                    m.current,
                    m.current * 0.95,
                    m.current * 1.05,
                    m.current * 3.0 * 229.0 * 0.92,
                    m.leakage,
                    30.0 + script.wobble(e, 1.0),
                    31.0 + script.wobble(e + 1, 1.0),
                    30.5 + script.wobble(e + 2, 1.0),
                    32.0 + script.wobble(e + 3, 1.0),
                );
                let topic = format!("park/{PARK}/meter/{}/up", meter_id(e));
                let _ = client.try_publish(topic, QoS::AtLeastOnce, false, payload);
            }
            let event = script.smoke_event(e);
            let due = if event == "alarm" {
                second % 5 == 0
            } else {
                (second + e as u64 * 3) % 30 == 0
            };
            if due {
                seq += 1;
                let payload = format!(
                    r#"{{"dev":"{}","type":"smoke","ts":{},"seq":{seq},"event":"{event}","smoke_pct":{:.1},"temp_c":{:.1},"battery_pct":{},"hb_interval_s":30}}"#,
                    smoke_id(e),
                    now_ms / 1000,
                    if event == "alarm" { 14.5 } else { 0.3 },
                    26.0 + script.wobble(e, 1.0),
                    90 - (e % 30),
                );
                let topic = format!("park/{PARK}/smoke/{}/up", smoke_id(e));
                let _ = client.try_publish(topic, QoS::AtLeastOnce, false, payload);
            }
        }
        second += 1;
    }
    let _ = client.disconnect().await;
    poller.abort();
}

/// A random password for the demo's logins.
pub fn demo_password() -> String {
    crate::web::random_token().chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gas_registers_carry_the_float_word_swapped() {
        let words = gas_words(30.0);
        assert_eq!(words[0], 300);
        assert_eq!(words[3], 1, "low alarm status at 30 %LEL");
        let bits = (u32::from(words[9]) << 16) | u32::from(words[8]);
        assert_eq!(f32::from_bits(bits), 30.0);
    }

    #[test]
    fn demo_site_is_valid() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let options = DemoOptions {
            dir: dir.path().to_path_buf(),
            enterprises: 20,
            web_listen: "127.0.0.1:0".into(),
            mqtt_listen: "127.0.0.1:0".into(),
            modbus_port: 1502,
            password: "demo-password".into(),
            influx: None,
        };
        let path = write_site(&options).expect("write");
        let config = crate::config::Config::load(&path).expect("the demo site validates");
        assert_eq!(config.site.enterprises.len(), 20);
        assert_eq!(config.site.devices.len(), 20 * 3 + 10);
    }
}
