//! The store's schema and its migrations, applied in order at open; each runs once and the
//! version is kept in `user_version`.

use super::*;

/// The schema version this parkguard creates and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The text of each migration, for the test that keeps them append-only.
pub fn migrations() -> &'static [&'static str] {
    MIGRATIONS
}

/// Applies the migrations a store lacks, each in its own transaction, up to `target`.
pub(super) fn migrate_to(conn: &mut Connection, target: usize) -> Result<(), StoreError> {
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
pub(super) const LOCK_ATTEMPTS: i32 = 5000;

pub(super) fn wait_for_lock(attempt: i32) -> bool {
    if attempt >= LOCK_ATTEMPTS {
        return false;
    }
    std::thread::sleep(std::time::Duration::from_millis(1));
    true
}

/// Schema migrations, applied in order; `PRAGMA user_version` counts how many have run.
pub(super) const MIGRATIONS: &[&str] = &[
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
    // 7: outputs' last commanded and confirmed states (linkage).
    outputs::MIGRATION,
    // 8: the queue towards fire-monitoring centres and their serial numbers (northbound).
    northbound::MIGRATION,
];
