//! The durable queue towards the centres: what each link still has to send, fires first.
//! Alarm transitions are queued in the journal's transaction (`Planner`, as the store's
//! planner), so that a fire is on its way to the centre exactly when its journal entry
//! exists; a row leaves only when the centre has confirmed it.
//!
//! Owns: the rows of `northbound_queue` and `northbound_serial` (their schema is the store's).
//! Must not touch: the journal or alarm states.

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::gb26875::mapping::{DeviceState, Mapper, Outgoing, Priority};
use crate::config::northbound::NorthboundType;
use crate::config::Config;
use crate::model::alarm::AlarmEvent;
use crate::store::{PushPlanner, Store, StoreError};

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
    let mut insert = tx.prepare_cached(
        "INSERT INTO northbound_queue (link, priority, created_ms, unit, what, supersedes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    // Never a fire's row, and never one already sent (the centre may have it).
    let mut superseded = tx.prepare_cached(
        "DELETE FROM northbound_queue
         WHERE link = ?1 AND supersedes = ?2 AND serial IS NULL AND priority > ?3",
    )?;
    for item in items {
        if let Some(key) = &item.supersedes {
            superseded.execute(params![link, key, Priority::Fire as i64])?;
        }
        insert.execute(params![
            link,
            item.priority as i64,
            at_ms,
            item.unit,
            item.what,
            item.supersedes
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
        "SELECT id, priority, unit, what, serial FROM northbound_queue
         WHERE link = ?1 AND set_aside = 0
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

/// Whether row `id` is still queued (not confirmed, not replaced by a newer state).
pub fn exists(conn: &Connection, id: i64) -> Result<bool, StoreError> {
    Ok(conn
        .query_row("SELECT 1 FROM northbound_queue WHERE id = ?1", [id], |_| {
            Ok(())
        })
        .optional()?
        .is_some())
}

/// The centre refused it in several connections in a row: left out of the sending until
/// the next start.
pub fn set_aside(conn: &Connection, id: i64) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE northbound_queue SET set_aside = 1 WHERE id = ?1",
        [id],
    )?;
    Ok(())
}

/// At start, set-aside rows are tried again.
pub fn restore_set_aside(conn: &Connection, link: &str) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE northbound_queue SET set_aside = 0 WHERE link = ?1",
        [link],
    )?;
    Ok(())
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

/// What link `link` last gave the centre of `device`.
fn device_state(tx: &Connection, link: &str, device: &str) -> Result<DeviceState, StoreError> {
    let json: Option<String> = tx
        .prepare_cached("SELECT state FROM northbound_device WHERE link = ?1 AND device = ?2")?
        .query_row(params![link, device], |r| r.get(0))
        .optional()?;
    // A state that cannot be read is as good as none: the next word is sent whole.
    Ok(json
        .and_then(|j| serde_json::from_str(&j).ok())
        .unwrap_or_default())
}

fn save_device_state(
    tx: &Connection,
    link: &str,
    device: &str,
    state: &DeviceState,
) -> Result<(), StoreError> {
    let json = serde_json::to_string(state).map_err(|e| StoreError::BadState {
        key: format!("northbound/{link}/{device}"),
        error: e.to_string(),
    })?;
    tx.prepare_cached(
        "INSERT INTO northbound_device (link, device, state) VALUES (?1, ?2, ?3)
         ON CONFLICT (link, device) DO UPDATE SET state = excluded.state",
    )?
    .execute(params![link, device, json])?;
    Ok(())
}

/// Whether another device of `device`'s system has a fire standing at the centre.
fn other_fire_on_system(
    tx: &Connection,
    link: &str,
    device: &str,
    mapper: &Mapper,
) -> Result<bool, StoreError> {
    let mut stmt =
        tx.prepare_cached("SELECT device, state FROM northbound_device WHERE link = ?1")?;
    let rows = stmt.query_map([link], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    for row in rows {
        let (other, json) = row?;
        if other == device || !mapper.same_system(device, &other) {
            continue;
        }
        let state: DeviceState = serde_json::from_str(&json).unwrap_or_default();
        if state.fire_sent() {
            return Ok(true);
        }
    }
    Ok(false)
}

impl Planner {
    /// After a start: every device's word from the alarms standing now, and what differs from
    /// what the centre was last given is queued (an alarm retired with its rule, a link that
    /// is new), in one transaction. Returns the units queued.
    pub fn reconcile(
        &self,
        store: &mut Store,
        standing: &[AlarmEvent],
        at_ms: i64,
    ) -> Result<u64, StoreError> {
        let tx = store.connection_mut().transaction()?;
        let queued = self.reconcile_in(&tx, standing, at_ms)?;
        tx.commit()?;
        Ok(queued)
    }

    fn reconcile_in(
        &self,
        tx: &Transaction<'_>,
        standing: &[AlarmEvent],
        at_ms: i64,
    ) -> Result<u64, StoreError> {
        let mut queued = 0;
        for (name, mapper) in &self.links {
            let now = mapper.parts_of(standing);
            let mut devices: Vec<String> = now.keys().cloned().collect();
            let mut stmt =
                tx.prepare_cached("SELECT device FROM northbound_device WHERE link = ?1")?;
            let known = stmt.query_map([name], |r| r.get::<_, String>(0))?;
            for device in known {
                devices.push(device?);
            }
            devices.sort();
            devices.dedup();
            for device in devices {
                let Some(enterprise) = standing
                    .iter()
                    .find(|e| e.tags.device == device)
                    .map(|e| e.tags.enterprise.clone())
                    .or_else(|| mapper.enterprise_of(&device))
                else {
                    continue;
                };
                let Some(component) = mapper.component_of(&device, &enterprise) else {
                    continue;
                };
                let mut state = device_state(tx, name, &device)?;
                state.parts = now.get(&device).cloned().unwrap_or_default();
                let at = super::gb26875::frame::time_tag(at_ms, mapper.utc_offset_minutes());
                if let Some(word) = mapper.snapshot(&device, component, &mut state, at) {
                    queued += enqueue(tx, name, &[word], at_ms)?;
                }
                save_device_state(tx, name, &device, &state)?;
            }
        }
        Ok(queued)
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
            let device = &event.tags.device;
            if mapper
                .component_of(device, &event.tags.enterprise)
                .is_none()
            {
                continue;
            }
            let mut state = device_state(tx, name, device)?;
            let other_fire = other_fire_on_system(tx, name, device, mapper)?;
            let items = mapper.messages(event, &mut state, other_fire);
            save_device_state(tx, name, device, &state)?;
            if !items.is_empty() {
                queued += enqueue(tx, name, &items, event.at_ms)?;
            }
        }
        Ok(queued)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(priority: Priority, what: &str, key: Option<&str>) -> Outgoing {
        Outgoing {
            priority,
            unit: vec![2, 1],
            what: what.into(),
            supersedes: key.map(str::to_string),
        }
    }

    #[test]
    fn a_newer_state_replaces_unsent_ones_but_never_a_fire_or_a_frame_on_its_way() {
        let dir = tempfile::tempdir().expect("dir");
        let store = crate::store::Store::open(&dir.path().join("s.db")).expect("store");
        let conn = store.connection();
        let key = Some("state/d1");
        enqueue(conn, "c", &[item(Priority::Status, "fault", key)], 1).expect("queue");
        enqueue(
            conn,
            "c",
            &[item(Priority::Status, "fault+supervisory", key)],
            2,
        )
        .expect("queue");
        let rows = head(conn, "c", 10, &[]).expect("head");
        assert_eq!(
            rows.iter().map(|r| r.what.as_str()).collect::<Vec<_>>(),
            ["fault+supervisory"]
        );
        // Sent once: it stays, whatever comes after.
        set_serial(conn, rows[0].id, 7).expect("serial");
        enqueue(conn, "c", &[item(Priority::Fire, "fire", key)], 3).expect("queue");
        enqueue(conn, "c", &[item(Priority::Fire, "no fire", key)], 4).expect("queue");
        enqueue(conn, "c", &[item(Priority::Status, "fault", key)], 5).expect("queue");
        let rows = head(conn, "c", 10, &[]).expect("head");
        assert_eq!(
            rows.iter().map(|r| r.what.as_str()).collect::<Vec<_>>(),
            ["fire", "no fire", "fault+supervisory", "fault"],
            "fires in order and first; the sent row kept"
        );
        assert_eq!(rows[2].serial, Some(7));
        // Another device's rows are not touched; another link's neither.
        enqueue(
            conn,
            "c",
            &[item(Priority::Status, "other", Some("state/d2"))],
            6,
        )
        .expect("queue");
        enqueue(conn, "x", &[item(Priority::Status, "x", key)], 7).expect("queue");
        assert_eq!(depth(conn, "c").expect("depth").0, 5);
        assert_eq!(next_serial(conn, "c").expect("serial"), 1);
        assert_eq!(next_serial(conn, "c").expect("serial"), 2);
        assert_eq!(next_serial(conn, "x").expect("serial"), 1);
    }
}
