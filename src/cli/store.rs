//! `parkguard journal verify | show`, `parkguard outbox status | retry-dead` and `parkguard
//! backup`: the store's maintenance commands, which work while the daemon runs (SQLite WAL).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{load, usage_error};

#[derive(clap::Args)]
pub struct StoreArgs {
    /// Site configuration file (its `gateway.store` is used).
    #[arg(short, long, env = "PARKGUARD_CONFIG", conflicts_with = "store")]
    config: Option<PathBuf>,
    /// The store file itself.
    #[arg(long)]
    store: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
pub enum JournalCommand {
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

#[derive(clap::Subcommand)]
pub enum OutboxCommand {
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

/// `parkguard backup`.
#[derive(clap::Args)]
pub struct BackupArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The new file to write (never overwritten).
    output: PathBuf,
}

impl BackupArgs {
    pub fn run(self) -> ExitCode {
        backup(self.store, &self.output)
    }
}

impl JournalCommand {
    pub fn run(self) -> ExitCode {
        journal(self)
    }
}

impl OutboxCommand {
    pub fn run(self) -> ExitCode {
        outbox(self)
    }
}

fn backup(args: StoreArgs, output: &Path) -> ExitCode {
    let OpenedStore { path, store, .. } = match open_store(args) {
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

/// An existing store, named by the site file or directly.
struct OpenedStore {
    path: PathBuf,
    store: parkguard::store::Store,
    /// Local time for the times printed: the site's `alerts.utc_offset_minutes`, or China's
    /// (+08:00) when the store is named directly.
    utc_offset_minutes: i32,
}

fn open_store(args: StoreArgs) -> Result<OpenedStore, ExitCode> {
    let mut utc_offset_minutes = CHINA_UTC_OFFSET_MINUTES;
    let path = match (args.config, args.store) {
        (_, Some(store)) => store,
        (Some(config), None) => {
            let config = load(&config)?;
            if let Some(alerts) = &config.site.alerts {
                utc_offset_minutes = alerts.utc_offset_minutes;
            }
            config.resolve_path(&config.site.gateway.store)
        }
        (None, None) => {
            return Err(usage_error(
                "give the site file (-c) or the store (--store)",
            ))
        }
    };
    if !path.exists() {
        eprintln!("{}: no such store", path.display());
        return Err(ExitCode::FAILURE);
    }
    match parkguard::store::Store::open(&path) {
        Ok(store) => Ok(OpenedStore {
            path,
            store,
            utc_offset_minutes,
        }),
        Err(err) => {
            eprintln!("{err}");
            Err(ExitCode::FAILURE)
        }
    }
}

const CHINA_UTC_OFFSET_MINUTES: i32 = 480;

fn journal(command: JournalCommand) -> ExitCode {
    let (args, search, limit, anchor) = match command {
        JournalCommand::Verify { store, anchor } => (store, None, None, anchor),
        JournalCommand::Show {
            store,
            search,
            limit,
        } => (store, search, Some(limit), None),
    };
    let OpenedStore {
        path,
        store,
        utc_offset_minutes,
    } = match open_store(args) {
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
                        parkguard::model::local_time(e.at_ms, utc_offset_minutes),
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
            open_store(store).map(|opened| outbox_status(&opened.store))
        }
        OutboxCommand::RetryDead { store, sink } => open_store(store).map(|mut opened| {
            let now_ms = parkguard::model::now_ns() / 1_000_000;
            opened
                .store
                .retry_dead(sink.as_deref(), now_ms)
                .map(|moved| {
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
