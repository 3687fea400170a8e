//! The tables of the durable push queue and of the routing state behind escalation, and the
//! query for a lane's head along their index. The store owns the schema (migrations run in one
//! place); what is kept in them and when is `alerts::queue`'s.

pub(super) const MIGRATION: &str = "CREATE TABLE alert_delivery (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        dedupe TEXT NOT NULL UNIQUE,
        alarm_key TEXT NOT NULL,
        route TEXT NOT NULL,
        channel TEXT NOT NULL,
        recipient TEXT NOT NULL,
        event TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        notice TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_ms INTEGER NOT NULL,
        last_error TEXT,
        done_ms INTEGER,
        batch TEXT
     );
     CREATE INDEX alert_delivery_lane ON alert_delivery (status, route, channel, recipient, id);
     CREATE INDEX alert_delivery_alarm ON alert_delivery (alarm_key, id);
     CREATE TABLE alert_holder (
        alarm_key TEXT NOT NULL,
        route TEXT NOT NULL,
        since_ms INTEGER NOT NULL,
        PRIMARY KEY (alarm_key, route)
     ) WITHOUT ROWID;
     CREATE TABLE alert_timer (
        alarm_key TEXT NOT NULL,
        route TEXT NOT NULL,
        kind TEXT NOT NULL,
        due_ms INTEGER NOT NULL,
        since_ms INTEGER NOT NULL,
        fired INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (alarm_key, route, kind)
     ) WITHOUT ROWID;
     CREATE INDEX alert_timer_due ON alert_timer (due_ms);
     CREATE TABLE alert_alarm (
        alarm_key TEXT PRIMARY KEY,
        info TEXT NOT NULL
     );";

/// The head of a lane's queue (route, channel, recipient, how many): urgent first, then in
/// queue order, along the index `alert_delivery_urgent`.
pub const LANE_HEAD_QUERY: &str =
    "SELECT id, created_ms, next_ms, attempts, notice FROM alert_delivery
     WHERE status = 'pending' AND route = ?1 AND channel = ?2 AND recipient = ?3
     ORDER BY urgent DESC, id
     LIMIT ?4";
