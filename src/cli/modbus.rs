//! `parkguard modbus read | write | scan | profile-test`.

use std::path::PathBuf;
use std::process::ExitCode;

use parkguard::decode::registers::Area;

use super::{current_thread_runtime, usage_error, EXIT_INVALID_CONFIG, EXIT_USAGE};

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
    #[arg(long, value_enum, default_value_t = ParityArg::None)]
    parity: ParityArg,
    #[arg(long, default_value_t = 8)]
    data_bits: u8,
    #[arg(long, default_value_t = 1)]
    stop_bits: u8,
}

impl LinkArgs {
    /// The link the arguments describe; a wrong argument is reported and ends the command.
    fn link(&self) -> Result<parkguard::config::ModbusLink, ExitCode> {
        self.parse().map_err(usage_error)
    }

    fn parse(&self) -> Result<parkguard::config::ModbusLink, String> {
        use parkguard::config::{ModbusLink, ModbusTransport, Parity, SerialConfig};
        let parity = match self.parity {
            ParityArg::None => Parity::None,
            ParityArg::Even => Parity::Even,
            ParityArg::Odd => Parity::Odd,
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

#[derive(clap::Subcommand)]
pub enum ModbusCommand {
    /// Reads any area, address and count from one unit and prints the raw words (decimal, hex,
    /// bits, ASCII) and every 32- and 64-bit type in all four word orders side by side.
    Read {
        #[command(flatten)]
        link: LinkArgs,
        /// Unit id (slave address), 1-247; 255 or 1 for most Modbus TCP devices.
        #[arg(long, default_value_t = 1)]
        unit: u8,
        /// holding (FC03), input (FC04), coil (FC01) or discrete (FC02).
        #[arg(long, value_enum, default_value_t = AreaArg::Holding)]
        area: AreaArg,
        /// First register or bit, as the device manual counts (see --base).
        address: u16,
        /// How many registers or bits (1-125 registers, 1-2000 bits).
        #[arg(default_value_t = 10)]
        count: u16,
        /// 1 when the manual counts addresses from 1 (register 40001 / 1 is address 0 on the wire).
        #[arg(long, default_value_t = 0)]
        base: u16,
        /// How long the device may take to answer.
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
    /// Writes registers (FC06/FC16) or coils (FC05/FC15) to one unit, e.g. a detector's alarm
    /// set-point or its latch reset; asks for confirmation unless --yes, then reads back.
    Write {
        #[command(flatten)]
        link: LinkArgs,
        #[arg(long, default_value_t = 1)]
        unit: u8,
        /// holding or coil.
        #[arg(long, value_enum, default_value_t = AreaArg::Holding)]
        area: AreaArg,
        /// First register or coil, as the device manual counts (see --base).
        address: u16,
        /// Register values (decimal or 0x hex) or coil states (0/1), one per address.
        #[arg(required = true)]
        values: Vec<String>,
        #[arg(long, default_value_t = 0)]
        base: u16,
        /// Write without asking.
        #[arg(long)]
        yes: bool,
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
    /// Finds the units on a line: reads one register from every unit id in the range and
    /// reports those that answer (an exception counts: something is there). With --serial and
    /// --try-settings, repeats for the common baud rates and parities.
    Scan {
        #[command(flatten)]
        link: LinkArgs,
        #[arg(long, default_value_t = 1)]
        from: u8,
        #[arg(long, default_value_t = 247)]
        to: u8,
        /// Register to probe (wire address) and its area.
        #[arg(long, default_value_t = 0)]
        probe_address: u16,
        #[arg(long, value_enum, default_value_t = AreaArg::Holding)]
        area: AreaArg,
        /// Per unit id; silent ids cost this long each.
        #[arg(long, default_value_t = 200)]
        timeout_ms: u64,
        /// Serial only: try 9600, 19200, 4800, 38400, 115200 and 2400 baud, each with no, even
        /// and odd parity.
        #[arg(long)]
        try_settings: bool,
    },
    /// Polls a device once with a profile and prints every quantity with its value, unit and
    /// plausibility against the profile's range, and its status flags; exit 1 when a read
    /// failed or a value is implausible.
    ProfileTest {
        #[command(flatten)]
        link: LinkArgs,
        #[arg(long, default_value_t = 1)]
        unit: u8,
        /// A profile file, or a profile id looked up in --profiles-dir.
        #[arg(long)]
        profile: String,
        #[arg(long, default_value = "firmware-config/profiles")]
        profiles_dir: PathBuf,
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
}

/// A Modbus data area, as the command line names it.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum AreaArg {
    /// Holding registers (FC03 read, FC06/FC16 write).
    Holding,
    /// Input registers (FC04).
    Input,
    /// Coils (FC01 read, FC05/FC15 write).
    Coil,
    /// Discrete inputs (FC02).
    Discrete,
}

impl From<AreaArg> for Area {
    fn from(area: AreaArg) -> Area {
        match area {
            AreaArg::Holding => Area::Holding,
            AreaArg::Input => Area::Input,
            AreaArg::Coil => Area::Coil,
            AreaArg::Discrete => Area::DiscreteInput,
        }
    }
}

/// A serial line's parity, as the command line names it.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ParityArg {
    None,
    Even,
    Odd,
}

impl ModbusCommand {
    pub fn run(self) -> ExitCode {
        match self {
            ModbusCommand::Read {
                link,
                unit,
                area,
                address,
                count,
                base,
                timeout_ms,
            } => modbus_read(&link, unit, area.into(), address, count, base, timeout_ms),
            ModbusCommand::Write {
                link,
                unit,
                area,
                address,
                values,
                base,
                yes,
                timeout_ms,
            } => modbus_write(
                &link,
                unit,
                area.into(),
                address,
                &values,
                base,
                yes,
                timeout_ms,
            ),
            ModbusCommand::Scan {
                link,
                from,
                to,
                probe_address,
                area,
                timeout_ms,
                try_settings,
            } => modbus_scan(
                &link,
                from,
                to,
                probe_address,
                area.into(),
                timeout_ms,
                try_settings,
            ),
            ModbusCommand::ProfileTest {
                link,
                unit,
                profile,
                profiles_dir,
                timeout_ms,
            } => profile_test(&link, unit, &profile, &profiles_dir, timeout_ms),
        }
    }
}

pub fn modbus_read(
    link: &LinkArgs,
    unit: u8,
    area: Area,
    address: u16,
    count: u16,
    base: u16,
    timeout_ms: u64,
) -> ExitCode {
    use parkguard::decode::inspect;

    let link = match link.link() {
        Ok(link) => link,
        Err(code) => return code,
    };
    let (function, max) = match area {
        Area::Holding => ("FC03 holding registers", 125),
        Area::Input => ("FC04 input registers", 125),
        Area::Coil => ("FC01 coils", 2000),
        Area::DiscreteInput => ("FC02 discrete inputs", 2000),
    };
    if count == 0 || count > max {
        eprintln!("count must be 1 to {max} for {function}");
        return ExitCode::from(EXIT_USAGE);
    }
    let Some(wire) = address.checked_sub(base) else {
        eprintln!("address {address} is below the base {base}");
        return ExitCode::from(EXIT_USAGE);
    };
    if u32::from(wire) + u32::from(count) > 65_536 {
        eprintln!("address {address} and count {count} run past the last address (65535)");
        return ExitCode::from(EXIT_USAGE);
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
            print_hint(&err);
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

#[allow(clippy::too_many_arguments)]
pub fn modbus_write(
    link: &LinkArgs,
    unit: u8,
    area: Area,
    address: u16,
    values: &[String],
    base: u16,
    yes: bool,
    timeout_ms: u64,
) -> ExitCode {
    use parkguard::ingest::modbus::{read_once, write, Write};
    let link = match link.link() {
        Ok(link) => link,
        Err(code) => return code,
    };
    if !matches!(area, Area::Holding | Area::Coil) {
        return usage_error("only holding registers and coils can be written");
    }
    let Some(wire) = address.checked_sub(base) else {
        eprintln!("address {address} is below the base {base}");
        return ExitCode::from(EXIT_USAGE);
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
                return ExitCode::from(EXIT_USAGE);
            }
            Some(word) => words.push(word),
            None => {
                eprintln!("`{value}` is not a 16-bit value (decimal, negative, or 0x hex)");
                return ExitCode::from(EXIT_USAGE);
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
        print_hint(&err);
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
    area: Area,
    timeout_ms: u64,
    try_settings: bool,
) -> ExitCode {
    use parkguard::config::{ModbusTransport, Parity};
    use parkguard::ingest::modbus::{read_once, RequestError};
    let link = match link.link() {
        Ok(link) => link,
        Err(code) => return code,
    };
    if from == 0 || to < from {
        eprintln!("give unit ids with 1 <= --from <= --to");
        return ExitCode::from(EXIT_USAGE);
    }
    let mut settings = vec![link.serial];
    if try_settings {
        if link.transport != ModbusTransport::Rtu {
            eprintln!("--try-settings is for --serial lines");
            return ExitCode::from(EXIT_USAGE);
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
                Err(RequestError::Exception(exception)) => {
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

/// The next step for an error whose cause says what it is (a serial port's permissions).
fn print_hint(err: &parkguard::ingest::modbus::RequestError) {
    if let parkguard::ingest::modbus::RequestError::Link(link) = err {
        if let Some(hint) = link.hint() {
            eprintln!("hint: {hint}");
        }
    }
}
