//! The last known state of each output (`[[outputs]]`): what parkguard commanded, what the
//! device confirmed and which alarms hold it, so that a restart neither repeats an action
//! already done nor releases anything. The rows are `linkage`'s; the store owns the schema.

use super::*;

pub(super) const MIGRATION: &str = "CREATE TABLE output_state (
        id TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        updated_ms INTEGER NOT NULL
     );";

impl Store {
    /// Every output's saved state (JSON), by output id.
    pub fn output_states(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT id, state FROM output_state")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn save_output_state(
        &mut self,
        id: &str,
        state: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO output_state (id, state, updated_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (id) DO UPDATE SET state = excluded.state, updated_ms = excluded.updated_ms",
            params![id, state, at_ms],
        )?;
        Ok(())
    }
}
