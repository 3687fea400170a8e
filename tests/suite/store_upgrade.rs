//! The store's upgrade path: a store left by every earlier schema version (the first N
//! migrations, exactly as those releases applied them) opens with this parkguard, which
//! migrates it in place and keeps its alarm states, hash-chained journal, outbox and sign-offs;
//! a store from a newer parkguard is refused. The migrations already released are pinned by
//! their SHA-256, so editing one instead of adding a new one fails here.

use crate::support;

use std::sync::Arc;

use parkguard::config::Config;
use parkguard::model::{Quality, Reading, Tags, Value};
use parkguard::rules::engine::RuleEngine;
use parkguard::store::{SignOff, Store, StoreError, SCHEMA_VERSION};
use sha2::{Digest, Sha256};

/// SHA-256 of each released migration's SQL, in order. Append a line for a new migration;
/// never change one.
const RELEASED: &[&str] = &[
    "cde31b61ac029012684f47b50fa85722d8f8b113c718275d7e9a9806e37b3d7a",
    "86cf9fbf6eb32bcf5a343c2a41be1c9b1c6d726cc0f10d4f1e40f98cbc892b9a",
    "ab0104ef001b0d543487dd2a8e0878c6c168bc671309daa6d518ae28d94b8562",
    "fafbc60105da288f9de524a135f09d123db1d285503d16ac3d398e9534718e73",
    "3b13a10ac9f3a12777e2d8db6c0264bc2ca690634b4a75eda892d0f926daafad",
    "5cffc3a1f042cefc858ab1d475226b3e62aea4ec7244d14ce0374e52897f1cb5",
    "380ee256f623d40bff10c8e38ba7cd724684d74bb1d181410d280595e2e6ac17",
    "c8a2716677c7eba8f0c1821be5e91f241e1367b557d1298febd9c2de8fd02ea7",
];

#[test]
fn released_migrations_are_never_edited() {
    let hashes: Vec<String> = parkguard::store::migrations()
        .iter()
        .map(|sql| {
            Sha256::digest(sql.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        })
        .collect();
    assert_eq!(hashes.len() as i64, SCHEMA_VERSION);
    assert_eq!(
        &hashes[..RELEASED.len()],
        RELEASED,
        "a released migration changed"
    );
    assert_eq!(
        hashes.len(),
        RELEASED.len(),
        "pin the new migration's hash in RELEASED"
    );
}

/// Tables each schema version added, oldest first.
const TABLES_BY_VERSION: &[&[&str]] = &[
    &["alarm_state", "journal", "journal_head"],
    &[
        "outbox",
        "outbox_cursor",
        "outbox_dead",
        "bad_message",
        "history",
    ],
    &["signoff"],
];

/// A store at the current version with an active smoke alarm (state and journal), an outbox
/// batch and a sign-off.
fn donor(dir: &std::path::Path) -> std::path::PathBuf {
    let (site_dir, path) = support::site(&format!(
        "{}[[devices]]\nid = \"smoke-1\"\nlocation = \"l\"\nprofile = \"nb_smoke\"\n",
        support::site_header("l", "")
    ));
    let config = Config::load(&path).expect("site");
    let mut engine = RuleEngine::new(&config, &parkguard::status::device(&config), 1_000);
    let reading = Reading {
        tags: Arc::new(Tags {
            park: "p".into(),
            enterprise: "e".into(),
            location: "l".into(),
            device: "smoke-1".into(),
            kind: String::new(),
            profile: "nb_smoke".into(),
            extra: Vec::new(),
        }),
        measurement: Arc::from("smoke"),
        quantity: Arc::from("event"),
        value: Value::Text(Arc::from("alarm")),
        unit: None,
        timestamp_ns: 2_000_000_000,
        quality: Quality::Good,
    };
    let mut events = Vec::new();
    engine.on_readings(&[reading], 2_000, &mut events);
    assert!(!events.is_empty());
    let file = dir.join("donor.db");
    let mut store = Store::open(&file).expect("donor");
    store
        .record(&events, Some((b"gzip line protocol", 3)))
        .expect("record");
    store
        .add_signoff(&SignOff {
            device: "smoke-1".into(),
            at_ms: 3_000,
            technician: "tom".into(),
            firmware: Some("1.2".into()),
            notes: "mounted 2.5 m from the ceiling".into(),
        })
        .expect("sign-off");
    drop(site_dir);
    file
}

#[test]
fn a_store_of_every_earlier_version_upgrades_and_keeps_its_data() {
    let dir = tempfile::TempDir::new().expect("dir");
    let donor_file = donor(dir.path());
    let donor = Store::open(&donor_file).expect("donor");
    let alarms = donor.load_alarms().expect("alarms");
    let journal = donor.journal(None, 100).expect("journal");
    assert_eq!(alarms.len(), 1);
    assert_eq!(journal.len(), 1);
    drop(donor);

    for version in 0..SCHEMA_VERSION as usize {
        let file = dir.path().join(format!("v{version}.db"));
        Store::create_at_version(&file, version).expect("old store");
        {
            let conn = rusqlite::Connection::open(&file).expect("open");
            let found: i64 = conn
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .expect("version");
            assert_eq!(found, version as i64);
            conn.execute(
                "ATTACH DATABASE ?1 AS donor",
                [donor_file.display().to_string()],
            )
            .expect("attach");
            for tables in &TABLES_BY_VERSION[..version.min(TABLES_BY_VERSION.len())] {
                for table in *tables {
                    // A table a later version replaced (the per-series history) has nothing
                    // to carry over from the donor.
                    let in_donor: bool = conn
                        .query_row(
                            "SELECT COUNT(*) > 0 FROM donor.sqlite_master WHERE name = ?1",
                            [table],
                            |r| r.get(0),
                        )
                        .expect("donor tables");
                    if !in_donor {
                        continue;
                    }
                    // The columns the table had at that version (later ones added some).
                    let columns: Vec<String> = conn
                        .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
                        .and_then(|mut q| {
                            q.query_map([], |r| r.get::<_, String>(0))?
                                .collect::<Result<_, _>>()
                        })
                        .expect("columns");
                    let list = columns.join(", ");
                    conn.execute(
                        &format!("INSERT INTO {table} ({list}) SELECT {list} FROM donor.{table}"),
                        [],
                    )
                    .unwrap_or_else(|e| panic!("v{version} {table}: {e}"));
                }
            }
        }

        let store = Store::open(&file).unwrap_or_else(|e| panic!("v{version}: {e}"));
        assert_eq!(store.schema_version().expect("version"), SCHEMA_VERSION);
        // Every table of the current schema is there and usable.
        assert_eq!(store.alert_pending().expect("alert queue"), 0);
        assert_eq!(
            store.latest_signoffs().expect("sign-offs").len(),
            usize::from(version >= 3)
        );
        if version >= 1 {
            assert_eq!(store.load_alarms().expect("alarms"), alarms, "v{version}");
            assert_eq!(store.journal(None, 100).expect("journal"), journal);
            let verified = store.verify_journal().expect("verify");
            assert_eq!(
                (verified.entries, verified.problem),
                (1, None),
                "v{version}"
            );
        }
        if version >= 2 {
            assert!(
                store.outbox_bytes().expect("outbox") > 0,
                "v{version}: outbox kept"
            );
        }
    }
}

#[test]
fn a_store_from_a_newer_parkguard_is_refused() {
    let dir = tempfile::TempDir::new().expect("dir");
    let file = dir.path().join("newer.db");
    Store::create_at_version(&file, SCHEMA_VERSION as usize).expect("store");
    rusqlite::Connection::open(&file)
        .and_then(|c| c.pragma_update(None, "user_version", SCHEMA_VERSION + 1))
        .expect("bump");
    match Store::open(&file) {
        Err(StoreError::TooNew(v)) => assert_eq!(v, SCHEMA_VERSION + 1),
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a newer store was opened"),
    }
}
