//! The durable queue towards fire-monitoring centres (`[[northbound]]`): application data
//! units waiting for the centre's confirmation (with the serial number of their first send,
//! which every repeat keeps), and each link's last serial number. The rows
//! are `northbound`'s; the store owns the schema.

pub(super) const MIGRATION: &str = "CREATE TABLE northbound_queue (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        link TEXT NOT NULL,
        priority INTEGER NOT NULL,
        created_ms INTEGER NOT NULL,
        unit BLOB NOT NULL,
        what TEXT NOT NULL,
        serial INTEGER,
        supersedes TEXT
     );
     CREATE INDEX northbound_queue_order ON northbound_queue (link, priority, id);
     CREATE TABLE northbound_serial (
        link TEXT PRIMARY KEY,
        serial INTEGER NOT NULL
     );";
