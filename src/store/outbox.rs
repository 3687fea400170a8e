//! The outbox: encoded batches (gzip members of line protocol) waiting for the sinks.
//!
//! A batch is committed here before anything else happens to it; each sink reads the outbox
//! through its own cursor per class (alarm events first, then telemetry), so a dead sink never
//! holds back another. A batch is deleted once every sink's cursor has passed it. Rows whose
//! `sink` column is set belong to that sink alone (dead letters sent again).
//!
//! Owns: the outbox, cursor and dead-letter tables. Knows nothing of HTTP: the drain task
//! decides what a response means and calls `outbox_delivered` or `outbox_dead_letter`.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::{Store, StoreError};

/// What a batch holds; alarm events are sent first and evicted last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Alarm = 0,
    Telemetry = 1,
}

impl Class {
    pub const ALL: [Class; 2] = [Class::Alarm, Class::Telemetry];

    fn from_i64(v: i64) -> Class {
        if v == 0 {
            Class::Alarm
        } else {
            Class::Telemetry
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Alarm => "alarm",
            Class::Telemetry => "telemetry",
        }
    }
}

/// Consecutive outbox rows of one class, read for one sink, bodies concatenated (a multi-member
/// gzip stream, which InfluxDB and VictoriaMetrics read as one body).
#[derive(Debug, Clone)]
pub struct Chunk {
    pub class: Class,
    pub first_id: i64,
    pub last_id: i64,
    pub rows: usize,
    pub points: u64,
    pub oldest_ms: i64,
    pub body: Vec<u8>,
}

/// A sink's backlog.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Depth {
    pub batches: u64,
    pub points: u64,
    pub oldest_ms: Option<i64>,
}

/// A batch a sink refused as invalid, with the server's answer.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub sink: String,
    pub class: Class,
    pub created_ms: i64,
    pub dead_ms: i64,
    pub points: u64,
    pub status: u16,
    pub message: String,
}

/// What an eviction removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Freed {
    pub rows: u64,
    pub points: u64,
    pub bytes: i64,
}

impl std::ops::AddAssign for Freed {
    fn add_assign(&mut self, other: Freed) {
        self.rows += other.rows;
        self.points += other.points;
        self.bytes += other.bytes;
    }
}

/// Appends one batch. Called inside the caller's transaction.
pub fn insert(
    conn: &Connection,
    class: Class,
    created_ms: i64,
    points: u64,
    body: &[u8],
) -> Result<i64, rusqlite::Error> {
    conn.prepare_cached(
        "INSERT INTO outbox (class, sink, created_ms, points, bytes, body) VALUES (?1, NULL, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![class as i64, created_ms, points as i64, body.len() as i64, body])?;
    Ok(conn.last_insert_rowid())
}

/// Deletes the oldest telemetry batches until at least `bytes` are freed or no telemetry is
/// left. Alarm events are never touched. Called inside the caller's transaction.
pub fn evict_telemetry(conn: &Connection, bytes: i64) -> Result<Freed, rusqlite::Error> {
    let mut last = None;
    {
        let mut oldest =
            conn.prepare_cached("SELECT id, bytes FROM outbox WHERE class = 1 ORDER BY id")?;
        let mut rows = oldest.query([])?;
        let mut sum = 0;
        while let Some(row) = rows.next()? {
            last = Some(row.get::<_, i64>(0)?);
            sum += row.get::<_, i64>(1)?;
            if sum >= bytes {
                break;
            }
        }
    }
    let mut freed = Freed::default();
    let Some(last) = last else {
        return Ok(freed);
    };
    let mut delete = conn.prepare_cached(
        "DELETE FROM outbox WHERE class = 1 AND id <= ?1 RETURNING points, bytes",
    )?;
    let mut rows = delete.query(params![last])?;
    while let Some(row) = rows.next()? {
        freed.rows += 1;
        freed.points += row.get::<_, i64>(0)? as u64;
        freed.bytes += row.get::<_, i64>(1)?;
    }
    Ok(freed)
}

/// Bytes of every batch in the outbox.
pub fn total_bytes(conn: &Connection) -> Result<i64, rusqlite::Error> {
    conn.query_row("SELECT COALESCE(SUM(bytes), 0) FROM outbox", [], |r| {
        r.get(0)
    })
}

impl Store {
    /// Makes the cursors match the configured sinks: new sinks start at the beginning of the
    /// outbox, cursors of removed sinks go, and batches no remaining sink needs are deleted.
    pub fn outbox_set_sinks(&mut self, sinks: &[String]) -> Result<Freed, StoreError> {
        let tx = self.conn.transaction()?;
        let existing: Vec<String> = tx
            .prepare("SELECT DISTINCT sink FROM outbox_cursor")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for gone in existing.iter().filter(|s| !sinks.contains(s)) {
            tx.execute("DELETE FROM outbox_cursor WHERE sink = ?1", params![gone])?;
            tx.execute("DELETE FROM outbox WHERE sink = ?1", params![gone])?;
        }
        for sink in sinks {
            for class in Class::ALL {
                tx.execute(
                    "INSERT OR IGNORE INTO outbox_cursor (sink, class, last_id) VALUES (?1, ?2, 0)",
                    params![sink, class as i64],
                )?;
            }
        }
        let mut freed = Freed::default();
        if sinks.is_empty() {
            let mut stmt = tx.prepare("DELETE FROM outbox RETURNING points, bytes")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                freed.rows += 1;
                freed.points += row.get::<_, i64>(0)? as u64;
                freed.bytes += row.get::<_, i64>(1)?;
            }
        } else {
            for class in Class::ALL {
                freed += delete_passed(&tx, class, None)?;
            }
        }
        tx.commit()?;
        Ok(freed)
    }

    /// The sinks that have cursors (those of the last daemon start).
    pub fn outbox_sinks(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT DISTINCT sink FROM outbox_cursor ORDER BY sink")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn outbox_bytes(&self) -> Result<i64, StoreError> {
        Ok(total_bytes(&self.conn)?)
    }

    fn cursor(&self, sink: &str, class: Class) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT last_id FROM outbox_cursor WHERE sink = ?1 AND class = ?2",
                params![sink, class as i64],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }

    /// The next rows for `sink`: alarm events before telemetry, at most `max_rows` rows and,
    /// past the first row, at most `max_points` points.
    pub fn outbox_next(
        &self,
        sink: &str,
        max_points: u64,
        max_rows: usize,
    ) -> Result<Option<Chunk>, StoreError> {
        for class in Class::ALL {
            let cursor = self.cursor(sink, class)?;
            let mut stmt = self.conn.prepare_cached(
                "SELECT id, points, created_ms FROM outbox
                 WHERE class = ?1 AND id > ?2 AND (sink IS NULL OR sink = ?3)
                 ORDER BY id LIMIT ?4",
            )?;
            let mut rows = stmt.query(params![class as i64, cursor, sink, max_rows as i64])?;
            let mut chunk: Option<Chunk> = None;
            while let Some(row) = rows.next()? {
                let (id, points, created): (i64, i64, i64) =
                    (row.get(0)?, row.get(1)?, row.get(2)?);
                match &mut chunk {
                    None => {
                        chunk = Some(Chunk {
                            class,
                            first_id: id,
                            last_id: id,
                            rows: 1,
                            points: points as u64,
                            oldest_ms: created,
                            body: Vec::new(),
                        })
                    }
                    Some(c) if c.points + points as u64 <= max_points => {
                        c.last_id = id;
                        c.rows += 1;
                        c.points += points as u64;
                    }
                    Some(_) => break,
                }
            }
            let Some(mut chunk) = chunk else { continue };
            let mut bodies = self.conn.prepare_cached(
                "SELECT body FROM outbox WHERE class = ?1 AND id BETWEEN ?2 AND ?3
                 AND (sink IS NULL OR sink = ?4) ORDER BY id",
            )?;
            let mut rows =
                bodies.query(params![class as i64, chunk.first_id, chunk.last_id, sink])?;
            while let Some(row) = rows.next()? {
                let body: Vec<u8> = row.get(0)?;
                chunk.body.extend_from_slice(&body);
            }
            return Ok(Some(chunk));
        }
        Ok(None)
    }

    /// `sink` has everything of `class` up to `last_id`: advances its cursor and deletes the
    /// batches every sink has passed.
    pub fn outbox_delivered(
        &mut self,
        sink: &str,
        class: Class,
        last_id: i64,
    ) -> Result<Freed, StoreError> {
        let tx = self.conn.transaction()?;
        advance(&tx, sink, class, last_id)?;
        let freed = delete_passed(&tx, class, Some(sink))?;
        tx.commit()?;
        Ok(freed)
    }

    /// Keeps a refused body (a whole chunk or a part of one) as a dead letter of `sink`, with the
    /// server's answer. The cursor moves on separately, once the whole chunk is dealt with.
    #[allow(clippy::too_many_arguments)]
    pub fn outbox_dead_letter(
        &mut self,
        sink: &str,
        class: Class,
        created_ms: i64,
        points: u64,
        body: &[u8],
        status: u16,
        message: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO outbox_dead (sink, class, created_ms, dead_ms, points, body, status, message)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![sink, class as i64, created_ms, now_ms, points as i64, body, status, message],
        )?;
        Ok(())
    }

    /// What `sink` still has to send.
    pub fn outbox_depth(&self, sink: &str) -> Result<Depth, StoreError> {
        let alarm = self.cursor(sink, Class::Alarm)?;
        let telemetry = self.cursor(sink, Class::Telemetry)?;
        let (batches, points, oldest): (i64, i64, Option<i64>) = self.conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(points), 0), MIN(created_ms) FROM outbox
             WHERE ((class = 0 AND id > ?1) OR (class = 1 AND id > ?2))
               AND (sink IS NULL OR sink = ?3)",
            params![alarm, telemetry, sink],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        Ok(Depth {
            batches: batches as u64,
            points: points as u64,
            oldest_ms: oldest,
        })
    }

    /// Dead letters, oldest first.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, sink, class, created_ms, dead_ms, points, status, message
             FROM outbox_dead ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(DeadLetter {
                id: r.get(0)?,
                sink: r.get(1)?,
                class: Class::from_i64(r.get(2)?),
                created_ms: r.get(3)?,
                dead_ms: r.get(4)?,
                points: r.get::<_, i64>(5)? as u64,
                status: r.get(6)?,
                message: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Puts dead letters (of one sink, or all) back into the outbox for their sink, at its
    /// end; returns how many.
    pub fn retry_dead(&mut self, sink: Option<&str>, now_ms: i64) -> Result<usize, StoreError> {
        let tx = self.conn.transaction()?;
        let moved = tx.execute(
            "INSERT INTO outbox (class, sink, created_ms, points, bytes, body)
             SELECT class, sink, ?2, points, length(body), body FROM outbox_dead
             WHERE ?1 IS NULL OR sink = ?1 ORDER BY id",
            params![sink, now_ms],
        )?;
        tx.execute(
            "DELETE FROM outbox_dead WHERE ?1 IS NULL OR sink = ?1",
            params![sink],
        )?;
        tx.commit()?;
        Ok(moved)
    }
}

fn advance(conn: &Connection, sink: &str, class: Class, last_id: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO outbox_cursor (sink, class, last_id) VALUES (?1, ?2, ?3)
         ON CONFLICT (sink, class) DO UPDATE SET last_id = max(last_id, excluded.last_id)",
    )?
    .execute(params![sink, class as i64, last_id])?;
    Ok(())
}

/// Deletes batches of `class` that every sink has passed (and, for `sink`, its own rows).
fn delete_passed(conn: &Connection, class: Class, sink: Option<&str>) -> rusqlite::Result<Freed> {
    let mut freed = Freed::default();
    let mut shared = conn.prepare_cached(
        "DELETE FROM outbox WHERE class = ?1 AND sink IS NULL
           AND id <= (SELECT MIN(last_id) FROM outbox_cursor WHERE class = ?1)
         RETURNING points, bytes",
    )?;
    let mut own = conn.prepare_cached(
        "DELETE FROM outbox WHERE class = ?1 AND sink = ?2
           AND id <= (SELECT last_id FROM outbox_cursor WHERE class = ?1 AND sink = ?2)
         RETURNING points, bytes",
    )?;
    let mut count = |rows: &mut rusqlite::Rows<'_>| -> rusqlite::Result<()> {
        while let Some(row) = rows.next()? {
            freed.rows += 1;
            freed.points += row.get::<_, i64>(0)? as u64;
            freed.bytes += row.get::<_, i64>(1)?;
        }
        Ok(())
    };
    count(&mut shared.query(params![class as i64])?)?;
    if let Some(sink) = sink {
        count(&mut own.query(params![class as i64, sink])?)?;
    }
    Ok(freed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        (dir, store)
    }

    fn add(store: &Store, class: Class, points: u64, bytes: usize) -> i64 {
        insert(&store.conn, class, 0, points, &vec![b'x'; bytes]).unwrap()
    }

    #[test]
    fn each_sink_has_its_own_cursor_and_alarm_events_come_first() {
        let (_dir, mut store) = store();
        store
            .outbox_set_sinks(&["a".to_string(), "b".to_string()])
            .unwrap();
        let t1 = add(&store, Class::Telemetry, 10, 5);
        let t2 = add(&store, Class::Telemetry, 10, 5);
        let a1 = add(&store, Class::Alarm, 3, 5);
        let chunk = store.outbox_next("a", 100, 100).unwrap().unwrap();
        assert_eq!(
            (chunk.class, chunk.first_id, chunk.last_id),
            (Class::Alarm, a1, a1)
        );
        store.outbox_delivered("a", Class::Alarm, a1).unwrap();
        let chunk = store.outbox_next("a", 100, 100).unwrap().unwrap();
        assert_eq!((chunk.first_id, chunk.last_id, chunk.points), (t1, t2, 20));
        assert_eq!(chunk.body.len(), 10);
        // A sink that is down holds nothing back for the other, and rows stay until both passed.
        let freed = store.outbox_delivered("a", Class::Telemetry, t2).unwrap();
        assert_eq!(freed.rows, 0);
        assert!(store.outbox_next("a", 100, 100).unwrap().is_none());
        assert_eq!(store.outbox_depth("b").unwrap().points, 23);
        store.outbox_delivered("b", Class::Alarm, a1).unwrap();
        let freed = store.outbox_delivered("b", Class::Telemetry, t2).unwrap();
        assert_eq!((freed.rows, freed.points, freed.bytes), (2, 20, 10));
        assert_eq!(store.outbox_bytes().unwrap(), 0);
    }

    #[test]
    fn a_chunk_stops_at_the_point_limit_but_always_holds_one_row() {
        let (_dir, mut store) = store();
        store.outbox_set_sinks(&["a".to_string()]).unwrap();
        let first = add(&store, Class::Telemetry, 700, 1);
        add(&store, Class::Telemetry, 700, 1);
        let chunk = store.outbox_next("a", 500, 100).unwrap().unwrap();
        assert_eq!(
            (chunk.first_id, chunk.last_id, chunk.rows),
            (first, first, 1)
        );
    }

    #[test]
    fn eviction_takes_the_oldest_telemetry_and_never_alarm_events() {
        let (_dir, store) = store();
        let alarm = add(&store, Class::Alarm, 1, 100);
        let oldest = add(&store, Class::Telemetry, 5, 100);
        let second = add(&store, Class::Telemetry, 5, 100);
        let newest = add(&store, Class::Telemetry, 5, 100);
        let freed = evict_telemetry(&store.conn, 150).unwrap();
        assert_eq!((freed.rows, freed.points, freed.bytes), (2, 10, 200));
        let ids: Vec<i64> = store
            .conn
            .prepare("SELECT id FROM outbox ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(ids, [alarm, newest]);
        assert!(!ids.contains(&oldest) && !ids.contains(&second));
        let freed = evict_telemetry(&store.conn, 10_000).unwrap();
        assert_eq!(freed.rows, 1);
        assert_eq!(total_bytes(&store.conn).unwrap(), 100);
    }

    #[test]
    fn dead_letters_go_back_to_their_own_sink_only() {
        let (_dir, mut store) = store();
        store
            .outbox_set_sinks(&["a".to_string(), "b".to_string()])
            .unwrap();
        let t = add(&store, Class::Telemetry, 4, 8);
        for sink in ["a", "b"] {
            store.outbox_delivered(sink, Class::Telemetry, t).unwrap();
        }
        store
            .outbox_dead_letter("a", Class::Telemetry, 0, 4, b"body", 400, "conflict", 1)
            .unwrap();
        let dead = store.dead_letters().unwrap();
        assert_eq!(
            (dead.len(), dead[0].status, dead[0].message.as_str()),
            (1, 400, "conflict")
        );
        assert_eq!(store.retry_dead(None, 2).unwrap(), 1);
        assert!(store.dead_letters().unwrap().is_empty());
        let chunk = store.outbox_next("a", 100, 100).unwrap().unwrap();
        assert_eq!(chunk.body, b"body");
        assert!(store.outbox_next("b", 100, 100).unwrap().is_none());
        store
            .outbox_delivered("a", Class::Telemetry, chunk.last_id)
            .unwrap();
        assert_eq!(store.outbox_bytes().unwrap(), 0);
    }

    #[test]
    fn without_sinks_nothing_stays_and_a_removed_sink_holds_nothing_back() {
        let (_dir, mut store) = store();
        store
            .outbox_set_sinks(&["a".to_string(), "b".to_string()])
            .unwrap();
        let t = add(&store, Class::Telemetry, 4, 8);
        store.outbox_delivered("a", Class::Telemetry, t).unwrap();
        let freed = store.outbox_set_sinks(&["a".to_string()]).unwrap();
        assert_eq!(freed.rows, 1);
        add(&store, Class::Telemetry, 4, 8);
        store.outbox_set_sinks(&[]).unwrap();
        assert_eq!(store.outbox_bytes().unwrap(), 0);
        assert!(store.outbox_sinks().unwrap().is_empty());
    }
}
