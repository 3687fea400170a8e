//! `parkguard modbus read | write | scan | profile-test`.

use std::path::PathBuf;
use std::process::ExitCode;

use super::current_thread_runtime;
use crate::EXIT_INVALID_CONFIG;

/// How to reach a Modbus device: exactly one of --tcp, --rtu-over-tcp or --serial.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("link").required(true).multiple(false)))]
pub struct LinkArgs {
    /// Modbus TCP, `host:port`.
    #[arg(long, group = "link")]
    tcp: Option<String>,
    /// RTU frames over TCP through a serial server in transparent mode, `host:port`.
    #[arg(long, group = "link")]
    rtu_over_tcp: Option<String>,
    /// RTU on a serial port (RS-485 adapter), e.g. /dev/ttyUSB0.
    #[arg(long, group = "link")]
    serial: Option<String>,
    #[arg(long, default_value_t = 9600)]
    baud: u32,
    /// none, even or odd.
    #[arg(long, default_value = "none")]
    parity: String,
    #[arg(long, default_value_t = 8)]
    data_bits: u8,
    #[arg(long, default_value_t = 1)]
    stop_bits: u8,
}

impl LinkArgs {
    /// The link the arguments describe; a wrong argument is reported and ends the command.
    fn link(&self) -> Result<parkguard::config::ModbusLink, ExitCode> {
        self.parse().map_err(|message| {
            eprintln!("{message}");
            ExitCode::from(EXIT_INVALID_CONFIG)
        })
    }

    fn parse(&self) -> Result<parkguard::config::ModbusLink, String> {
        use parkguard::config::{ModbusLink, ModbusTransport, Parity, SerialConfig};
        let parity = match self.parity.as_str() {
            "none" => Parity::None,
            "even" => Parity::Even,
            "odd" => Parity::Odd,
            other => return Err(format!("unknown parity `{other}`: none, even or odd")),
        };
        let serial = SerialConfig {
            baud: self.baud,
            parity,
            data_bits: self.data_bits,
            stop_bits: self.stop_bits,
        };
        let (transport, address) = match (&self.tcp, &self.rtu_over_tcp, &self.serial) {
            (Some(a), _, _) => (ModbusTransport::Tcp, a.clone()),
            (_, Some(a), _) => (ModbusTransport::RtuOverTcp, a.clone()),
            (_, _, Some(p)) => (ModbusTransport::Rtu, p.clone()),
            _ => return Err("give --tcp, --rtu-over-tcp or --serial".into()),
        };
        Ok(ModbusLink {
            transport,
            address,
            serial,
        })
    }
}

pub fn modbus_read(
    link: &LinkArgs,
    unit: u8,
    area: &str,
    address: u16,
    count: u16,
    base: u16,
    timeout_ms: u64,
) -> ExitCode {
    use parkguard::decode::inspect;
    use parkguard::decode::registers::Area;
    let link = match link.link() {
        Ok(link) => link,
        Err(code) => return code,
    };
    let (area, function, max) = match area {
        "holding" => (Area::Holding, "FC03 holding registers", 125),
        "input" => (Area::Input, "FC04 input registers", 125),
        "coil" => (Area::Coil, "FC01 coils", 2000),
        "discrete" => (Area::DiscreteInput, "FC02 discrete inputs", 2000),
        other => {
            eprintln!("unknown area `{other}`: holding, input, coil or discrete");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    if count == 0 || count > max {
        eprintln!("count must be 1 to {max} for {function}");
        return ExitCode::from(EXIT_INVALID_CONFIG);
    }
    let Some(wire) = address.checked_sub(base) else {
        eprintln!("address {address} is below the base {base}");
        return ExitCode::from(EXIT_INVALID_CONFIG);
    };
    if u32::from(wire) + u32::from(count) > 65_536 {
        eprintln!("address {address} and count {count} run past the last address (65535)");
        return ExitCode::from(EXIT_INVALID_CONFIG);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let limit = std::time::Duration::from_millis(timeout_ms.max(1));
    let answer = runtime.block_on(parkguard::ingest::modbus::read_once(
        &link, unit, area, wire, count, limit,
    ));
    let words = match answer {
        Ok(words) => words,
        Err(err) => {
            eprintln!(
                "{} unit {unit}, {function} {address}..{}: {err}",
                link.address,
                u32::from(address) + u32::from(count) - 1
            );
            return ExitCode::FAILURE;
        }
    };
    println!(
        "{} unit {unit}, {function} {address}..{} (wire address {wire}{}), {} {}",
        link.address,
        u32::from(address) + u32::from(count) - 1,
        if base > 0 {
            format!(", manual counts from {base}")
        } else {
            String::new()
        },
        words.len(),
        if area.is_bit() { "bits" } else { "words" }
    );
    if area.is_bit() {
        let bits: Vec<bool> = words.iter().map(|w| *w != 0).collect();
        print!("{}", inspect::bits_table(address, &bits));
    } else {
        print!("{}", inspect::words_table(address, &words));
        print!("{}", inspect::every_order_table(address, &words));
    }
    ExitCode::SUCCESS
}

pub fn parse_area(area: &str) -> Result<parkguard::decode::registers::Area, ExitCode> {
    use parkguard::decode::registers::Area;
    match area {
        "holding" => Ok(Area::Holding),
        "input" => Ok(Area::Input),
        "coil" => Ok(Area::Coil),
        "discrete" => Ok(Area::DiscreteInput),
        other => {
            eprintln!("unknown area `{other}`: holding, input, coil or discrete");
            Err(ExitCode::from(EXIT_INVALID_CONFIG))
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub fn modbus_write(
    link: &LinkArgs,
    unit: u8,
    area: &str,
    address: u16,
    values: &[String],
    base: u16,
    yes: bool,
    timeout_ms: u64,
) -> ExitCode {
    use parkguard::decode::registers::Area;
    use parkguard::ingest::modbus::{read_once, write, Write};
    let link = match link.link() {
        Ok(link) => link,
        Err(code) => return code,
    };
    let area = match parse_area(area) {
        Ok(Area::Holding) => Area::Holding,
        Ok(Area::Coil) => Area::Coil,
        Ok(_) => {
            eprintln!("only holding registers and coils can be written");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
        Err(code) => return code,
    };
    let Some(wire) = address.checked_sub(base) else {
        eprintln!("address {address} is below the base {base}");
        return ExitCode::from(EXIT_INVALID_CONFIG);
    };
    let mut words = Vec::new();
    for value in values {
        let parsed = match value
            .strip_prefix("0x")
            .or_else(|| value.strip_prefix("0X"))
        {
            Some(hex) => u16::from_str_radix(hex, 16).ok(),
            None => value
                .parse::<u16>()
                .ok()
                .or_else(|| value.parse::<i16>().ok().map(|v| v as u16)),
        };
        match parsed {
            Some(word) if area == Area::Coil && word > 1 => {
                eprintln!("`{value}`: a coil is 0 or 1");
                return ExitCode::from(EXIT_INVALID_CONFIG);
            }
            Some(word) => words.push(word),
            None => {
                eprintln!("`{value}` is not a 16-bit value (decimal, negative, or 0x hex)");
                return ExitCode::from(EXIT_INVALID_CONFIG);
            }
        }
    }
    let what = if area == Area::Coil {
        "coil"
    } else {
        "register"
    };
    let plan = words
        .iter()
        .enumerate()
        .map(|(i, w)| format!("{what} {} = {w}", u32::from(address) + i as u32))
        .collect::<Vec<_>>()
        .join(", ");
    if !yes {
        use std::io::BufRead;
        eprint!("Write {plan} on unit {unit} at {}? [y/N] ", link.address);
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("Nothing written.");
            return ExitCode::FAILURE;
        }
    }
    let request = if area == Area::Coil {
        Write::Coils {
            start: wire,
            bits: words.iter().map(|w| *w == 1).collect(),
        }
    } else {
        Write::Registers {
            start: wire,
            words: words.clone(),
        }
    };
    let runtime = match current_thread_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let limit = std::time::Duration::from_millis(timeout_ms.max(1));
    if let Err(err) = runtime.block_on(write(&link, unit, &request, limit)) {
        eprintln!("{} unit {unit}: {err}", link.address);
        return ExitCode::FAILURE;
    }
    println!("written: {plan}");
    let count = words.len() as u16;
    match runtime.block_on(read_once(&link, unit, area, wire, count, limit)) {
        Ok(back) if back == words => {
            println!("read back: {back:?} (as written)");
            ExitCode::SUCCESS
        }
        Ok(back) => {
            println!("read back: {back:?} (differs: the device may clamp or ignore the value)");
            ExitCode::FAILURE
        }
        Err(err) => {
            println!("read back failed: {err}");
            ExitCode::FAILURE
        }
    }
}

pub fn modbus_scan(
    link: &LinkArgs,
    from: u8,
    to: u8,
    probe_address: u16,
    area: &str,
    timeout_ms: u64,
    try_settings: bool,
) -> ExitCode {
    use parkguard::config::{ModbusTransport, Parity};
    use parkguard::ingest::modbus::{read_once, WriteError};
    let link = match link.link() {
        Ok(link) => link,
        Err(code) => return code,
    };
    let area = match parse_area(area) {
        Ok(area) => area,
        Err(code) => return code,
    };
    if from == 0 || to < from {
        eprintln!("give unit ids with 1 <= --from <= --to");
        return ExitCode::from(EXIT_INVALID_CONFIG);
    }
    let mut settings = vec![link.serial];
    if try_settings {
        if link.transport != ModbusTransport::Rtu {
            eprintln!("--try-settings is for --serial lines");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
        settings.clear();
        for baud in [9600, 19200, 4800, 38400, 115_200, 2400] {
            for parity in [Parity::None, Parity::Even, Parity::Odd] {
                settings.push(parkguard::config::SerialConfig {
                    baud,
                    parity,
                    ..link.serial
                });
            }
        }
    }
    let runtime = match current_thread_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let limit = std::time::Duration::from_millis(timeout_ms.max(1));
    let mut found = 0;
    for serial in settings {
        let mut probe = link.clone();
        probe.serial = serial;
        let line = if link.transport == ModbusTransport::Rtu {
            let parity = match serial.parity {
                Parity::None => "N",
                Parity::Even => "E",
                Parity::Odd => "O",
            };
            format!(
                "{} {} {}{}{}",
                link.address, serial.baud, serial.data_bits, parity, serial.stop_bits
            )
        } else {
            link.address.clone()
        };
        eprintln!("scanning {line}, units {from}-{to} ...");
        for unit in from..=to {
            match runtime.block_on(read_once(&probe, unit, area, probe_address, 1, limit)) {
                Ok(words) => {
                    found += 1;
                    println!(
                        "{line}: unit {unit} answers ({:?} {probe_address} = {})",
                        area,
                        words.first().copied().unwrap_or(0)
                    );
                }
                Err(WriteError::Exception(exception)) => {
                    found += 1;
                    println!("{line}: unit {unit} answers with exception {exception} (present; probe another address)");
                }
                Err(_) => {}
            }
        }
    }
    println!("{found} unit(s) found");
    if found > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

pub fn profile_test(
    link: &LinkArgs,
    unit: u8,
    profile: &str,
    profiles_dir: &std::path::Path,
    timeout_ms: u64,
) -> ExitCode {
    use parkguard::decode::inspect;
    let link = match link.link() {
        Ok(link) => link,
        Err(code) => return code,
    };
    let path = if std::path::Path::new(profile).is_file() {
        PathBuf::from(profile)
    } else {
        profiles_dir.join(format!("{profile}.toml"))
    };
    let parsed = std::fs::read_to_string(&path)
        .map_err(|e| e.to_string())
        .and_then(|text| {
            toml::from_str::<parkguard::config::Profile>(&text).map_err(|e| e.to_string())
        });
    let profile = match parsed {
        Ok(profile) => profile,
        Err(err) => {
            eprintln!("{}: {err}", path.display());
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    if profile.modbus.is_none() {
        eprintln!(
            "{}: the profile has no [modbus] register map",
            path.display()
        );
        return ExitCode::from(EXIT_INVALID_CONFIG);
    }
    let runtime = match current_thread_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let limit = std::time::Duration::from_millis(timeout_ms.max(1));
    let result = match runtime.block_on(parkguard::ingest::modbus::profile_test(
        &link, unit, &profile, limit,
    )) {
        Ok(result) => result,
        Err(err) => {
            eprintln!("{}: {err}", path.display());
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    println!(
        "{} unit {unit} with profile {} ({} {}{})",
        link.address,
        path.display(),
        profile.manufacturer.as_deref().unwrap_or("?"),
        profile.model.as_deref().unwrap_or("?"),
        profile
            .firmware
            .as_deref()
            .map(|f| format!(", firmware {f}"))
            .unwrap_or_default()
    );
    print!("{}", inspect::checks_table(&result.checks));
    let flags = result.flags_set();
    println!(
        "status flags set: {}",
        if flags.is_empty() {
            "none".to_string()
        } else {
            flags.join(", ")
        }
    );
    for failure in &result.failures {
        println!("READ FAILED: {failure}");
    }
    let implausible = result.implausible();
    if result.failures.is_empty() && implausible == 0 {
        println!("result: every quantity read and plausible");
        ExitCode::SUCCESS
    } else {
        println!(
            "result: {} read(s) failed, {implausible} value(s) implausible",
            result.failures.len()
        );
        ExitCode::FAILURE
    }
}
