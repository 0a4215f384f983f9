//! What every kind's `<kind>_trigger_details` table shares: one row per trigger, keyed by
//! `trigger_id`, read back for some triggers (`load`) or joined to the app's enabled
//! triggers of the kind (`enabled`). Each kind names its own columns and parses them.

use picloud_shared::{AppId, ScriptId, TriggerId, TriggerKind};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::Target;
use crate::db::db_error;
use crate::repository::RepoResult;

/// A kind's details table. Its names are formatted into SQL, so they are always constants
/// of the kind's module, never input.
#[derive(Debug, Clone, Copy)]
pub(super) struct DetailsTable {
    /// The kind whose details it holds.
    pub kind: TriggerKind,
    /// The table, e.g. `kv_trigger_details`.
    pub name: &'static str,
    /// The kind's own columns, beside `trigger_id`.
    pub columns: &'static [&'static str],
}

impl DetailsTable {
    /// The details of the triggers `ids`, in any order: each row's trigger id and the row,
    /// whose columns `parse` reads by name.
    pub(super) async fn load<D>(
        &self,
        conn: &mut PgConnection,
        ids: &[Uuid],
        parse: impl Fn(Uuid, &PgRow) -> RepoResult<D>,
    ) -> RepoResult<Vec<(Uuid, D)>> {
        let sql = format!(
            "SELECT trigger_id, {} FROM {} WHERE trigger_id = ANY($1)",
            self.columns.join(", "),
            self.name
        );
        let rows = sqlx::query(&sql)
            .bind(ids)
            .fetch_all(conn)
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                let id = column(row, "trigger_id")?;
                Ok((id, parse(id, row)?))
            })
            .collect()
    }

    /// The enabled triggers of the kind in `app`, oldest first, each with its row (read by
    /// `parse`), each locked against deletion (`FOR KEY SHARE`) until the caller's
    /// transaction ends.
    pub(super) async fn enabled<D>(
        &self,
        conn: &mut PgConnection,
        app: AppId,
        parse: impl Fn(Uuid, &PgRow) -> RepoResult<D>,
    ) -> RepoResult<Vec<(Target, D)>> {
        let columns: Vec<String> = self.columns.iter().map(|c| format!("d.{c}")).collect();
        let sql = format!(
            "SELECT t.id, t.script_id, {} \
             FROM triggers t JOIN {} d ON d.trigger_id = t.id \
             WHERE t.app_id = $1 AND t.kind = '{}' AND t.enabled \
             ORDER BY t.created_at, t.id \
             FOR KEY SHARE OF t",
            columns.join(", "),
            self.name,
            self.kind.as_str()
        );
        let rows = sqlx::query(&sql)
            .bind(app.as_uuid())
            .fetch_all(conn)
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                let id = column(row, "id")?;
                let target = Target {
                    trigger_id: TriggerId::from_uuid(id),
                    script_id: ScriptId::from_uuid(column(row, "script_id")?),
                };
                Ok((target, parse(id, row)?))
            })
            .collect()
    }
}

/// The value of `row`'s column `name`.
pub(super) fn column<'r, T>(row: &'r PgRow, name: &str) -> RepoResult<T>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(name).map_err(db_error)
}
