//! The durable queue towards fire-monitoring centres (`[[northbound]]`): application data
//! units waiting for the centre's confirmation (with the serial number of their first send,
//! which every repeat keeps), each link's last serial number, and what each link last gave the
//! centre of each device (its state word and the alarms that make it). The rows
//! are `northbound`'s; the store owns the schema.

pub(super) const MIGRATION: &str = "CREATE TABLE northbound_queue (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        link TEXT NOT NULL,
        priority INTEGER NOT NULL,
        created_ms INTEGER NOT NULL,
        unit BLOB NOT NULL,
        what TEXT NOT NULL,
        serial INTEGER,
        supersedes TEXT,
        set_aside INTEGER NOT NULL DEFAULT 0
     );
     CREATE INDEX northbound_queue_order ON northbound_queue (link, priority, id);
     CREATE TABLE northbound_serial (
        link TEXT PRIMARY KEY,
        serial INTEGER NOT NULL
     );
     CREATE TABLE northbound_device (
        link TEXT NOT NULL,
        device TEXT NOT NULL,
        state TEXT NOT NULL,
        PRIMARY KEY (link, device)
     ) WITHOUT ROWID;";
