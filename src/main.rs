//! The `parkguard` binary: command line, logging, signals and exit codes. Everything else is in
//! the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use parkguard::config::Config;

mod cli;

use cli::modbus::LinkArgs;

/// Exit code for an invalid configuration (as `check` documents).
const EXIT_INVALID_CONFIG: u8 = 2;

#[derive(Parser)]
#[command(
    name = "parkguard",
    version,
    about = "Telemetry gateway for electrical and fire safety"
)]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One command, no external services: the embedded MQTT broker, a simulated park (about
    /// 20 enterprises with meters, electrical-fire detectors, gas and smoke detectors), the
    /// daemon with the default rules and the web UI. Prints the URL and a login; alarms occur
    /// within the first minute. Ctrl-C stops it.
    Demo {
        /// Folder for the demo's site file, profiles and store (created; reused next time, so
        /// alarms survive a restart like in a real site).
        #[arg(long, default_value = "parkguard-demo")]
        dir: PathBuf,
        /// Where the web UI listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Where the embedded MQTT broker listens (the simulated sensors publish to it; so can you).
        #[arg(long, default_value = "127.0.0.1:1883")]
        mqtt_listen: String,
        /// Number of simulated enterprises.
        #[arg(long, default_value_t = 20)]
        enterprises: usize,
        /// Password of the logins `operator`, `viewer` and `admin` (random when not given).
        #[arg(long, env = "PARKGUARD_DEMO_PASSWORD")]
        password: Option<String>,
        /// Also write to this InfluxDB (e.g. http://127.0.0.1:8086): give --influx-db for
        /// InfluxDB 1.x, or --influx-bucket and --influx-org with the token in
        /// PARKGUARD_INFLUX_TOKEN for 2.x.
        #[arg(long)]
        influx_url: Option<String>,
        #[arg(long, requires = "influx_url", conflicts_with = "influx_bucket")]
        influx_db: Option<String>,
        #[arg(long, requires_all = ["influx_url", "influx_org"])]
        influx_bucket: Option<String>,
        #[arg(long, requires = "influx_bucket")]
        influx_org: Option<String>,
    },
    /// Device simulators for commissioning practice, tests and benchmarks: plays a scenario
    /// file (Modbus devices on TCP and optionally RTU on a serial line, MQTT devices through a
    /// broker), or generates load (--load).
    Sim {
        /// Scenario file (see firmware-config/scenarios/).
        #[arg(long, required_unless_present = "load")]
        scenario: Option<PathBuf>,
        /// Folder with the profiles the scenario names.
        #[arg(long, default_value = "firmware-config/profiles")]
        profiles_dir: PathBuf,
        /// Modbus TCP listen address for the scenario's Modbus devices.
        #[arg(long, default_value = "127.0.0.1:1502")]
        modbus_listen: String,
        /// Also answer as RTU on this serial device (e.g. one end of a socat pair).
        #[arg(long)]
        rtu_serial: Option<String>,
        #[arg(long, default_value_t = 9600)]
        baud: u32,
        /// The broker MQTT devices publish to, `host:port`.
        #[arg(long)]
        mqtt: Option<String>,
        /// Load mode: meter messages per second (12 readings each) through --mqtt.
        #[arg(long, requires = "mqtt")]
        load: Option<u64>,
        /// Load mode: number of devices the messages are spread over.
        #[arg(long, default_value_t = 1000)]
        devices: usize,
        /// Load mode: stop after this many seconds (default: Ctrl-C).
        #[arg(long)]
        duration_s: Option<f64>,
        /// Load mode: park id in the topics.
        #[arg(long, default_value = "xinghe")]
        park: String,
    },
    /// Run the daemon.
    Run {
        /// Site configuration file.
        #[arg(short, long, env = "PARKGUARD_CONFIG")]
        config: PathBuf,
    },
    /// Show the running daemon's condition: connections, devices offline, outbox depth, pushes
    /// waiting, active alarms. Asks the daemon over its control socket (`<store>.sock`).
    Status {
        /// Site configuration file of the running daemon (only its `gateway.store` is read).
        #[arg(short, long, env = "PARKGUARD_CONFIG")]
        config: Option<PathBuf>,
        /// The control socket itself.
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Print the daemon's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Make the running daemon re-read its site file (as SIGHUP does) and report how it went:
    /// exit 0 when reloaded; 2 with the file's errors when refused (the daemon keeps running
    /// with the configuration it had).
    Reload {
        /// Site configuration file of the running daemon (only its `gateway.store` is read).
        #[arg(short, long, env = "PARKGUARD_CONFIG")]
        config: Option<PathBuf>,
        /// The control socket itself.
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Validate a site configuration and the profiles it uses; exit 0 when valid, 2 when not.
    Check {
        /// Site configuration file.
        file: PathBuf,
        /// Also print the Modbus read plan of every profile: one line per request.
        #[arg(long)]
        plan: bool,
    },
    /// The alarm journal in the store.
    Journal {
        #[command(subcommand)]
        command: JournalCommand,
    },
    /// The outbox of batches waiting for the InfluxDB sinks.
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
    },
    /// Commissioning tools for Modbus devices.
    Modbus {
        #[command(subcommand)]
        command: ModbusCommand,
    },
    /// Commissioning tools for MQTT devices.
    Mqtt {
        #[command(subcommand)]
        command: MqttCommand,
    },
    /// Copies the store (alarm states, journal, outbox, history, sign-offs) into a new file
    /// while the daemon runs (SQLite online backup), then checks the copy's journal chain.
    Backup {
        #[command(flatten)]
        store: StoreArgs,
        /// The new file to write (never overwritten).
        output: PathBuf,
    },
    /// Web UI users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// API tokens for machine clients of the web API.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand)]
enum ModbusCommand {
    /// Reads any area, address and count from one unit and prints the raw words (decimal, hex,
    /// bits, ASCII) and every 32- and 64-bit type in all four word orders side by side.
    Read {
        #[command(flatten)]
        link: LinkArgs,
        /// Unit id (slave address), 1-247; 255 or 1 for most Modbus TCP devices.
        #[arg(long, default_value_t = 1)]
        unit: u8,
        /// holding (FC03), input (FC04), coil (FC01) or discrete (FC02).
        #[arg(long, default_value = "holding")]
        area: String,
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
        #[arg(long, default_value = "holding")]
        area: String,
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
        #[arg(long, default_value = "holding")]
        area: String,
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

#[derive(Subcommand)]
enum MqttCommand {
    /// Prints the messages on the site's broker and how each decodes with the site's
    /// subscriptions and profiles; decode errors are marked `!!` (red on a terminal). Uses a
    /// client id of its own and QoS 0, so the daemon's session is not disturbed.
    Tap {
        /// Site configuration file (broker address, credentials, TLS, subscriptions).
        #[arg(short, long, env = "PARKGUARD_CONFIG")]
        config: PathBuf,
        /// Which `[[mqtt]]` connection of the site (default: the first).
        #[arg(long)]
        connection: Option<String>,
        /// Topic filter, e.g. `park/+/smoke/#` (default: the connection's subscriptions).
        filter: Option<String>,
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<u64>,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Reads a password from standard input (the first line) and prints a `[[web.users]]`
    /// entry with its argon2 hash, to paste into the site file.
    Add {
        name: String,
        /// viewer, operator, technician or admin.
        #[arg(long, default_value = "operator")]
        role: String,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Prints a new random token (give it to the client) and the `[[web.tokens]]` entry with
    /// its hash (paste it into the site file). The token itself is not stored anywhere.
    New {
        name: String,
        /// viewer, operator, technician or admin.
        #[arg(long, default_value = "viewer")]
        role: String,
    },
}

/// Which store a maintenance command works on.
#[derive(clap::Args)]
struct StoreArgs {
    /// Site configuration file (its `gateway.store` is used).
    #[arg(short, long, env = "PARKGUARD_CONFIG", conflicts_with = "store")]
    config: Option<PathBuf>,
    /// The store file itself.
    #[arg(long)]
    store: Option<PathBuf>,
}

#[derive(Subcommand)]
enum JournalCommand {
    /// Check the hash chain: exit 0 when every entry is intact, 1 when an entry was edited or
    /// removed (the first one is named). With `--anchor`, also check the journal against the
    /// heads written outside it, which finds a chain rewritten as a whole.
    Verify {
        #[command(flatten)]
        store: StoreArgs,
        /// An anchor file (`gateway.journal_anchor_file`, or a copy shipped elsewhere).
        #[arg(long)]
        anchor: Option<PathBuf>,
    },
    /// Print the newest entries, optionally only those mentioning TEXT (alarm key, device,
    /// rule or message).
    Show {
        #[command(flatten)]
        store: StoreArgs,
        /// Only entries whose key, device, rule or message contains this.
        #[arg(long)]
        search: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

#[derive(Subcommand)]
enum OutboxCommand {
    /// What each sink still has to send (batches, points, age of the oldest), and the dead
    /// letters. Works while the daemon runs.
    Status {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Put dead letters (batches a server refused as invalid) back into the outbox, to be sent
    /// again to the sink that refused them; fix the cause first (e.g. the field type conflict
    /// the server named). Works while the daemon runs.
    RetryDead {
        #[command(flatten)]
        store: StoreArgs,
        /// Only this sink's dead letters.
        #[arg(long)]
        sink: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_json);
    match cli.command {
        Command::Check { file, plan } => check(&file, plan),
        Command::Run { config } => cli::ops::run(&config),
        Command::Status {
            config,
            socket,
            json,
        } => cli::ops::status(config.as_deref(), socket, json),
        Command::Reload { config, socket } => cli::ops::reload_command(config.as_deref(), socket),
        Command::Sim {
            scenario,
            profiles_dir,
            modbus_listen,
            rtu_serial,
            baud,
            mqtt,
            load,
            devices,
            duration_s,
            park,
        } => {
            let mqtt = match mqtt.as_deref().map(cli::sim::parse_host_port).transpose() {
                Ok(mqtt) => mqtt,
                Err(message) => {
                    eprintln!("--mqtt: {message}");
                    return ExitCode::from(EXIT_INVALID_CONFIG);
                }
            };
            match (load, mqtt) {
                (Some(rate), Some(target)) => {
                    cli::sim::sim_load(&target, &park, rate, devices, duration_s)
                }
                (_, mqtt) => cli::sim::sim_scenario(
                    scenario.as_deref(),
                    &profiles_dir,
                    &modbus_listen,
                    rtu_serial.as_deref(),
                    baud,
                    mqtt,
                ),
            }
        }
        Command::Demo {
            dir,
            listen,
            mqtt_listen,
            enterprises,
            password,
            influx_url,
            influx_db,
            influx_bucket,
            influx_org,
        } => {
            let influx = match (influx_url, influx_db, influx_bucket, influx_org) {
                (None, ..) => None,
                (Some(url), Some(db), _, _) => Some(format!(
                    "[[influx]]\nname = \"influx\"\nurl = {}\napi = \"v1\"\ndatabase = {}\n",
                    toml_string(&url),
                    toml_string(&db)
                )),
                (Some(url), None, Some(bucket), Some(org)) => Some(format!(
                    "[[influx]]\nname = \"influx\"\nurl = {}\napi = \"v2\"\nbucket = {}\norg = {}\n\
                     token = {{ env = \"PARKGUARD_INFLUX_TOKEN\" }}\n",
                    toml_string(&url),
                    toml_string(&bucket),
                    toml_string(&org)
                )),
                (Some(_), None, _, _) => {
                    eprintln!("--influx-url needs --influx-db (1.x) or --influx-bucket and --influx-org (2.x)");
                    return ExitCode::from(EXIT_INVALID_CONFIG);
                }
            };
            cli::demo::demo(parkguard::sim::park::DemoOptions {
                dir,
                enterprises: enterprises.clamp(1, 200),
                web_listen: listen,
                mqtt_listen,
                modbus_port: 0,
                password: password.unwrap_or_else(parkguard::sim::park::demo_password),
                influx,
            })
        }
        Command::Journal { command } => journal(command),
        Command::Outbox { command } => outbox(command),
        Command::Modbus {
            command:
                ModbusCommand::Read {
                    link,
                    unit,
                    area,
                    address,
                    count,
                    base,
                    timeout_ms,
                },
        } => cli::modbus::modbus_read(&link, unit, &area, address, count, base, timeout_ms),
        Command::Modbus {
            command:
                ModbusCommand::Write {
                    link,
                    unit,
                    area,
                    address,
                    values,
                    base,
                    yes,
                    timeout_ms,
                },
        } => cli::modbus::modbus_write(&link, unit, &area, address, &values, base, yes, timeout_ms),
        Command::Modbus {
            command:
                ModbusCommand::Scan {
                    link,
                    from,
                    to,
                    probe_address,
                    area,
                    timeout_ms,
                    try_settings,
                },
        } => cli::modbus::modbus_scan(
            &link,
            from,
            to,
            probe_address,
            &area,
            timeout_ms,
            try_settings,
        ),
        Command::Modbus {
            command:
                ModbusCommand::ProfileTest {
                    link,
                    unit,
                    profile,
                    profiles_dir,
                    timeout_ms,
                },
        } => cli::modbus::profile_test(&link, unit, &profile, &profiles_dir, timeout_ms),
        Command::Mqtt {
            command:
                MqttCommand::Tap {
                    config,
                    connection,
                    filter,
                    count,
                },
        } => cli::mqtt::mqtt_tap(&config, connection.as_deref(), filter, count),
        Command::Backup { store, output } => backup(store, &output),
        Command::User {
            command: UserCommand::Add { name, role },
        } => user_add(&name, &role),
        Command::Token {
            command: TokenCommand::New { name, role },
        } => token_new(&name, &role),
    }
}

fn backup(args: StoreArgs, output: &std::path::Path) -> ExitCode {
    let (path, store) = match open_store(args) {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    let bytes = match store.backup_to(output) {
        Ok(bytes) => bytes,
        Err(err) => {
            eprintln!("{} -> {}: {err}", path.display(), output.display());
            return ExitCode::FAILURE;
        }
    };
    let verified = parkguard::store::Store::open(output).and_then(|copy| copy.verify_journal());
    match verified {
        Ok(v) => match v.problem {
            None => {
                println!(
                    "{} -> {}: {:.1} MiB, journal intact ({} entries)",
                    path.display(),
                    output.display(),
                    bytes as f64 / (1024.0 * 1024.0),
                    v.entries
                );
                ExitCode::SUCCESS
            }
            Some((seq, what)) => {
                eprintln!(
                    "{}: the copy's journal entry {seq}: {what}",
                    output.display()
                );
                ExitCode::FAILURE
            }
        },
        Err(err) => {
            eprintln!("{}: {err}", output.display());
            ExitCode::FAILURE
        }
    }
}

fn parse_role(role: &str) -> Result<parkguard::config::Role, ExitCode> {
    use parkguard::config::Role;
    match role {
        "viewer" => Ok(Role::Viewer),
        "operator" => Ok(Role::Operator),
        "technician" => Ok(Role::Technician),
        "admin" => Ok(Role::Admin),
        other => {
            eprintln!("unknown role `{other}`: viewer, operator, technician or admin");
            Err(ExitCode::from(EXIT_INVALID_CONFIG))
        }
    }
}

/// A TOML basic string (quotes and backslashes escaped).
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

fn user_add(name: &str, role: &str) -> ExitCode {
    let role = match parse_role(role) {
        Ok(role) => role,
        Err(code) => return code,
    };
    use std::io::{BufRead, IsTerminal};
    if std::io::stdin().is_terminal() {
        eprintln!("Password for {name} (shown as typed; pipe it in to keep it off the screen):");
    }
    let mut password = String::new();
    if let Err(err) = std::io::stdin().lock().read_line(&mut password) {
        eprintln!("cannot read the password: {err}");
        return ExitCode::FAILURE;
    }
    let password = password.trim_end_matches(['\r', '\n']);
    if password.chars().count() < 8 {
        eprintln!("the password needs at least 8 characters");
        return ExitCode::from(EXIT_INVALID_CONFIG);
    }
    match parkguard::web::hash_password(password) {
        Ok(hash) => {
            println!(
                "[[web.users]]\nname = {}\nrole = \"{}\"\npassword_hash = {}",
                toml_string(name),
                role.as_str(),
                toml_string(&hash)
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("cannot hash the password: {err}");
            ExitCode::FAILURE
        }
    }
}

fn token_new(name: &str, role: &str) -> ExitCode {
    let role = match parse_role(role) {
        Ok(role) => role,
        Err(code) => return code,
    };
    let token = parkguard::web::random_token();
    eprintln!("Token (give it to the client; it is shown only now):");
    println!("{token}");
    eprintln!("Entry for the site file:");
    println!(
        "[[web.tokens]]\nname = {}\nrole = \"{}\"\ntoken_sha256 = \"{}\"",
        toml_string(name),
        role.as_str(),
        parkguard::web::token_sha256_hex(&token)
    );
    ExitCode::SUCCESS
}

/// Opens an existing store named by the site file or directly.
fn open_store(args: StoreArgs) -> Result<(PathBuf, parkguard::store::Store), ExitCode> {
    let path = match (args.config, args.store) {
        (_, Some(store)) => store,
        (Some(config), None) => {
            let config = load(&config)?;
            config.resolve_path(&config.site.gateway.store)
        }
        (None, None) => {
            eprintln!("give the site file (-c) or the store (--store)");
            return Err(ExitCode::from(EXIT_INVALID_CONFIG));
        }
    };
    if !path.exists() {
        eprintln!("{}: no such store", path.display());
        return Err(ExitCode::FAILURE);
    }
    match parkguard::store::Store::open(&path) {
        Ok(store) => Ok((path, store)),
        Err(err) => {
            eprintln!("{err}");
            Err(ExitCode::FAILURE)
        }
    }
}

fn journal(command: JournalCommand) -> ExitCode {
    let (args, search, limit, anchor) = match command {
        JournalCommand::Verify { store, anchor } => (store, None, None, anchor),
        JournalCommand::Show {
            store,
            search,
            limit,
        } => (store, search, Some(limit), None),
    };
    let (path, store) = match open_store(args) {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    if let Some(limit) = limit {
        return match store.journal(search.as_deref(), limit) {
            Ok(entries) => {
                for e in entries.iter().rev() {
                    println!(
                        "{:>6} {} {:<40} {:<20} {:<24} {:<9} {} {}",
                        e.seq,
                        e.at_ms,
                        e.key,
                        e.action,
                        e.state,
                        e.severity,
                        e.operator.as_deref().unwrap_or("-"),
                        e.message
                    );
                }
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("{err}");
                ExitCode::FAILURE
            }
        };
    }
    match store.verify_journal() {
        Ok(v) => match v.problem {
            None => {
                println!("{}: journal intact, {} entries", path.display(), v.entries);
                let Some(anchor) = anchor else {
                    return ExitCode::SUCCESS;
                };
                let anchors = match std::fs::read_to_string(&anchor) {
                    Ok(text) => parkguard::store::JournalAnchor::parse_lines(&text),
                    Err(err) => {
                        eprintln!("{}: {err}", anchor.display());
                        return ExitCode::FAILURE;
                    }
                };
                match store.verify_anchors(&anchors) {
                    Ok((checked, None)) => {
                        println!("{}: {checked} anchors match", anchor.display());
                        ExitCode::SUCCESS
                    }
                    Ok((_, Some((seq, what)))) => {
                        println!("{}: journal entry {seq} {what}", path.display());
                        ExitCode::FAILURE
                    }
                    Err(err) => {
                        eprintln!("{err}");
                        ExitCode::FAILURE
                    }
                }
            }
            Some((seq, what)) => {
                println!("{}: journal entry {seq}: {what}", path.display());
                ExitCode::FAILURE
            }
        },
        Err(err) => {
            eprintln!("{err}");
            ExitCode::FAILURE
        }
    }
}

fn outbox(command: OutboxCommand) -> ExitCode {
    let result = match command {
        OutboxCommand::Status { store } => {
            open_store(store).map(|(_, store)| outbox_status(&store))
        }
        OutboxCommand::RetryDead { store, sink } => open_store(store).map(|(_, mut store)| {
            let now_ms = parkguard::model::now_ns() / 1_000_000;
            store.retry_dead(sink.as_deref(), now_ms).map(|moved| {
                println!("{moved} dead letter(s) put back into the outbox");
            })
        }),
    };
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(err)) => {
            eprintln!("{err}");
            ExitCode::FAILURE
        }
        Err(code) => code,
    }
}

fn outbox_status(store: &parkguard::store::Store) -> Result<(), parkguard::store::StoreError> {
    let now_ms = parkguard::model::now_ns() / 1_000_000;
    println!("outbox: {} bytes", store.outbox_bytes()?);
    for sink in store.outbox_sinks()? {
        let depth = store.outbox_depth(&sink)?;
        let age = depth
            .oldest_ms
            .map(|t| format!("{:.1} s", (now_ms - t) as f64 / 1000.0))
            .unwrap_or_else(|| "-".into());
        println!(
            "sink {sink}: {} batches, {} points waiting, oldest {age}",
            depth.batches, depth.points
        );
    }
    let dead = store.dead_letters()?;
    println!("dead letters: {}", dead.len());
    for d in dead {
        println!(
            "  #{} sink {} {} {} points, HTTP {}: {}",
            d.id,
            d.sink,
            d.class.as_str(),
            d.points,
            d.status,
            d.message
        );
    }
    Ok(())
}

fn init_logging(json: bool) {
    // rumqttd logs per-client events as ERRORs (a client closing its socket, an ordinary
    // disconnect: "no-connection id N is already gone"); with hundreds of NB-IoT sensors that
    // would bury real errors. Its startup failures are checked by `ingest::broker` itself, so
    // its own log is off unless RUST_LOG asks for it.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,rumqttd=off,rumqttc=warn"));
    // No colour codes in journald, files or pipes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn load(file: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(file).map_err(|problems| {
        for problem in &problems {
            eprintln!("{problem}");
        }
        eprintln!("{} problem(s) found in {}", problems.len(), file.display());
        ExitCode::from(EXIT_INVALID_CONFIG)
    })
}

fn check(file: &std::path::Path, print_plan: bool) -> ExitCode {
    match load(file) {
        Ok(config) => {
            if print_plan {
                print_read_plans(&config);
            }
            for warning in config.warnings() {
                eprintln!("warning: {warning}");
            }
            if let Some(alerts) = &config.site.alerts {
                for line in alerts.escalation_summary() {
                    println!("{line}");
                }
            }
            println!(
                "{}: valid ({} devices, {} profiles, {} MQTT connections, {} InfluxDB sinks)",
                file.display(),
                config.site.devices.len(),
                config.profiles.len(),
                config.site.mqtt.len(),
                config.site.influx.len()
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn print_read_plans(config: &Config) {
    use parkguard::decode::registers::RegisterDecoder;
    use parkguard::ingest::plan::{plan, PlanOptions};
    for (id, profile) in &config.profiles {
        let Some(modbus) = &profile.modbus else {
            continue;
        };
        let decoders: Vec<RegisterDecoder> = modbus
            .registers
            .iter()
            .map(|r| RegisterDecoder::new(r, modbus.address_base))
            .collect();
        for (class, interval_ms) in &modbus.poll_classes {
            let requests = plan(&decoders, class, PlanOptions::from(modbus));
            if requests.is_empty() {
                continue;
            }
            println!(
                "{id} [{class}, every {interval_ms} ms]: {} request(s)",
                requests.len()
            );
            for r in requests {
                let names: Vec<&str> = r
                    .values
                    .iter()
                    .map(|&i| modbus.registers[i].quantity.as_str())
                    .collect();
                let last = u32::from(r.start) + u32::from(r.count) - 1;
                println!(
                    "  {:?} {}..{last} (0x{:04X}..0x{last:04X}, count {}): {}",
                    r.area,
                    r.start,
                    r.start,
                    r.count,
                    names.join(", ")
                );
            }
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
