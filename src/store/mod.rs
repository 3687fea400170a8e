//! The SQLite store (rusqlite, bundled SQLite, WAL mode): alarm states that survive restarts,
//! and the alarm journal (`journal`), every entry chained to the one before by a SHA-256 hash
//! so that an edited or deleted entry is detected (`parkguard journal verify`).
//!
//! Also the outbox towards the sinks (`outbox`), with per-sink cursors and dead letters, the
//! last undecodable messages, a bounded local history of readings (`history`), commissioning
//! sign-offs, and the tables of the alarm push queue (`alerts`), whose rows `alerts::queue`
//! keeps, inside the journal's transaction through the `PushPlanner` it implements.
//!
//! Owns: the schema and its migrations (`schema`, all in one place), and the rows above except
//! the push queue's. Must not touch: MQTT, Modbus, InfluxDB or the alert routes; it depends on
//! the model only.
//!
//! Blocking by nature: the daemon uses it from its own threads and `spawn_blocking`, each with
//! its own connection, never from an async task directly.

pub mod alerts;
pub mod history;
mod journal;
mod northbound;
pub mod outbox;
mod outputs;
mod schema;

use crate::model::alarm::{AlarmEvent, PersistedAlarm};
pub use crate::model::BadMessage;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::Path;

pub use journal::{JournalAnchor, JournalEntry, Verification};
use schema::*;
pub use schema::{migrations, SCHEMA_VERSION};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("store: alarm state of `{key}` is unreadable: {error}")]
    BadState { key: String, error: String },
    #[error("store task failed: {0}")]
    Task(String),
    #[error("store: {0}")]
    Io(String),
    #[error(
        "store schema version {0} is newer than this parkguard understands; upgrade parkguard"
    )]
    TooNew(i64),
}

/// A technician's record that a device was commissioned: who, when, which firmware, notes.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct SignOff {
    pub device: String,
    pub at_ms: i64,
    pub technician: String,
    pub firmware: Option<String>,
    pub notes: String,
}

/// Undecodable messages kept for inspection; older ones are deleted.
pub const BAD_MESSAGES_KEPT: usize = 1000;

/// What one commit of the ingest path writes.
pub struct IngestCommit<'a> {
    pub now_ms: i64,
    /// Gzip line protocol and its point count.
    pub telemetry: Option<(&'a [u8], u64)>,
    pub evict_bytes: i64,
    /// The outbox's size before this commit and its bound: after eviction, a telemetry batch
    /// that still does not fit (the rest is alarm events) is dropped instead of stored.
    pub room: (i64, i64),
    pub bad_messages: &'a [BadMessage],
    pub history: Option<&'a mut history::Accumulator>,
    /// Compact and trim history.
    pub compact_history: Option<history::Retention>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct CommitOutcome {
    pub evicted: outbox::Freed,
    pub inserted_bytes: i64,
    /// Points of a telemetry batch that did not fit even after eviction.
    pub dropped_points: u64,
}

pub struct Store {
    conn: Connection,
}

/// Queues what a journaled transition sets off (the alarm pushes), inside the journal's
/// transaction. Implemented by the alert router, which the store does not know.
pub trait PushPlanner {
    /// Queues the pushes of `event`, journal entry `seq`; returns how many.
    fn queue_pushes(
        &self,
        tx: &rusqlite::Transaction<'_>,
        event: &AlarmEvent,
        seq: i64,
    ) -> Result<u64, StoreError>;
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open_error = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = Connection::open(path).map_err(open_error)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_error)?;
        // NORMAL is durable across application crashes in WAL mode; only a power loss can
        // lose the last transactions, which the journal's head then shows.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_error)?;
        // Several connections write (ingest, alarms, pushes, sinks). SQLite's own busy timeout
        // sleeps in growing steps up to 100 ms, which an alarm waiting behind an ingest commit
        // would pay in latency; polling every millisecond keeps that wait to the lock's length.
        conn.busy_handler(Some(wait_for_lock)).map_err(open_error)?;
        let mut store = Store { conn };
        store.migrate()?;
        Ok(store)
    }

    /// Makes this connection's commits durable against power loss too (`synchronous = FULL`:
    /// the WAL is synced at each commit), for what is promised that way: alarm transitions with
    /// their journal entries, and the push queue. They are few, so the syncs cost the flash
    /// little; telemetry's connection keeps `NORMAL`, synced at checkpoints.
    pub fn sync_every_commit(&self) -> Result<(), StoreError> {
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        Ok(())
    }

    pub(crate) fn connection_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        migrate_to(&mut self.conn, MIGRATIONS.len())
    }

    /// The schema version of the store (its migrations applied).
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    /// Creates a store file as parkguard releases with schema `version` left it (only the first
    /// `version` migrations applied), for tests of the upgrade path.
    pub fn create_at_version(path: &Path, version: usize) -> Result<(), StoreError> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        migrate_to(&mut conn, version.min(MIGRATIONS.len()))
    }

    /// Copies the whole store into a new file `destination` with SQLite's online backup, a few
    /// pages at a time so that the running daemon keeps writing meanwhile. Returns the size
    /// of the copy in bytes. An existing file is never overwritten.
    pub fn backup_to(&self, destination: &Path) -> Result<u64, StoreError> {
        if destination.exists() {
            return Err(StoreError::Io(format!(
                "{} exists; give a new file",
                destination.display()
            )));
        }
        let mut copy = Connection::open(destination)?;
        {
            let backup = rusqlite::backup::Backup::new(&self.conn, &mut copy)?;
            backup.run_to_completion(256, std::time::Duration::from_millis(2), None)?;
        }
        let pages: i64 = copy.pragma_query_value(None, "page_count", |r| r.get(0))?;
        let page_size: i64 = copy.pragma_query_value(None, "page_size", |r| r.get(0))?;
        Ok((pages * page_size) as u64)
    }

    /// Records a sign-off (earlier ones of the device are kept as its history).
    pub fn add_signoff(&mut self, signoff: &SignOff) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO signoff (device, at_ms, technician, firmware, notes)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                signoff.device,
                signoff.at_ms,
                signoff.technician,
                signoff.firmware,
                signoff.notes
            ],
        )?;
        Ok(())
    }

    /// The newest sign-off of every device that has one.
    pub fn latest_signoffs(&self) -> Result<Vec<SignOff>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT device, MAX(at_ms), technician, firmware, notes FROM signoff GROUP BY device",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(SignOff {
                device: r.get(0)?,
                at_ms: r.get(1)?,
                technician: r.get(2)?,
                firmware: r.get(3)?,
                notes: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One commit of the ingest path: a telemetry batch for the outbox (after evicting
    /// `evict_bytes` of the oldest telemetry when that is above zero), undecodable messages, and
    /// closed history buckets; with `compact_history`, history is also compacted and trimmed.
    pub fn commit_ingest(
        &mut self,
        commit: &mut IngestCommit<'_>,
    ) -> Result<CommitOutcome, StoreError> {
        let tx = self.conn.transaction()?;
        let mut outcome = CommitOutcome::default();
        if commit.evict_bytes > 0 {
            outcome.evicted = outbox::evict_telemetry(&tx, commit.evict_bytes)?;
        }
        if let Some((body, points)) = commit.telemetry {
            let (bytes, max_bytes) = commit.room;
            if bytes - outcome.evicted.bytes + body.len() as i64 > max_bytes {
                outcome.dropped_points = points;
            } else {
                outbox::insert(&tx, outbox::Class::Telemetry, commit.now_ms, points, body)?;
                outcome.inserted_bytes = body.len() as i64;
            }
        }
        if !commit.bad_messages.is_empty() {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO bad_message (at_ms, source, reason, detail, payload) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for bad in commit.bad_messages.iter() {
                stmt.execute(params![
                    bad.at_ms,
                    bad.source,
                    bad.reason,
                    bad.detail,
                    bad.payload
                ])?;
            }
            tx.execute(
                "DELETE FROM bad_message WHERE id <= (SELECT MAX(id) FROM bad_message) - ?1",
                params![BAD_MESSAGES_KEPT as i64],
            )?;
        }
        if let Some(history) = commit.history.as_deref() {
            history.write(&tx)?;
        }
        if let Some(retention) = commit.compact_history {
            history::compact(&tx, commit.now_ms, retention)?;
        }
        tx.commit()?;
        if let Some(history) = commit.history.as_deref_mut() {
            history.committed();
        }
        Ok(outcome)
    }

    /// The most recent undecodable messages, newest first.
    pub fn bad_messages(&self, limit: u32) -> Result<Vec<BadMessage>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT at_ms, source, reason, detail, payload FROM bad_message ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map(params![limit], |r| {
            Ok(BadMessage {
                at_ms: r.get(0)?,
                source: r.get(1)?,
                reason: r.get(2)?,
                detail: r.get(3)?,
                payload: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// For the modules that keep their own rows in the store (the push queue), and for tests
    /// that tamper with the journal.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}
