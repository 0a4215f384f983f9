//! What happens to queued deliveries when what they need is deleted: a trigger, its
//! script, or the user who registered it. The foreign keys would take the outbox rows with
//! them; instead they become dead letters in the deleting transaction, so an event nobody
//! will deliver any more is still there for someone to see.
//!
//! Deleting an app is the exception: its dead letters go with it, as everything of it does.

use sqlx::PgConnection;

use crate::db::db_error;
use crate::repository::RepoResult;

/// Which triggers are about to be deleted.
#[derive(Debug, Clone, Copy)]
pub(crate) enum DoomedTriggers {
    /// One trigger.
    Trigger(uuid::Uuid),
    /// The triggers that run this script.
    OfScript(uuid::Uuid),
    /// The triggers this user registered.
    RegisteredBy(uuid::Uuid),
}

impl DoomedTriggers {
    fn condition(self) -> (&'static str, uuid::Uuid, &'static str) {
        match self {
            Self::Trigger(id) => ("t.id = $1", id, "its trigger was deleted"),
            Self::OfScript(id) => ("t.script_id = $1", id, "its trigger's script was deleted"),
            Self::RegisteredBy(id) => (
                "t.registered_by_principal = $1",
                id,
                "the user who registered its trigger was deleted",
            ),
        }
    }
}

/// Turns the queued deliveries of `doomed` into dead letters, on `conn` (the deleting
/// transaction), and says how many. A dead-letter handler's own delivery is simply
/// dropped: the dead letter it was handling stays, unresolved.
pub(crate) async fn dead_letter_queued(
    conn: &mut PgConnection,
    doomed: DoomedTriggers,
) -> RepoResult<u64> {
    let (condition, id, reason) = doomed.condition();
    let sql = format!(
        "WITH gone AS (
             DELETE FROM outbox o USING triggers t
             WHERE o.trigger_id = t.id AND o.dead_letter_id IS NULL AND {condition}
             RETURNING o.app_id, o.trigger_id, t.kind, o.script_id, o.event, o.depth,
                       o.attempts, o.last_error
         )
         INSERT INTO dead_letters (id, app_id, trigger_id, trigger_kind, script_id, event,
                                   depth, attempts, last_error)
         SELECT gen_random_uuid(), app_id, trigger_id, kind, script_id, event, depth, attempts,
                'not delivered: ' || $2 || coalesce(' (last error: ' || last_error || ')', '')
         FROM gone"
    );
    let done = sqlx::query(&sql)
        .bind(id)
        .bind(reason)
        .execute(conn)
        .await
        .map_err(db_error)?;
    if done.rows_affected() > 0 {
        tracing::info!(
            dead_letters = done.rows_affected(),
            reason,
            "queued deliveries turned into dead letters"
        );
    }
    Ok(done.rows_affected())
}
