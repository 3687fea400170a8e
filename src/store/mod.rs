//! The SQLite store (rusqlite, bundled SQLite, WAL mode): alarm states that survive restarts,
//! and the alarm journal, every entry chained to the one before by a SHA-256 hash so that an
//! edited or deleted entry is detected (`parkguard journal verify`). Owns the schema and its
//! migrations; knows nothing of MQTT, Modbus or InfluxDB.
//!
//! Also the outbox towards the sinks (`outbox`), with per-sink cursors and dead letters, the
//! last undecodable messages, and a bounded local history of readings (`history`).
//!
//! Blocking by nature: the daemon uses it from its own threads and `spawn_blocking`, each with
//! its own connection, never from an async task directly.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::model::alarm::{AlarmEvent, PersistedAlarm};
pub use crate::model::BadMessage;

pub mod alerts;
pub mod history;
pub mod outbox;

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

/// The schema version this parkguard creates and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The text of each migration, for the test that keeps them append-only.
pub fn migrations() -> &'static [&'static str] {
    MIGRATIONS
}

/// Applies the migrations a store lacks, each in its own transaction, up to `target`.
fn migrate_to(conn: &mut Connection, target: usize) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > MIGRATIONS.len() as i64 {
        return Err(StoreError::TooNew(version));
    }
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .take(target)
        .skip(version as usize)
    {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// Attempts (one per millisecond) at a locked database before giving up: 5 s in all.
const LOCK_ATTEMPTS: i32 = 5000;

fn wait_for_lock(attempt: i32) -> bool {
    if attempt >= LOCK_ATTEMPTS {
        return false;
    }
    std::thread::sleep(std::time::Duration::from_millis(1));
    true
}

/// Schema migrations, applied in order; `PRAGMA user_version` counts how many have run.
const MIGRATIONS: &[&str] = &[
    // 1: alarm state and the hash-chained journal.
    "CREATE TABLE alarm_state (
        key TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        updated_ms INTEGER NOT NULL
     );
     CREATE TABLE journal (
        seq INTEGER PRIMARY KEY,
        at_ms INTEGER NOT NULL,
        key TEXT NOT NULL,
        rule TEXT NOT NULL,
        park TEXT NOT NULL,
        enterprise TEXT NOT NULL,
        location TEXT NOT NULL,
        device TEXT NOT NULL,
        action TEXT NOT NULL,
        state TEXT NOT NULL,
        severity TEXT NOT NULL,
        kind TEXT NOT NULL,
        value TEXT,
        threshold REAL,
        operator TEXT,
        comment TEXT,
        message TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
     );
     CREATE INDEX journal_key ON journal (key, seq);
     CREATE INDEX journal_at ON journal (at_ms);
     CREATE TABLE journal_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seq INTEGER NOT NULL,
        hash TEXT NOT NULL
     );",
    // 2: the outbox towards the sinks, its dead letters, undecodable messages, local history.
    "CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        class INTEGER NOT NULL,
        sink TEXT,
        created_ms INTEGER NOT NULL,
        points INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        body BLOB NOT NULL
     );
     CREATE INDEX outbox_class ON outbox (class, id);
     CREATE TABLE outbox_cursor (
        sink TEXT NOT NULL,
        class INTEGER NOT NULL,
        last_id INTEGER NOT NULL,
        PRIMARY KEY (sink, class)
     );
     CREATE TABLE outbox_dead (
        id INTEGER PRIMARY KEY,
        sink TEXT NOT NULL,
        class INTEGER NOT NULL,
        created_ms INTEGER NOT NULL,
        dead_ms INTEGER NOT NULL,
        points INTEGER NOT NULL,
        body BLOB NOT NULL,
        status INTEGER NOT NULL,
        message TEXT NOT NULL
     );
     CREATE TABLE bad_message (
        id INTEGER PRIMARY KEY,
        at_ms INTEGER NOT NULL,
        source TEXT NOT NULL,
        reason TEXT NOT NULL,
        detail TEXT NOT NULL,
        payload BLOB NOT NULL
     );
     CREATE TABLE history (
        device TEXT NOT NULL,
        quantity TEXT NOT NULL,
        span_ms INTEGER NOT NULL,
        bucket_ms INTEGER NOT NULL,
        n INTEGER NOT NULL,
        min REAL NOT NULL,
        max REAL NOT NULL,
        sum REAL NOT NULL,
        PRIMARY KEY (device, quantity, span_ms, bucket_ms)
     ) WITHOUT ROWID;
     CREATE INDEX history_age ON history (span_ms, bucket_ms);",
    // 3: commissioning sign-offs of devices.
    "CREATE TABLE signoff (
        device TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        technician TEXT NOT NULL,
        firmware TEXT,
        notes TEXT NOT NULL,
        PRIMARY KEY (device, at_ms)
     );",
    // 4: the queue of alarm pushes and the routing state behind escalation.
    alerts::MIGRATION,
    // 5: transitions reported late (replayed after an outage) say when their condition began;
    // pushes say whether they go ahead of the others, so the lane head is read by index.
    "ALTER TABLE journal ADD COLUMN began_ms INTEGER;
     ALTER TABLE alert_delivery ADD COLUMN urgent INTEGER NOT NULL DEFAULT 0;
     UPDATE alert_delivery SET urgent = 1
      WHERE status = 'pending' AND json_extract(notice, '$.alarm.severity') = 'critical'
        AND json_extract(notice, '$.event') IN
            ('raised', 'escalated', 'reannunciated', 'unacknowledged', 'reminder');
     CREATE INDEX alert_delivery_urgent
         ON alert_delivery (status, route, channel, recipient, urgent DESC, id);",
    // 6: the local history keyed time first, one row per (period, device) (flash wear); the
    // per-series rows of charts before it are not carried over.
    "CREATE TABLE history_chunk (
        span_ms INTEGER NOT NULL,
        bucket_ms INTEGER NOT NULL,
        device TEXT NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (span_ms, bucket_ms, device)
     ) WITHOUT ROWID;
     DROP TABLE history;",
];

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
const BAD_MESSAGES_KEPT: i64 = 1000;

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

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One journal entry as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JournalEntry {
    pub seq: i64,
    pub at_ms: i64,
    pub key: String,
    pub rule: String,
    pub park: String,
    pub enterprise: String,
    pub location: String,
    pub device: String,
    pub action: String,
    pub state: String,
    pub severity: String,
    pub kind: String,
    pub value: Option<String>,
    pub threshold: Option<f64>,
    pub operator: Option<String>,
    pub comment: Option<String>,
    pub message: String,
    /// Reported late: the device time the transition's condition began.
    pub began_ms: Option<i64>,
    pub prev_hash: String,
    pub hash: String,
}

impl JournalEntry {
    /// The hash of this entry given the previous entry's hash: every field but `hash`, in a
    /// fixed order, separated by a byte that cannot occur in the text fields' UTF-8.
    fn compute_hash(&self) -> String {
        let mut h = Sha256::new();
        let fields: [&str; 17] = [
            &self.prev_hash,
            &self.seq.to_string(),
            &self.at_ms.to_string(),
            &self.key,
            &self.rule,
            &self.park,
            &self.enterprise,
            &self.location,
            &self.device,
            &self.action,
            &self.state,
            &self.severity,
            &self.kind,
            self.value.as_deref().unwrap_or("\u{0}"),
            &self.threshold.map(|t| t.to_string()).unwrap_or_default(),
            self.operator.as_deref().unwrap_or("\u{0}"),
            self.comment.as_deref().unwrap_or("\u{0}"),
        ];
        for f in fields {
            h.update(f.as_bytes());
            h.update([0xff]);
        }
        h.update(self.message.as_bytes());
        // Appended only when present, so that entries written before it existed still verify.
        if let Some(began) = self.began_ms {
            h.update([0xff]);
            h.update(began.to_string().as_bytes());
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The journal's head as written outside the database (a file, MQTT, InfluxDB), so that a
/// chain rewritten as a whole by someone who can write the database is still found out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct JournalAnchor {
    pub at_ms: i64,
    pub seq: i64,
    pub hash: String,
}

impl JournalAnchor {
    /// Anchors from an anchor file: one JSON object per line; other lines are skipped.
    pub fn parse_lines(text: &str) -> Vec<JournalAnchor> {
        text.lines()
            .filter_map(|l| serde_json::from_str(l.trim()).ok())
            .collect()
    }
}

/// What `verify_journal` found.
#[derive(Debug, Clone, PartialEq)]
pub struct Verification {
    pub entries: u64,
    /// The first problem: (sequence number, what is wrong).
    pub problem: Option<(i64, String)>,
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

    /// Alarm states kept from before a restart.
    pub fn load_alarms(&self) -> Result<Vec<(String, PersistedAlarm)>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT key, state FROM alarm_state")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (key, json) = row?;
            let state = serde_json::from_str(&json).map_err(|e| StoreError::BadState {
                key: key.clone(),
                error: e.to_string(),
            })?;
            out.push((key, state));
        }
        Ok(out)
    }

    /// Saves the alarms' new states and appends the transitions to the journal, with their
    /// points for the sinks (`alarm_batch`: gzip line protocol and its point count) in the
    /// outbox, all in one transaction.
    pub fn record(
        &mut self,
        events: &[AlarmEvent],
        alarm_batch: Option<(&[u8], u64)>,
    ) -> Result<(), StoreError> {
        self.record_and_route(events, alarm_batch, None).map(|_| ())
    }

    /// Queues a batch of alarm-class points (not transitions: a journal anchor) for the sinks.
    pub fn queue_alarm_points(
        &mut self,
        at_ms: i64,
        body: &[u8],
        points: u64,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        outbox::insert(&tx, outbox::Class::Alarm, at_ms, points, body)?;
        tx.commit()?;
        Ok(())
    }

    /// `record`, and with `pushes`, the transitions' pushes queued in the same transaction, so
    /// that a push exists exactly when its journal entry does. Returns the pushes queued.
    pub fn record_and_route(
        &mut self,
        events: &[AlarmEvent],
        alarm_batch: Option<(&[u8], u64)>,
        pushes: Option<&dyn PushPlanner>,
    ) -> Result<u64, StoreError> {
        let mut queued = 0;
        let tx = self.conn.transaction()?;
        if let Some((body, points)) = alarm_batch {
            let at = events.first().map(|e| e.at_ms).unwrap_or_default();
            outbox::insert(&tx, outbox::Class::Alarm, at, points, body)?;
        }
        let (mut seq, mut prev_hash): (i64, String) = tx
            .query_row("SELECT seq, hash FROM journal_head WHERE id = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?
            .unwrap_or((0, GENESIS.to_string()));
        for event in events {
            if !event.key.starts_with("flood/") {
                if event.alarm.is_normal() || event.action == crate::model::alarm::Action::Retired {
                    tx.execute(
                        "DELETE FROM alarm_state WHERE key = ?1",
                        params![&*event.key],
                    )?;
                } else {
                    let state = PersistedAlarm {
                        alarm: event.alarm.clone(),
                        filters: event.filters.clone(),
                    };
                    let json = serde_json::to_string(&state).map_err(|e| StoreError::BadState {
                        key: event.key.to_string(),
                        error: e.to_string(),
                    })?;
                    tx.execute(
                        "INSERT INTO alarm_state (key, state, updated_ms) VALUES (?1, ?2, ?3)
                         ON CONFLICT (key) DO UPDATE SET state = excluded.state, updated_ms = excluded.updated_ms",
                        params![&*event.key, json, event.at_ms],
                    )?;
                }
            }
            seq += 1;
            let mut entry = JournalEntry {
                seq,
                at_ms: event.at_ms,
                key: event.key.to_string(),
                rule: event.rule.to_string(),
                park: event.tags.park.clone(),
                enterprise: event.tags.enterprise.clone(),
                location: event.tags.location.clone(),
                device: event.tags.device.clone(),
                action: event.action.as_str().into(),
                state: event.state.as_str().into(),
                severity: event.severity.as_str().into(),
                kind: event.kind.as_str().into(),
                value: event.value.as_ref().map(|v| v.to_string()),
                threshold: event.threshold,
                operator: event.operator.as_ref().map(|o| o.name.clone()),
                comment: event.operator.as_ref().and_then(|o| o.comment.clone()),
                message: event.message.clone(),
                began_ms: event.late_began_ms,
                prev_hash: prev_hash.clone(),
                hash: String::new(),
            };
            entry.hash = entry.compute_hash();
            tx.execute(
                "INSERT INTO journal (seq, at_ms, key, rule, park, enterprise, location, device, action,
                   state, severity, kind, value, threshold, operator, comment, message, prev_hash, hash,
                   began_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
                params![
                    entry.seq, entry.at_ms, entry.key, entry.rule, entry.park, entry.enterprise,
                    entry.location, entry.device, entry.action, entry.state, entry.severity,
                    entry.kind, entry.value, entry.threshold, entry.operator, entry.comment,
                    entry.message, entry.prev_hash, entry.hash, entry.began_ms
                ],
            )?;
            prev_hash = entry.hash;
            if let Some(pushes) = pushes {
                queued += pushes.queue_pushes(&tx, event, seq)?;
            }
        }
        tx.execute(
            "INSERT INTO journal_head (id, seq, hash) VALUES (1, ?1, ?2)
             ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            params![seq, prev_hash],
        )?;
        tx.commit()?;
        Ok(queued)
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
                params![BAD_MESSAGES_KEPT],
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

    /// Sequence number of the newest journal entry (0 for an empty journal).
    pub fn journal_last_seq(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT seq FROM journal_head WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?
            .unwrap_or(0))
    }

    /// Journal entries, newest first, optionally for one alarm key or a text found in the
    /// key, device, rule or message.
    pub fn journal(
        &self,
        search: Option<&str>,
        limit: u32,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        let pattern = search.map(|s| format!("%{}%", s.replace('%', "\\%").replace('_', "\\_")));
        let mut stmt = self.conn.prepare(
            "SELECT seq, at_ms, key, rule, park, enterprise, location, device, action, state, severity,
                    kind, value, threshold, operator, comment, message, prev_hash, hash, began_ms
             FROM journal
             WHERE ?1 IS NULL OR key LIKE ?1 ESCAPE '\\' OR device LIKE ?1 ESCAPE '\\'
                   OR rule LIKE ?1 ESCAPE '\\' OR message LIKE ?1 ESCAPE '\\'
             ORDER BY seq DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![pattern, limit], row_to_entry)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Walks the whole journal: every entry's hash must match its content and the previous
    /// entry's hash, sequence numbers must have no gaps, and the head must be the last entry.
    pub fn verify_journal(&self) -> Result<Verification, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT seq, at_ms, key, rule, park, enterprise, location, device, action, state, severity,
                    kind, value, threshold, operator, comment, message, prev_hash, hash, began_ms
             FROM journal ORDER BY seq",
        )?;
        let mut rows = stmt.query([])?;
        let mut expected_prev = GENESIS.to_string();
        let mut expected_seq = 1;
        let mut entries = 0;
        let fail = |seq, what: String, entries| {
            Ok(Verification {
                entries,
                problem: Some((seq, what)),
            })
        };
        while let Some(row) = rows.next()? {
            let entry = row_to_entry(row)?;
            entries += 1;
            if entry.seq != expected_seq {
                return fail(
                    expected_seq,
                    format!("entries {expected_seq} to {} are missing", entry.seq - 1),
                    entries,
                );
            }
            if entry.prev_hash != expected_prev {
                return fail(
                    entry.seq,
                    "does not follow the entry before it (an entry was removed or changed)".into(),
                    entries,
                );
            }
            if entry.compute_hash() != entry.hash {
                return fail(
                    entry.seq,
                    "its content does not match its hash (edited)".into(),
                    entries,
                );
            }
            expected_prev = entry.hash;
            expected_seq += 1;
        }
        let head: Option<(i64, String)> = self
            .conn
            .query_row("SELECT seq, hash FROM journal_head WHERE id = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        let last = expected_seq - 1;
        match head {
            Some((seq, hash)) if seq != last || hash != expected_prev => {
                fail(seq, format!("the journal ends at entry {last} but its head says {seq}: entries at the end were removed"), entries)
            }
            None if last > 0 => fail(last, "the journal head is missing".into(), entries),
            _ => Ok(Verification {
                entries,
                problem: None,
            }),
        }
    }

    /// The journal's newest entry: (sequence number, hash), if any.
    pub fn journal_head(&self) -> Result<Option<(i64, String)>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT seq, hash FROM journal_head WHERE id = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?)
    }

    /// Checks the journal against anchors written outside it (`JournalAnchor` lines): each
    /// anchored entry must still exist with the anchored hash. A chain rewritten from the start
    /// (valid in itself) fails here. Returns the anchors checked and the first problem.
    pub fn verify_anchors(
        &self,
        anchors: &[JournalAnchor],
    ) -> Result<(usize, Option<(i64, String)>), StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT hash FROM journal WHERE seq = ?1")?;
        for (n, anchor) in anchors.iter().enumerate() {
            let hash: Option<String> = stmt.query_row([anchor.seq], |r| r.get(0)).optional()?;
            match hash {
                Some(hash) if hash == anchor.hash => {}
                Some(_) => {
                    return Ok((
                        n + 1,
                        Some((
                            anchor.seq,
                            format!(
                                "differs from its anchor of {} (the journal was rewritten)",
                                anchor.at_ms
                            ),
                        )),
                    ))
                }
                None => {
                    return Ok((
                        n + 1,
                        Some((
                            anchor.seq,
                            format!(
                                "was anchored at {} but is missing (the journal was cut short or replaced)",
                                anchor.at_ms
                            ),
                        )),
                    ))
                }
            }
        }
        Ok((anchors.len(), None))
    }

    /// For the modules that keep their own rows in the store (the push queue), and for tests
    /// that tamper with the journal.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

fn row_to_entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<JournalEntry> {
    Ok(JournalEntry {
        seq: r.get(0)?,
        at_ms: r.get(1)?,
        key: r.get(2)?,
        rule: r.get(3)?,
        park: r.get(4)?,
        enterprise: r.get(5)?,
        location: r.get(6)?,
        device: r.get(7)?,
        action: r.get(8)?,
        state: r.get(9)?,
        severity: r.get(10)?,
        kind: r.get(11)?,
        value: r.get(12)?,
        threshold: r.get(13)?,
        operator: r.get(14)?,
        comment: r.get(15)?,
        message: r.get(16)?,
        prev_hash: r.get(17)?,
        hash: r.get(18)?,
        began_ms: r.get(19)?,
    })
}
