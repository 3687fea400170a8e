//! The durable queue of alarm pushes and the routing state behind escalation: which routes hold
//! an alarm, its escalation and reminder timers, and its last snapshot. Plans are applied in
//! the journal's transaction (`Router` as the store's `PushPlanner`); the delivery tasks read
//! and update lanes.
//!
//! Owns: the rows of the push-queue tables (their schema is `store::alerts`). Must not touch:
//! the journal or alarm states, which it only follows.

use std::collections::BTreeSet;

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::Serialize;

use super::routing::{AlarmInfo, AlertPlan, Timer, TimerKind};
use super::{Notice, Router};
use crate::model::alarm::AlarmEvent;
use crate::store::alerts::LANE_HEAD_QUERY;
use crate::store::{PushPlanner, Store, StoreError};

/// A lane: deliveries of one route to one channel (and e-mail recipient), sent in order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lane {
    pub route: String,
    pub channel: String,
    pub recipient: String,
}

/// A queued delivery as the sender sees it.
#[derive(Debug, Clone)]
pub struct Queued {
    pub id: i64,
    pub created_ms: i64,
    pub next_ms: i64,
    pub attempts: i64,
    pub notice: Notice,
}

/// One delivery of an alarm, for the web UI.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeliveryStatus {
    pub id: i64,
    pub route: String,
    pub channel: String,
    pub recipient: String,
    pub event: String,
    pub created_ms: i64,
    /// `pending`, `delivered` or `failed` (given up).
    pub status: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub done_ms: Option<i64>,
    /// Set when the push went out inside a digest.
    pub batch: Option<String>,
}

/// Routes holding an alarm.
fn holders(tx: &Connection, key: &str) -> Result<BTreeSet<String>, StoreError> {
    let mut stmt = tx.prepare_cached("SELECT route FROM alert_holder WHERE alarm_key = ?1")?;
    let rows = stmt.query_map([key], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Applies a plan; returns the deliveries queued.
fn apply_plan(
    tx: &Transaction<'_>,
    plan: &AlertPlan,
    key: &str,
    now_ms: i64,
) -> Result<u64, StoreError> {
    let mut queued = 0;
    for d in &plan.deliveries {
        let notice = serde_json::to_string(&d.notice).map_err(|e| StoreError::Io(e.to_string()))?;
        queued += tx
            .prepare_cached(
                "INSERT OR IGNORE INTO alert_delivery
                 (dedupe, alarm_key, route, channel, recipient, event, created_ms, notice, status, next_ms,
                  urgent)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', ?7, ?9)",
            )?
            .execute(params![
                d.dedupe,
                key,
                d.route,
                d.channel,
                d.recipient,
                d.notice.event,
                d.notice.at_ms,
                notice,
                d.notice.urgent()
            ])? as u64;
    }
    if plan.release {
        tx.execute("DELETE FROM alert_holder WHERE alarm_key = ?1", [key])?;
        tx.execute("DELETE FROM alert_timer WHERE alarm_key = ?1", [key])?;
        tx.execute("DELETE FROM alert_alarm WHERE alarm_key = ?1", [key])?;
        return Ok(queued);
    }
    for route in &plan.hold {
        tx.execute(
            "INSERT OR IGNORE INTO alert_holder (alarm_key, route, since_ms) VALUES (?1, ?2, ?3)",
            params![key, route, now_ms],
        )?;
    }
    if plan.cancel_timers {
        tx.execute("DELETE FROM alert_timer WHERE alarm_key = ?1", [key])?;
    }
    for t in &plan.timers {
        tx.execute(
            "INSERT INTO alert_timer (alarm_key, route, kind, due_ms, since_ms) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (alarm_key, route, kind) DO UPDATE SET due_ms = excluded.due_ms, fired = fired + 1",
            params![t.key, t.route, t.kind.as_str(), t.due_ms, t.since_ms],
        )?;
    }
    if let Some(info) = &plan.snapshot {
        let json = serde_json::to_string(info).map_err(|e| StoreError::Io(e.to_string()))?;
        tx.execute(
            "INSERT INTO alert_alarm (alarm_key, info) VALUES (?1, ?2)
             ON CONFLICT (alarm_key) DO UPDATE SET info = excluded.info",
            params![key, json],
        )?;
    }
    Ok(queued)
}

fn parse_notice(json: &str) -> Result<Notice, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Io(format!("queued push unreadable: {e}")))
}

impl Store {
    /// When the next escalation or reminder is due.
    pub fn alert_next_timer(&self) -> Result<Option<i64>, StoreError> {
        Ok(self
            .connection()
            .query_row("SELECT MIN(due_ms) FROM alert_timer", [], |r| r.get(0))?)
    }

    /// Fires every timer due at `now_ms`: escalations to the next route, reminders (which are
    /// rescheduled). Returns the deliveries queued.
    pub fn alert_fire_timers(&mut self, router: &Router, now_ms: i64) -> Result<u64, StoreError> {
        let tx = self.connection_mut().transaction()?;
        let due: Vec<(Timer, i64)> = {
            let mut stmt = tx.prepare(
                "SELECT alarm_key, route, kind, due_ms, since_ms, fired FROM alert_timer
                 WHERE due_ms <= ?1 ORDER BY due_ms",
            )?;
            let rows = stmt.query_map([now_ms], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (key, route, kind, due_ms, since_ms, fired) = row?;
                if let Some(kind) = TimerKind::parse(&kind) {
                    out.push((
                        Timer {
                            key,
                            route,
                            kind,
                            due_ms,
                            since_ms,
                        },
                        fired,
                    ));
                }
            }
            out
        };
        let mut queued = 0;
        for (timer, fired) in due {
            tx.execute(
                "DELETE FROM alert_timer WHERE alarm_key = ?1 AND route = ?2 AND kind = ?3",
                params![timer.key, timer.route, timer.kind.as_str()],
            )?;
            let info: Option<String> = tx
                .query_row(
                    "SELECT info FROM alert_alarm WHERE alarm_key = ?1",
                    [&timer.key],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(info) = info.and_then(|i| serde_json::from_str::<AlarmInfo>(&i).ok()) else {
                continue;
            };
            let mut plan = router.on_timer(&timer, &info, now_ms, fired);
            // A route that holds the alarm already keeps its own deadline.
            let held = holders(&tx, &timer.key)?;
            plan.timers
                .retain(|t| t.route == timer.route || !held.contains(&t.route));
            // A reminder keeps its firing count: the next firing's deliveries are new ones.
            for t in &mut plan.timers {
                if t.kind == TimerKind::Remind && t.route == timer.route {
                    tx.execute(
                        "INSERT INTO alert_timer (alarm_key, route, kind, due_ms, since_ms, fired)
                         VALUES (?1, ?2, 'remind', ?3, ?4, ?5)",
                        params![t.key, t.route, t.due_ms, t.since_ms, fired + 1],
                    )?;
                }
            }
            plan.timers
                .retain(|t| !(t.kind == TimerKind::Remind && t.route == timer.route));
            queued += apply_plan(&tx, &plan, &timer.key, now_ms)?;
        }
        tx.commit()?;
        Ok(queued)
    }

    /// Lanes with pending deliveries.
    pub fn alert_lanes(&self) -> Result<Vec<Lane>, StoreError> {
        let mut stmt = self.connection().prepare(
            "SELECT DISTINCT route, channel, recipient FROM alert_delivery WHERE status = 'pending'",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Lane {
                route: r.get(0)?,
                channel: r.get(1)?,
                recipient: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The first `limit` pending deliveries of a lane: urgent ones (`Notice::urgent`: a critical
    /// alarm raised, escalated, annunciated again, or unacknowledged) first, then the rest, each
    /// in queue order, read along an index however long the queue.
    pub fn alert_lane_head(&self, lane: &Lane, limit: usize) -> Result<Vec<Queued>, StoreError> {
        let mut stmt = self.connection().prepare_cached(LANE_HEAD_QUERY)?;
        let rows = stmt.query_map(
            params![lane.route, lane.channel, lane.recipient, limit as i64],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                ))
            },
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (id, created_ms, next_ms, attempts, notice) = row?;
            out.push(Queued {
                id,
                created_ms,
                next_ms,
                attempts,
                notice: parse_notice(&notice)?,
            });
        }
        Ok(out)
    }

    /// Records the outcome of one send carrying `ids`: `delivered`, `failed` (given up), or
    /// still `pending` with the next attempt at `next_ms`.
    pub fn alert_mark(
        &mut self,
        ids: &[i64],
        status: &str,
        batch: &str,
        error: Option<&str>,
        now_ms: i64,
        next_ms: i64,
    ) -> Result<(), StoreError> {
        let tx = self.connection_mut().transaction()?;
        for id in ids {
            if status == "pending" {
                tx.execute(
                    "UPDATE alert_delivery SET attempts = attempts + 1, last_error = ?2, next_ms = ?3
                     WHERE id = ?1",
                    params![id, error, next_ms],
                )?;
            } else {
                tx.execute(
                    "UPDATE alert_delivery SET attempts = attempts + 1, last_error = ?2, status = ?3,
                     done_ms = ?4, batch = ?5 WHERE id = ?1",
                    params![id, error, status, now_ms, batch],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Pending deliveries in the whole queue.
    pub fn alert_pending(&self) -> Result<u64, StoreError> {
        Ok(self.connection().query_row(
            "SELECT COUNT(*) FROM alert_delivery WHERE status = 'pending'",
            [],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    /// Per route, when its oldest undelivered critical push was queued.
    pub fn alert_oldest_critical(
        &self,
    ) -> Result<std::collections::BTreeMap<String, i64>, StoreError> {
        let mut stmt = self.connection().prepare(
            "SELECT route, MIN(created_ms) FROM alert_delivery
             WHERE status = 'pending' AND urgent = 1
             GROUP BY route",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes finished deliveries older than `before_ms`.
    pub fn alert_purge(&mut self, before_ms: i64) -> Result<usize, StoreError> {
        Ok(self.connection().execute(
            "DELETE FROM alert_delivery WHERE status != 'pending' AND done_ms < ?1",
            [before_ms],
        )?)
    }

    /// Every delivery of an alarm, newest first (at most `limit`).
    pub fn alert_deliveries(
        &self,
        key: &str,
        limit: usize,
    ) -> Result<Vec<DeliveryStatus>, StoreError> {
        let mut stmt = self.connection().prepare(
            "SELECT id, route, channel, recipient, event, created_ms, status, attempts, last_error,
                    done_ms, batch
             FROM alert_delivery WHERE alarm_key = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![key, limit as i64], |r| {
            Ok(DeliveryStatus {
                id: r.get(0)?,
                route: r.get(1)?,
                channel: r.get(2)?,
                recipient: r.get(3)?,
                event: r.get(4)?,
                created_ms: r.get(5)?,
                status: r.get(6)?,
                attempts: r.get(7)?,
                last_error: r.get(8)?,
                done_ms: r.get(9)?,
                batch: r.get(10)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

impl PushPlanner for Router {
    fn queue_pushes(
        &self,
        tx: &Transaction<'_>,
        event: &AlarmEvent,
        seq: i64,
    ) -> Result<u64, StoreError> {
        let held = holders(tx, &event.key)?;
        let plan = self.plan(event, seq, &held);
        if plan.is_empty() {
            return Ok(0);
        }
        apply_plan(tx, &plan, &event.key, event.at_ms)
    }
}
