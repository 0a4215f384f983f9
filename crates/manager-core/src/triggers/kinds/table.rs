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
        self.enabled_where(conn, app, None, parse).await
    }

    /// [`enabled`](Self::enabled), only those whose `collection_glob` column can match
    /// `collection`: the glob is the name itself, or ends in `*` and the name starts with
    /// what comes before it. An index lookup of the name and one of the app's few globs
    /// with a `*` (the indexes of migration 0011), so an app with thousands of triggers on
    /// other collections does not read, nor lock, every one of them on each change.
    pub(super) async fn enabled_in_collection<D>(
        &self,
        conn: &mut PgConnection,
        app: AppId,
        collection: &str,
        parse: impl Fn(Uuid, &PgRow) -> RepoResult<D>,
    ) -> RepoResult<Vec<(Target, D)>> {
        self.enabled_where(conn, app, Some(collection), parse).await
    }

    async fn enabled_where<D>(
        &self,
        conn: &mut PgConnection,
        app: AppId,
        collection: Option<&str>,
        parse: impl Fn(Uuid, &PgRow) -> RepoResult<D>,
    ) -> RepoResult<Vec<(Target, D)>> {
        let columns: Vec<String> = self.columns.iter().map(|c| format!("d.{c}")).collect();
        // The candidates come first, from the details' indexes, and the triggers are looked
        // up by id: written as a filter on the app's triggers instead, the planner may walk
        // all of them (it did, with statistics older than a bulk of new triggers).
        let (candidates, from) = if collection.is_some() {
            (
                format!(
                    "WITH candidates AS MATERIALIZED (\
                       SELECT trigger_id FROM {table} WHERE collection_glob = $2 \
                       UNION \
                       SELECT trigger_id FROM {table} \
                       WHERE collection_glob LIKE '%*' \
                         AND starts_with($2, left(collection_glob, -1))) ",
                    table = self.name
                ),
                "candidates c JOIN triggers t ON t.id = c.trigger_id",
            )
        } else {
            (String::new(), "triggers t")
        };
        let sql = format!(
            "{candidates}SELECT t.id, t.script_id, {} \
             FROM {from} JOIN {} d ON d.trigger_id = t.id \
             WHERE t.app_id = $1 AND t.kind = '{}' AND t.enabled \
             ORDER BY t.created_at, t.id \
             FOR KEY SHARE OF t",
            columns.join(", "),
            self.name,
            self.kind.as_str()
        );
        let mut query = sqlx::query(&sql).bind(app.as_uuid());
        if let Some(collection) = collection {
            query = query.bind(collection);
        }
        let rows = query.fetch_all(conn).await.map_err(db_error)?;
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
