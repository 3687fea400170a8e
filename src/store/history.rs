//! Local history of readings for the web UI's charts and for sites with no InfluxDB: numeric
//! readings aggregated per series into 10-second buckets (count, min, max, sum), compacted into
//! 1-minute buckets beyond the last hour, and deleted beyond the configured retention.
//!
//! Owns: the `history` table and the in-memory buckets still open. Knows nothing of where the
//! readings came from.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::{params, Connection};
use serde::Serialize;

use super::{Store, StoreError};
use crate::model::{Quality, Reading};

/// Resolution of the recent history.
pub const FINE_MS: i64 = 10_000;
/// Resolution beyond `FINE_FOR_MS`.
pub const COARSE_MS: i64 = 60_000;
/// How long fine buckets are kept before they are compacted.
pub const FINE_FOR_MS: i64 = 3_600_000;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Bucket {
    n: u64,
    min: f64,
    max: f64,
    sum: f64,
}

/// Open buckets of the current 10-second period, per (device, quantity).
#[derive(Default)]
pub struct Accumulator {
    open: HashMap<(Arc<str>, Arc<str>), (i64, Bucket)>,
    closed: Vec<(Arc<str>, Arc<str>, i64, Bucket)>,
}

impl Accumulator {
    pub fn add(&mut self, readings: &[Reading]) {
        for r in readings {
            if r.quality != Quality::Good {
                continue;
            }
            let Some(v) = r.value.as_f64().filter(|v| v.is_finite()) else {
                continue;
            };
            let start = (r.timestamp_ns / 1_000_000).div_euclid(FINE_MS) * FINE_MS;
            let device: Arc<str> = Arc::from(r.tags.device.as_str());
            let key = (device, Arc::clone(&r.quantity));
            match self.open.get_mut(&key) {
                Some((open_start, b)) if *open_start == start => {
                    b.n += 1;
                    b.min = b.min.min(v);
                    b.max = b.max.max(v);
                    b.sum += v;
                }
                Some(slot) => {
                    let (old_start, old) = std::mem::replace(
                        slot,
                        (
                            start,
                            Bucket {
                                n: 1,
                                min: v,
                                max: v,
                                sum: v,
                            },
                        ),
                    );
                    self.closed.push((key.0, key.1, old_start, old));
                }
                None => {
                    self.open.insert(
                        key,
                        (
                            start,
                            Bucket {
                                n: 1,
                                min: v,
                                max: v,
                                sum: v,
                            },
                        ),
                    );
                }
            }
        }
    }

    /// Moves buckets whose period ended before `now_ms` (or all, at shutdown) to the closed
    /// list; series silent for a whole period are forgotten.
    pub fn close(&mut self, now_ms: i64, all: bool) {
        let closed = &mut self.closed;
        self.open.retain(|key, (start, b)| {
            if all || *start + FINE_MS <= now_ms {
                closed.push((Arc::clone(&key.0), Arc::clone(&key.1), *start, *b));
                false
            } else {
                true
            }
        });
    }

    pub fn has_closed(&self) -> bool {
        !self.closed.is_empty()
    }

    /// Writes the closed buckets, merging with any already stored for the same period.
    /// Called inside the caller's transaction; the list is emptied only by `committed`.
    pub fn write(&self, conn: &Connection) -> rusqlite::Result<()> {
        let mut stmt = conn.prepare_cached(
            "INSERT INTO history (device, quantity, span_ms, bucket_ms, n, min, max, sum)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (device, quantity, span_ms, bucket_ms) DO UPDATE SET
               n = n + excluded.n, min = min(min, excluded.min), max = max(max, excluded.max),
               sum = sum + excluded.sum",
        )?;
        for (device, quantity, start, b) in &self.closed {
            stmt.execute(params![
                &**device,
                &**quantity,
                FINE_MS,
                start,
                b.n as i64,
                b.min,
                b.max,
                b.sum
            ])?;
        }
        Ok(())
    }

    pub fn committed(&mut self) {
        self.closed.clear();
    }
}

/// One point of a chart: a bucket's start, span, count, minimum, mean and maximum.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryPoint {
    pub at_ms: i64,
    pub span_ms: i64,
    pub n: u64,
    pub min: f64,
    pub mean: f64,
    pub max: f64,
}

/// Compacts fine buckets older than an hour into minute buckets and deletes everything older
/// than `keep_ms`. Called inside the caller's transaction.
pub fn compact(conn: &Connection, now_ms: i64, keep_ms: i64) -> rusqlite::Result<()> {
    let cutoff = (now_ms - FINE_FOR_MS).div_euclid(COARSE_MS) * COARSE_MS;
    conn.execute(
        "INSERT INTO history (device, quantity, span_ms, bucket_ms, n, min, max, sum)
         SELECT device, quantity, ?1, (bucket_ms / ?1) * ?1, SUM(n), MIN(min), MAX(max), SUM(sum)
         FROM history WHERE span_ms = ?2 AND bucket_ms < ?3
         GROUP BY device, quantity, (bucket_ms / ?1) * ?1
         ON CONFLICT (device, quantity, span_ms, bucket_ms) DO UPDATE SET
           n = n + excluded.n, min = min(min, excluded.min), max = max(max, excluded.max),
           sum = sum + excluded.sum",
        params![COARSE_MS, FINE_MS, cutoff],
    )?;
    conn.execute(
        "DELETE FROM history WHERE span_ms = ?1 AND bucket_ms < ?2",
        params![FINE_MS, cutoff],
    )?;
    conn.execute(
        "DELETE FROM history WHERE bucket_ms < ?1",
        params![now_ms - keep_ms],
    )?;
    Ok(())
}

impl Store {
    /// A series' history since `since_ms`, oldest first.
    pub fn history(
        &self,
        device: &str,
        quantity: &str,
        since_ms: i64,
    ) -> Result<Vec<HistoryPoint>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT bucket_ms, span_ms, n, min, max, sum FROM history
             WHERE device = ?1 AND quantity = ?2 AND bucket_ms >= ?3 ORDER BY bucket_ms, span_ms",
        )?;
        let rows = stmt.query_map(params![device, quantity, since_ms], |r| {
            let n: i64 = r.get(2)?;
            let sum: f64 = r.get(5)?;
            Ok(HistoryPoint {
                at_ms: r.get(0)?,
                span_ms: r.get(1)?,
                n: n as u64,
                min: r.get(3)?,
                max: r.get(4)?,
                mean: if n > 0 { sum / n as f64 } else { 0.0 },
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Tags, Value};

    fn reading(device: &str, at_ms: i64, v: f64) -> Reading {
        Reading {
            tags: Arc::new(Tags {
                device: device.into(),
                ..Tags::default()
            }),
            measurement: Arc::from("m"),
            quantity: Arc::from("ua"),
            value: Value::Float(v),
            unit: None,
            timestamp_ns: at_ms * 1_000_000,
            quality: Quality::Good,
        }
    }

    fn flush(store: &mut Store, acc: &mut Accumulator, now_ms: i64, compact: Option<i64>) {
        acc.close(now_ms, false);
        let tx = store.conn.transaction().unwrap();
        acc.write(&tx).unwrap();
        if let Some(keep) = compact {
            super::compact(&tx, now_ms, keep).unwrap();
        }
        tx.commit().unwrap();
        acc.committed();
    }

    #[test]
    fn buckets_aggregate_then_compact_to_minutes_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("h.db")).unwrap();
        let mut acc = Accumulator::default();
        let t0 = 1_700_000_000_000 / COARSE_MS * COARSE_MS;
        // Six 10-second buckets of one minute, two readings each; NaN and text are skipped.
        for i in 0..6 {
            let at = t0 + i * FINE_MS;
            acc.add(&[
                reading("d", at, i as f64),
                reading("d", at + 1000, i as f64 + 10.0),
            ]);
        }
        acc.add(&[reading("d", t0 + 2000, f64::NAN)]);
        flush(&mut store, &mut acc, t0 + COARSE_MS + FINE_MS, None);
        let fine = store.history("d", "ua", t0).unwrap();
        assert_eq!(fine.len(), 6);
        assert_eq!(
            (fine[0].n, fine[0].min, fine[0].max, fine[0].mean),
            (2, 0.0, 10.0, 5.0)
        );
        assert!(fine.iter().all(|p| p.span_ms == FINE_MS));

        // Two hours later the minute is one coarse bucket with the same totals.
        flush(
            &mut store,
            &mut acc,
            t0 + 2 * FINE_FOR_MS,
            Some(24 * FINE_FOR_MS),
        );
        let coarse = store.history("d", "ua", t0).unwrap();
        assert_eq!(coarse.len(), 1);
        let c = &coarse[0];
        assert_eq!(
            (c.at_ms, c.span_ms, c.n, c.min, c.max),
            (t0, COARSE_MS, 12, 0.0, 15.0)
        );
        assert!((c.mean - 7.5).abs() < 1e-9);

        // Beyond the retention it is gone.
        flush(
            &mut store,
            &mut acc,
            t0 + 30 * FINE_FOR_MS,
            Some(24 * FINE_FOR_MS),
        );
        assert!(store.history("d", "ua", t0).unwrap().is_empty());
    }
}
