//! The durable queue towards the centres: what each link still has to send, fires first.
//! Alarm transitions are queued in the journal's transaction (`Planner`, as the store's
//! planner), so that a fire is on its way to the centre exactly when its journal entry
//! exists; a row leaves only when the centre has confirmed it.
//!
//! Owns: the rows of `northbound_queue` and `northbound_serial` (their schema is the store's).
//! Must not touch: the journal or alarm states.

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::gb26875::mapping::{Mapper, Outgoing, Priority};
use crate::config::northbound::NorthboundType;
use crate::config::Config;
use crate::model::alarm::AlarmEvent;
use crate::store::{PushPlanner, StoreError};

/// One queued unit.
#[derive(Debug, Clone)]
pub struct Queued {
    pub id: i64,
    pub priority: i64,
    pub unit: Vec<u8>,
    pub what: String,
    /// Set at its first send; repeats (also after a reconnect or a restart) keep it, so that
    /// the centre recognises them.
    pub serial: Option<u16>,
}

impl Queued {
    pub fn is_fire(&self) -> bool {
        self.priority == Priority::Fire as i64
    }
}

pub fn enqueue(
    tx: &Connection,
    link: &str,
    items: &[Outgoing],
    at_ms: i64,
) -> Result<u64, StoreError> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO northbound_queue (link, priority, created_ms, unit, what)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for item in items {
        stmt.execute(params![
            link,
            item.priority as i64,
            at_ms,
            item.unit,
            item.what
        ])?;
    }
    Ok(items.len() as u64)
}

/// The first `limit` rows of `link` in send order (fires first, then by age), leaving out
/// `skip` (rows already on their way).
pub fn head(
    conn: &Connection,
    link: &str,
    limit: usize,
    skip: &[i64],
) -> Result<Vec<Queued>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, priority, unit, what, serial FROM northbound_queue WHERE link = ?1
         ORDER BY priority, id LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![link, (limit + skip.len()) as i64], |r| {
        Ok(Queued {
            id: r.get(0)?,
            priority: r.get(1)?,
            unit: r.get(2)?,
            what: r.get(3)?,
            serial: r.get::<_, Option<i64>>(4)?.map(|s| s as u16),
        })
    })?;
    let mut out = Vec::new();
    for row in rows {
        let row = row?;
        if !skip.contains(&row.id) {
            out.push(row);
        }
        if out.len() == limit {
            break;
        }
    }
    Ok(out)
}

/// The serial number row `id` was first sent with.
pub fn set_serial(conn: &Connection, id: i64, serial: u16) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE northbound_queue SET serial = ?2 WHERE id = ?1",
        params![id, serial],
    )?;
    Ok(())
}

/// The centre confirmed it.
pub fn remove(conn: &Connection, id: i64) -> Result<(), StoreError> {
    conn.execute("DELETE FROM northbound_queue WHERE id = ?1", [id])?;
    Ok(())
}

/// Rows waiting and the creation time of the oldest.
pub fn depth(conn: &Connection, link: &str) -> Result<(u64, Option<i64>), StoreError> {
    Ok(conn.query_row(
        "SELECT COUNT(*), MIN(created_ms) FROM northbound_queue WHERE link = ?1",
        [link],
        |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
    )?)
}

/// The next serial number of frames `link` starts, kept across connections and restarts
/// (the standard fixes the numbering when the two sides first connect). 0 is left out, so
/// that the first frame is 1.
pub fn next_serial(conn: &Connection, link: &str) -> Result<u16, StoreError> {
    let last: Option<i64> = conn
        .query_row(
            "SELECT serial FROM northbound_serial WHERE link = ?1",
            [link],
            |r| r.get(0),
        )
        .optional()?;
    let next = match last.unwrap_or(0) {
        n if n >= i64::from(u16::MAX) => 1,
        n => n + 1,
    };
    conn.execute(
        "INSERT INTO northbound_serial (link, serial) VALUES (?1, ?2)
         ON CONFLICT (link) DO UPDATE SET serial = excluded.serial",
        params![link, next],
    )?;
    Ok(next as u16)
}

/// Queues what each link's centre is told of a transition, in the journal's transaction.
pub struct Planner {
    links: Vec<(String, Mapper)>,
}

impl Planner {
    pub fn from_config(config: &Config) -> Option<Planner> {
        let links: Vec<(String, Mapper)> = config
            .site
            .northbound
            .iter()
            .filter(|n| n.kind == NorthboundType::Gb26875)
            .map(|n| (n.name.clone(), Mapper::new(config, n)))
            .collect();
        (!links.is_empty()).then_some(Planner { links })
    }
}

impl PushPlanner for Planner {
    /// Returns the units queued.
    fn queue_pushes(
        &self,
        tx: &Transaction<'_>,
        event: &AlarmEvent,
        _seq: i64,
    ) -> Result<u64, StoreError> {
        let mut queued = 0;
        for (name, mapper) in &self.links {
            let items = mapper.messages(event);
            if !items.is_empty() {
                queued += enqueue(tx, name, &items, event.at_ms)?;
            }
        }
        Ok(queued)
    }
}
