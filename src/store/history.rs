//! Local history of readings for the web UI's charts and for sites with no InfluxDB: numeric
//! readings aggregated per series into 10-second buckets (count, min, max, sum) for the
//! quantities rules watch and 1-minute buckets for the others, the 10-second ones compacted
//! into 1-minute buckets beyond the last hour, and deleted beyond the configured retention or
//! size, oldest first.
//!
//! Shaped for flash: buckets are gathered in memory and written about once a minute, one row
//! per (span, period, device) holding all the device's quantities, keyed time first, so that
//! new rows are appended at the end of the table and old ones deleted from its front, and a
//! write touches few pages instead of one per series.
//!
//! Owns: the `history_chunk` table and the in-memory buckets still open. Knows nothing of where the
//! readings came from.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};
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

impl Bucket {
    fn of(v: f64) -> Bucket {
        Bucket {
            n: 1,
            min: v,
            max: v,
            sum: v,
        }
    }

    fn add(&mut self, v: f64) {
        self.merge(&Bucket::of(v));
    }

    fn merge(&mut self, other: &Bucket) {
        self.n += other.n;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }
}

/// One device's buckets of one period (10 seconds or a minute), by quantity. Quantity names
/// are the decoder's, shared, not copies.
struct Period {
    device: Arc<str>,
    span: i64,
    start: i64,
    buckets: Vec<(Arc<str>, Bucket)>,
}

impl Period {
    fn of(device: Arc<str>, span: i64, start: i64, quantity: &Arc<str>, v: f64) -> Period {
        Period {
            device,
            span,
            start,
            buckets: vec![(Arc::clone(quantity), Bucket::of(v))],
        }
    }

    fn add(&mut self, quantity: &Arc<str>, v: f64) {
        match self
            .buckets
            .iter_mut()
            .find(|(q, _)| Arc::ptr_eq(q, quantity) || **q == **quantity)
        {
            Some((_, b)) => b.add(v),
            None => self.buckets.push((Arc::clone(quantity), Bucket::of(v))),
        }
    }
}

/// Which quantities are charted at 10 seconds: those a rule watches (what an operator looks
/// at when an alarm comes). The others (energy counters, power factor, ...) go straight into
/// 1-minute buckets, a sixth of the rows.
#[derive(Debug, Clone, Default)]
pub struct FineQuantities {
    /// Names, or prefixes ending in `*`, as rules write them; `None`: every quantity.
    patterns: Option<Vec<String>>,
}

impl FineQuantities {
    pub fn all() -> Self {
        FineQuantities { patterns: None }
    }

    pub fn matching(patterns: impl IntoIterator<Item = String>) -> Self {
        FineQuantities {
            patterns: Some(patterns.into_iter().collect()),
        }
    }

    fn includes(&self, quantity: &str) -> bool {
        self.patterns.as_ref().is_none_or(|patterns| {
            patterns.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => quantity.starts_with(prefix),
                None => p == quantity,
            })
        })
    }
}

/// The open periods of each device (a 10-second one and a 1-minute one), and the periods
/// closed since the last write: grouped as the rows they become, so that memory holds each
/// device's name once per period rather than once per quantity.
#[derive(Default)]
pub struct Accumulator {
    /// By span: `[FINE_MS, COARSE_MS]`.
    open: [HashMap<Arc<str>, Period>; 2],
    closed: Vec<Period>,
    /// Buckets in `closed`.
    closed_buckets: usize,
    fine: FineQuantities,
    /// `fine.includes`, remembered per quantity name.
    is_fine: HashMap<Arc<str>, bool>,
}

impl Accumulator {
    pub fn new(fine: FineQuantities) -> Self {
        Accumulator {
            fine,
            ..Accumulator::default()
        }
    }

    fn span_of(&mut self, quantity: &Arc<str>) -> usize {
        let fine = match self.is_fine.get(quantity) {
            Some(&fine) => fine,
            None => {
                let fine = self.fine.includes(quantity);
                self.is_fine.insert(Arc::clone(quantity), fine);
                fine
            }
        };
        usize::from(!fine)
    }

    pub fn add(&mut self, readings: &[Reading]) {
        for r in readings {
            if r.quality != Quality::Good {
                continue;
            }
            let Some(v) = r.value.as_f64().filter(|v| v.is_finite()) else {
                continue;
            };
            let which = self.span_of(&r.quantity);
            let span = [FINE_MS, COARSE_MS][which];
            let start = (r.timestamp_ns / 1_000_000).div_euclid(span) * span;
            let device = r.tags.device.as_str();
            let quantity = &r.quantity;
            match self.open[which].get_mut(device) {
                Some(period) if start == period.start => period.add(quantity, v),
                Some(period) if start < period.start => {
                    // Late: its own closed period, merged into the stored row when written.
                    let late = Period::of(Arc::clone(&period.device), span, start, quantity, v);
                    self.closed_buckets += 1;
                    self.closed.push(late);
                }
                Some(period) => {
                    let mut next = Period::of(Arc::clone(&period.device), span, start, quantity, v);
                    next.buckets.reserve(period.buckets.len());
                    let ended = std::mem::replace(period, next);
                    self.closed_buckets += ended.buckets.len();
                    self.closed.push(ended);
                }
                None => {
                    let name: Arc<str> = Arc::from(device);
                    let period = Period::of(Arc::clone(&name), span, start, quantity, v);
                    self.open[which].insert(name, period);
                }
            }
        }
    }

    /// Moves periods that ended before `now_ms` (or all, at shutdown) to the closed list;
    /// devices silent for a whole period are forgotten until they speak again.
    pub fn close(&mut self, now_ms: i64, all: bool) {
        let closed = &mut self.closed;
        let closed_buckets = &mut self.closed_buckets;
        for open in &mut self.open {
            open.retain(|_, period| {
                if all || period.start + period.span <= now_ms {
                    *closed_buckets += period.buckets.len();
                    closed.push(Period {
                        device: Arc::clone(&period.device),
                        buckets: std::mem::take(&mut period.buckets),
                        ..*period
                    });
                    false
                } else {
                    true
                }
            });
        }
    }

    pub fn has_closed(&self) -> bool {
        !self.closed.is_empty()
    }

    /// Closed buckets waiting for the next write.
    pub fn closed_len(&self) -> usize {
        self.closed_buckets
    }

    /// Writes the closed buckets, one row per (span, period, device) holding all its
    /// quantities, merged with a row already stored for the same period. Called inside the
    /// caller's transaction; the list is emptied only by `committed`.
    pub fn write(&self, conn: &Connection) -> rusqlite::Result<()> {
        // (span, period start, device) -> the row's buckets.
        type RowKey<'a> = (i64, i64, &'a str);
        let mut rows: BTreeMap<RowKey, Vec<(&str, Bucket)>> = BTreeMap::new();
        for period in &self.closed {
            let row = rows
                .entry((period.span, period.start, &*period.device))
                .or_default();
            for (quantity, b) in &period.buckets {
                // A late reading's period may repeat a quantity already in the row.
                match row.iter_mut().find(|(q, _)| *q == &**quantity) {
                    Some((_, into)) => into.merge(b),
                    None => row.push((quantity, *b)),
                }
            }
        }
        for ((span, start, device), quantities) in rows {
            merge_row(conn, span, start, device, quantities)?;
        }
        Ok(())
    }

    pub fn committed(&mut self) {
        self.closed.clear();
        self.closed_buckets = 0;
    }
}

/// A row's buckets: per quantity, `[name length u8][name][n u32][min f64][max f64][sum f64]`,
/// little-endian.
fn encode(quantities: &[(&str, Bucket)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(quantities.len() * 40);
    for (name, b) in quantities {
        let name = &name.as_bytes()[..name.len().min(255)];
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        out.extend_from_slice(&(b.n.min(u64::from(u32::MAX)) as u32).to_le_bytes());
        out.extend_from_slice(&b.min.to_le_bytes());
        out.extend_from_slice(&b.max.to_le_bytes());
        out.extend_from_slice(&b.sum.to_le_bytes());
    }
    out
}

/// The buckets of a row; a damaged tail is ignored.
fn decode(data: &[u8]) -> Vec<(String, Bucket)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(&len) = data.get(at) {
        let name_end = at + 1 + usize::from(len);
        let Some(fields) = data.get(name_end..name_end + 28) else {
            break;
        };
        let name = String::from_utf8_lossy(&data[at + 1..name_end]).into_owned();
        let f64_at = |i: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&fields[4 + 8 * i..12 + 8 * i]);
            f64::from_le_bytes(bytes)
        };
        let mut n = [0u8; 4];
        n.copy_from_slice(&fields[..4]);
        out.push((
            name,
            Bucket {
                n: u64::from(u32::from_le_bytes(n)),
                min: f64_at(0),
                max: f64_at(1),
                sum: f64_at(2),
            },
        ));
        at = name_end + 28;
    }
    out
}

fn merge_into(into: &mut Vec<(String, Bucket)>, name: &str, b: Bucket) {
    match into.iter_mut().find(|(q, _)| q == name) {
        Some((_, existing)) => existing.merge(&b),
        None => into.push((name.to_string(), b)),
    }
}

/// Stores a (span, period, device) row, merged with the one already there.
fn merge_row(
    conn: &Connection,
    span_ms: i64,
    start: i64,
    device: &str,
    quantities: Vec<(&str, Bucket)>,
) -> rusqlite::Result<()> {
    let existing: Option<Vec<u8>> = conn
        .prepare_cached(
            "SELECT data FROM history_chunk WHERE span_ms = ?1 AND bucket_ms = ?2 AND device = ?3",
        )?
        .query_row(params![span_ms, start, device], |r| r.get(0))
        .optional()?;
    let data = match existing {
        None => encode(&quantities),
        Some(data) => {
            let mut merged = decode(&data);
            for (name, b) in quantities {
                merge_into(&mut merged, name, b);
            }
            let borrowed: Vec<(&str, Bucket)> =
                merged.iter().map(|(q, b)| (q.as_str(), *b)).collect();
            encode(&borrowed)
        }
    };
    conn.prepare_cached(
        "INSERT OR REPLACE INTO history_chunk (span_ms, bucket_ms, device, data)
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![span_ms, start, device, data])?;
    Ok(())
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
/// than `keep_ms`. Called inside the caller's transaction. Rows are keyed time first, so the
/// deletes take whole runs of pages from the front and new rows go to the end.
pub fn compact(conn: &Connection, now_ms: i64, retention: Retention) -> rusqlite::Result<()> {
    let keep_ms = retention.keep_ms;
    let cutoff = (now_ms - FINE_FOR_MS).div_euclid(COARSE_MS) * COARSE_MS;
    let mut minutes: BTreeMap<(i64, String), Vec<(String, Bucket)>> = BTreeMap::new();
    {
        let mut stmt = conn.prepare_cached(
            "SELECT bucket_ms, device, data FROM history_chunk WHERE span_ms = ?1 AND bucket_ms < ?2",
        )?;
        let mut rows = stmt.query(params![FINE_MS, cutoff])?;
        while let Some(row) = rows.next()? {
            let bucket: i64 = row.get(0)?;
            let device: String = row.get(1)?;
            let data: Vec<u8> = row.get(2)?;
            let minute = bucket.div_euclid(COARSE_MS) * COARSE_MS;
            let into = minutes.entry((minute, device)).or_default();
            for (name, b) in decode(&data) {
                merge_into(into, &name, b);
            }
        }
    }
    for ((minute, device), quantities) in minutes {
        let borrowed: Vec<(&str, Bucket)> =
            quantities.iter().map(|(q, b)| (q.as_str(), *b)).collect();
        merge_row(conn, COARSE_MS, minute, &device, borrowed)?;
    }
    conn.execute(
        "DELETE FROM history_chunk WHERE span_ms = ?1 AND bucket_ms < ?2",
        params![FINE_MS, cutoff],
    )?;
    let mut keep_from = now_ms - keep_ms;
    if retention.drop_fraction > 0.0 {
        // Rows are spread over time about evenly (denser in the last hour): dropping this
        // fraction of the time kept drops at least that much of the size; the next check
        // trims again if not.
        let oldest: Option<i64> = conn.query_row(
            "SELECT MIN(bucket_ms) FROM history_chunk WHERE span_ms IN (?1, ?2)",
            params![FINE_MS, COARSE_MS],
            |r| r.get(0),
        )?;
        if let Some(oldest) = oldest.filter(|o| *o < now_ms) {
            let oldest = oldest.max(keep_from);
            let cut = oldest + ((now_ms - oldest) as f64 * retention.drop_fraction.min(1.0)) as i64;
            keep_from = keep_from.max(cut);
        }
    }
    for span in [FINE_MS, COARSE_MS] {
        conn.execute(
            "DELETE FROM history_chunk WHERE span_ms = ?1 AND bucket_ms < ?2",
            params![span, keep_from],
        )?;
    }
    Ok(())
}

/// How much history compaction keeps.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Everything older than this is deleted.
    pub keep_ms: i64,
    /// The share of the oldest history (by time) to delete besides, to bring it under its size
    /// cap; 0 when it is under.
    pub drop_fraction: f64,
}

impl Retention {
    /// The share to drop for a history of `bytes` capped at `max_bytes`: down to 90 % of the
    /// cap, so that it is not trimmed again at every check.
    pub fn over_cap(keep_ms: i64, bytes: i64, max_bytes: i64) -> Retention {
        let drop_fraction = if bytes > max_bytes && bytes > 0 {
            (bytes - max_bytes * 9 / 10) as f64 / bytes as f64
        } else {
            0.0
        };
        Retention {
            keep_ms,
            drop_fraction,
        }
    }
}

impl Store {
    /// Bytes the history's pages take in the store. Reads every page of the table: called
    /// every few minutes, outside any write transaction so that no writer waits on it.
    pub fn history_bytes(&self) -> Result<i64, StoreError> {
        Ok(self.conn.query_row(
            "SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name = 'history_chunk'",
            [],
            |r| r.get(0),
        )?)
    }

    /// A series' history since `since_ms`, oldest first.
    pub fn history(
        &self,
        device: &str,
        quantity: &str,
        since_ms: i64,
    ) -> Result<Vec<HistoryPoint>, StoreError> {
        let mut out = Vec::new();
        let mut newest = self
            .conn
            .prepare_cached("SELECT MAX(bucket_ms) FROM history_chunk WHERE span_ms = ?1")?;
        let mut row = self.conn.prepare_cached(
            "SELECT data FROM history_chunk WHERE span_ms = ?1 AND bucket_ms = ?2 AND device = ?3",
        )?;
        for span in [COARSE_MS, FINE_MS] {
            let Some(last): Option<i64> = newest.query_row([span], |r| r.get(0))? else {
                continue;
            };
            // One lookup along the key per period: rows are keyed time first.
            let mut bucket = since_ms.div_euclid(span) * span;
            if bucket < since_ms {
                bucket += span;
            }
            bucket = bucket.max(last - MAX_HISTORY_SPAN_MS / span * span);
            while bucket <= last {
                let data: Option<Vec<u8>> = row
                    .query_row(params![span, bucket, device], |r| r.get(0))
                    .optional()?;
                if let Some(data) = data {
                    if let Some((_, b)) = decode(&data).into_iter().find(|(q, _)| q == quantity) {
                        out.push(HistoryPoint {
                            at_ms: bucket,
                            span_ms: span,
                            n: b.n,
                            min: b.min,
                            max: b.max,
                            mean: if b.n > 0 { b.sum / b.n as f64 } else { 0.0 },
                        });
                    }
                }
                bucket += span;
            }
        }
        out.sort_by_key(|p| (p.at_ms, p.span_ms));
        Ok(out)
    }
}

/// The longest stretch a chart reads: a week.
const MAX_HISTORY_SPAN_MS: i64 = 7 * 24 * 3_600_000;

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

    fn reading_of(device: &str, quantity: &str, at_ms: i64, v: f64) -> Reading {
        Reading {
            quantity: Arc::from(quantity),
            ..reading(device, at_ms, v)
        }
    }

    /// Periods are kept per device; a reading older than its device's open period (a replay)
    /// is merged into that period's row, not lost and not duplicated.
    #[test]
    fn late_readings_merge_into_their_periods_row() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("h.db")).unwrap();
        let mut acc = Accumulator::default();
        let t0 = 1_700_000_000_000 / COARSE_MS * COARSE_MS;
        acc.add(&[
            reading_of("d", "ua", t0, 1.0),
            reading_of("d", "ub", t0, 2.0),
            reading_of("e", "ua", t0, 5.0),
        ]);
        // The next period opens; then two replayed readings of the first arrive.
        acc.add(&[reading_of("d", "ua", t0 + FINE_MS, 3.0)]);
        acc.add(&[reading_of("d", "ua", t0 + 500, 7.0)]);
        acc.add(&[reading_of("d", "ub", t0 + 600, 4.0)]);
        assert_eq!(
            acc.closed_len(),
            4,
            "d's first period (2) and the two late ones"
        );
        flush(&mut store, &mut acc, t0 + 2 * FINE_MS, None);
        assert_eq!(acc.closed_len(), 0);
        let ua = store.history("d", "ua", t0).unwrap();
        assert_eq!(
            ua.iter()
                .map(|p| (p.at_ms, p.n, p.min, p.max))
                .collect::<Vec<_>>(),
            vec![(t0, 2, 1.0, 7.0), (t0 + FINE_MS, 1, 3.0, 3.0)]
        );
        let ub = store.history("d", "ub", t0).unwrap();
        assert_eq!((ub.len(), ub[0].n, ub[0].max), (1, 2, 4.0));
        assert_eq!(store.history("e", "ua", t0).unwrap()[0].n, 1);
        // A replay after the write merges with the stored row.
        acc.add(&[reading_of("d", "ua", t0 + 900, 0.5)]);
        flush(&mut store, &mut acc, t0 + 3 * FINE_MS, None);
        let ua = store.history("d", "ua", t0).unwrap();
        assert_eq!((ua[0].n, ua[0].min), (3, 0.5));
    }

    /// Quantities no rule watches go straight into minute buckets; the size cap drops the
    /// oldest history whatever its hours say, measured by the store's pages.
    #[test]
    fn unwatched_quantities_are_kept_per_minute_and_the_size_cap_drops_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("h.db")).unwrap();
        let mut acc = Accumulator::new(FineQuantities::matching(["u*".to_string()]));
        let t0 = 1_700_000_000_000 / COARSE_MS * COARSE_MS;
        let hours = 6;
        for s in (0..hours * 3600).step_by(10) {
            let at = t0 + s * 1000;
            acc.add(&[
                reading_of("d", "ua", at, 1.0),
                reading_of("d", "ep", at, s as f64),
            ]);
            if s % 600 == 0 {
                flush(&mut store, &mut acc, at, None);
            }
        }
        let end = t0 + hours * 3_600_000;
        flush(&mut store, &mut acc, end, None);
        let ep = store.history("d", "ep", t0).unwrap();
        assert!(ep.iter().all(|p| p.span_ms == COARSE_MS), "{:?}", &ep[..2]);
        assert_eq!((ep.len(), ep[0].n), (hours as usize * 60, 6));
        let ua = store.history("d", "ua", end - 600_000).unwrap();
        assert!(ua.iter().all(|p| p.span_ms == FINE_MS));

        let bytes = store.history_bytes().unwrap();
        assert!(bytes > 100_000, "{bytes} bytes of history pages");
        assert_eq!(Retention::over_cap(0, bytes, bytes).drop_fraction, 0.0);
        // Capped at half its size: down to 90 % of the cap, the oldest first.
        let retention = Retention::over_cap(30 * FINE_FOR_MS, bytes, bytes / 2);
        assert!((retention.drop_fraction - 0.55).abs() < 0.01);
        let tx = store.conn.transaction().unwrap();
        super::compact(&tx, end, retention).unwrap();
        tx.commit().unwrap();
        let ep = store.history("d", "ep", t0).unwrap();
        let kept_from = ep.first().map(|p| p.at_ms).unwrap();
        let dropped = (kept_from - t0) as f64 / (end - t0) as f64;
        assert!(
            (0.54..0.57).contains(&dropped),
            "dropped {dropped} of the time"
        );
        assert_eq!(ep.last().map(|p| p.at_ms), Some(end - COARSE_MS));
    }

    fn flush(store: &mut Store, acc: &mut Accumulator, now_ms: i64, compact: Option<i64>) {
        acc.close(now_ms, false);
        let tx = store.conn.transaction().unwrap();
        acc.write(&tx).unwrap();
        if let Some(keep) = compact {
            let retention = Retention {
                keep_ms: keep,
                drop_fraction: 0.0,
            };
            super::compact(&tx, now_ms, retention).unwrap();
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
