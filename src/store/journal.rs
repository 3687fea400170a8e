//! Alarm states and the hash-chained journal: recording transitions with their alarm points and
//! the pushes they plan in one transaction, reading the journal, and verifying its chain and
//! the anchors written outside it.

use std::collections::BTreeMap;

use super::*;

impl Store {
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

    /// Alarms raised in each of `hours` hours from `from_ms` on: (all, critical ones), per
    /// hour, oldest first. Events and tests are not alarms here.
    pub fn alarms_raised_per_hour(
        &self,
        from_ms: i64,
        hours: usize,
    ) -> Result<Vec<(u32, u32)>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT (at_ms - ?1) / 3600000 AS hour, COUNT(*), SUM(severity = 'critical')
             FROM journal
             WHERE at_ms >= ?1 AND action = 'raised' AND kind NOT IN ('event', 'test')
             GROUP BY hour",
        )?;
        let rows = stmt.query_map(params![from_ms], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, u32>(1)?,
                r.get::<_, u32>(2)?,
            ))
        })?;
        let mut counts = vec![(0, 0); hours];
        for row in rows {
            let (hour, raised, critical) = row?;
            if let Some(slot) = usize::try_from(hour).ok().and_then(|h| counts.get_mut(h)) {
                *slot = (raised, critical);
            }
        }
        Ok(counts)
    }

    /// Fires judged since `since_ms`, per enterprise: each fire (from a raise of its alarm to
    /// the next) counted once, by its last verdict in the journal. Fires still waiting for a
    /// verdict are not counted.
    pub fn fire_tally(&self, since_ms: i64) -> Result<Vec<FireTally>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT key, enterprise, action, operator, value FROM journal
             WHERE at_ms >= ?1 AND action IN ('raised', 'fire_confirmed', 'false_alarm')
             ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![since_ms], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })?;
        // The verdict of each alarm's current fire: (enterprise, verdict, automatic, reason).
        type Verdict = (String, String, bool, Option<String>);
        let mut current: BTreeMap<String, Option<Verdict>> = BTreeMap::new();
        let mut tallies: BTreeMap<String, FireTally> = BTreeMap::new();
        let count = |v: Verdict, tallies: &mut BTreeMap<String, FireTally>| {
            let (enterprise, action, automatic, reason) = v;
            let t = tallies
                .entry(enterprise.clone())
                .or_insert_with(|| FireTally {
                    enterprise,
                    ..FireTally::default()
                });
            t.fires += 1;
            match (action.as_str(), automatic) {
                ("fire_confirmed", true) => t.confirmed_automatically += 1,
                ("fire_confirmed", false) => t.confirmed_by_operator += 1,
                _ => {
                    t.false_alarms += 1;
                    *t.false_alarm_reasons
                        .entry(reason.unwrap_or_else(|| "other".into()))
                        .or_default() += 1;
                }
            }
        };
        for row in rows {
            let (key, enterprise, action, operator, value) = row?;
            if action == "raised" {
                if let Some(Some(v)) = current.insert(key, None) {
                    count(v, &mut tallies);
                }
                continue;
            }
            let automatic = operator.as_deref() == Some("system");
            let reason = value.map(|v| v.trim_matches('"').to_string());
            current.insert(key, Some((enterprise, action, automatic, reason)));
        }
        for v in current.into_values().flatten() {
            count(v, &mut tallies);
        }
        Ok(tallies
            .into_values()
            .map(|mut t| {
                t.false_alarm_rate = f64::from(t.false_alarms) / f64::from(t.fires.max(1));
                t
            })
            .collect())
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
}

pub(super) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One enterprise's fires over a period (see `Store::fire_tally`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FireTally {
    pub enterprise: String,
    /// Fires with a verdict.
    pub fires: u32,
    pub confirmed_by_operator: u32,
    /// Nobody judged them within the confirmation time.
    pub confirmed_automatically: u32,
    pub false_alarms: u32,
    /// False alarms per fire judged, 0 to 1.
    pub false_alarm_rate: f64,
    /// False alarms by reason (`cooking`, `steam`, ...).
    pub false_alarm_reasons: BTreeMap<String, u32>,
}

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

pub(super) fn row_to_entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<JournalEntry> {
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
