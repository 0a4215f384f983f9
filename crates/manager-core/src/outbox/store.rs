//! [`OutboxStore`] over PostgreSQL: claims with `FOR UPDATE SKIP LOCKED` under a lease,
//! and the four ways a claim is settled.
//!
//! Every statement that settles a claim matches the row on `(id, claimed_by, attempts)`:
//! the claim it was given. A dispatcher whose lease ran out while its run was still going
//! therefore cannot retry, defer or give up a row another dispatcher has claimed since.
//! Completion is the one exception: a delivered event is delivered, whoever holds it now.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use picloud_shared::{
    AppId, AppRole, Credential, EventSubject, OutboxError, OutboxItem, OutboxResult, OutboxStore,
    Principal, Scope, ScriptId, ServiceError, ServiceEvent, TriggerId, TriggerKind, UserId,
    Username,
};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::db::{corrupt_row, db_error, storable_text};
use crate::dead_letters::insert_dead_letter;
use crate::error_chain;
use crate::outbox::{OutboxEmitter, begin};
use crate::{dead_letters::NewDeadLetter, repository::RepoError};

/// The channel dispatchers LISTEN on; writers of due rows NOTIFY it.
pub const OUTBOX_CHANNEL: &str = "picloud_outbox";

/// The outbox table as a dispatcher claims and settles it.
#[derive(Debug, Clone)]
pub struct PgOutboxStore {
    pool: PgPool,
    emitter: OutboxEmitter,
}

impl PgOutboxStore {
    /// A store over `pool`, handing dead letters to `dead_letter` triggers through
    /// `emitter`, whose signal also tells other nodes of rows handed back.
    pub fn new(pool: PgPool, emitter: OutboxEmitter) -> Self {
        Self { pool, emitter }
    }
}

impl PgOutboxStore {
    /// Moves a claimed row this binary cannot run into the dead letters, in one statement.
    /// It is not handed to dead-letter triggers: the event it would carry is the very thing
    /// that could not be read.
    async fn dead_letter_undecodable(
        &self,
        (id, claimed_by, attempts): (Uuid, String, i32),
        error: &str,
    ) -> OutboxResult<()> {
        sqlx::query(
            "WITH gone AS (
                 DELETE FROM outbox WHERE id = $1 AND claimed_by = $2 AND attempts = $3
                 RETURNING app_id, trigger_id, script_id, event, depth, attempts
             )
             INSERT INTO dead_letters (id, app_id, trigger_id, trigger_kind, script_id, event,
                                       depth, attempts, last_error)
             SELECT $4, g.app_id, g.trigger_id, t.kind, g.script_id, g.event, g.depth,
                    g.attempts, $5
             FROM gone g JOIN triggers t ON t.id = g.trigger_id",
        )
        .bind(id)
        .bind(claimed_by)
        .bind(attempts)
        .bind(picloud_shared::DeadLetterId::new().as_uuid())
        .bind(&*storable_text(&format!(
            "the outbox row could not be read: {error}"
        )))
        .execute(&self.pool)
        .await
        .map_err(sql_error)?;
        Ok(())
    }
}

fn service_failure(err: ServiceError) -> OutboxError {
    match err {
        ServiceError::Unavailable(why) => OutboxError::Unavailable(why),
        other => OutboxError::Internal(other.to_string()),
    }
}

fn outbox_error(err: RepoError) -> OutboxError {
    let chain = error_chain(&err);
    match err {
        RepoError::Unavailable(_) => OutboxError::Unavailable(chain),
        _ => OutboxError::Internal(chain),
    }
}

fn sql_error(err: sqlx::Error) -> OutboxError {
    outbox_error(db_error(err))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn to_i32(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// A claimed row joined with its trigger's retry policy and registering user.
#[derive(sqlx::FromRow)]
struct ClaimedRow {
    id: Uuid,
    app_id: Uuid,
    trigger_id: Uuid,
    kind: String,
    script_id: Uuid,
    event: Value,
    depth: i32,
    attempts: i32,
    max_attempts: i32,
    backoff_base_ms: i64,
    backoff_max_ms: i64,
    dead_letter_id: Option<Uuid>,
    claimed_by: String,
    user_id: Uuid,
    username: String,
    instance_admin: bool,
    role: Option<String>,
}

impl TryFrom<ClaimedRow> for OutboxItem {
    type Error = RepoError;

    fn try_from(row: ClaimedRow) -> Result<Self, Self::Error> {
        let bad = |column: &str, value: &str| {
            corrupt_row(format!(
                "outbox row {} has a stored {column} {value:?} that is not valid",
                row.id
            ))
        };
        let trigger_kind = TriggerKind::parse(&row.kind).ok_or_else(|| bad("kind", &row.kind))?;
        let username =
            Username::parse(&row.username).map_err(|_| bad("username", &row.username))?;
        let app_id = AppId::from_uuid(row.app_id);
        let trigger_id = TriggerId::from_uuid(row.trigger_id);
        let roles: HashMap<AppId, AppRole> = match &row.role {
            Some(role) => HashMap::from([(app_id, role.parse().map_err(|_| bad("role", role))?)]),
            // No longer a member: every service call of the run is refused as such.
            None => HashMap::new(),
        };
        // The run acts as the registering user through the trigger itself: all seven
        // scopes (as a login session would carry), limited to the trigger's app, with the
        // user's roles as they are now.
        let run_as = Principal {
            user_id: UserId::from_uuid(row.user_id),
            username,
            instance_admin: row.instance_admin,
            roles,
            credential: Credential::Trigger { trigger_id },
            scopes: Scope::ALL.into_iter().collect::<BTreeSet<_>>(),
            app_restriction: Some(app_id),
            token_name: None,
        };
        let count = |n: i32| u32::try_from(n).unwrap_or(0);
        let delay = |ms: i64| Duration::from_millis(u64::try_from(ms).unwrap_or(0));
        Ok(Self {
            id: row.id,
            app_id,
            trigger_id,
            trigger_kind,
            script_id: ScriptId::from_uuid(row.script_id),
            event: row.event,
            depth: count(row.depth),
            attempts: count(row.attempts),
            max_attempts: count(row.max_attempts),
            base_delay: delay(row.backoff_base_ms),
            max_delay: delay(row.backoff_max_ms),
            run_as: Some(run_as),
            dead_letter_id: row.dead_letter_id,
            claimed_by: row.claimed_by,
        })
    }
}

/// One statement: lock up to `$2` due, unheld rows (skipping rows other claimers hold
/// locked right now), lease them to `$1` for `$3` milliseconds counting an attempt, and
/// return them with what running them needs.
///
/// Fair between apps: the apps with claimable rows are found with a skip scan over
/// `outbox (app_id, due_at)` (one index probe per app, whatever the backlog), and each
/// gets an equal share of the claim, its oldest rows first; so an app that floods the
/// outbox takes its share and no more while another app's triggers still run.
const CLAIM: &str = "
WITH RECURSIVE apps(app_id) AS (
    (SELECT app_id FROM outbox ORDER BY app_id LIMIT 1)
    UNION ALL
    SELECT (SELECT o.app_id FROM outbox o WHERE o.app_id > apps.app_id
            ORDER BY o.app_id LIMIT 1)
    FROM apps WHERE apps.app_id IS NOT NULL
),
due_apps AS (
    SELECT a.app_id FROM apps a
    WHERE a.app_id IS NOT NULL AND EXISTS (
        SELECT 1 FROM outbox o
        WHERE o.app_id = a.app_id AND o.due_at <= now()
          AND (o.claimed_until IS NULL OR o.claimed_until < now()))
),
share AS (
    SELECT greatest(1, ceil($2::float8 / greatest(count(*), 1)))::int8 AS per_app
    FROM due_apps
),
picked AS (
    SELECT p.id FROM due_apps a CROSS JOIN LATERAL (
        SELECT id FROM outbox
        WHERE app_id = a.app_id AND due_at <= now()
          AND (claimed_until IS NULL OR claimed_until < now())
        ORDER BY due_at
        LIMIT (SELECT per_app FROM share)
        FOR UPDATE SKIP LOCKED
    ) p
    LIMIT $2
),
claimed AS (
    UPDATE outbox o
    SET claimed_until = now() + $3::float8 * interval '1 millisecond',
        claimed_by = $1,
        attempts = o.attempts + 1
    WHERE o.id IN (SELECT id FROM picked)
    RETURNING o.id, o.app_id, o.trigger_id, o.script_id, o.event, o.depth, o.attempts,
              o.dead_letter_id, o.claimed_by, o.due_at
)
SELECT c.id, c.app_id, c.trigger_id, t.kind, c.script_id, c.event, c.depth, c.attempts,
       t.max_attempts, t.backoff_base_ms, t.backoff_max_ms, c.dead_letter_id, c.claimed_by,
       u.id AS user_id, u.username, u.instance_admin, m.role
FROM claimed c
JOIN triggers t ON t.id = c.trigger_id
JOIN users u ON u.id = t.registered_by_principal
LEFT JOIN app_members m ON m.app_id = c.app_id AND m.user_id = u.id
ORDER BY c.due_at";

/// When the earliest row becomes claimable: `min(greatest(due_at, coalesce(claimed_until,
/// due_at)))` over the whole outbox, minus `now()`, in seconds; NULL for an empty outbox.
///
/// Without reading the whole outbox, which may hold a large backlog of rows due later.
/// A row never becomes claimable before its `due_at`, so once the earliest unclaimed row
/// (`first_free`, claimable at its `due_at`) is found, only the rows due before it can
/// become claimable sooner, and every one of them is held (`held`). Both are walks of
/// `outbox_due_idx` from its start, as long as the held rows before the first free one:
/// a few per dispatcher. The bound of 1,000 held rows is a literal, not a parameter, so
/// the plan is an index walk whatever the statistics say; past it, when `held` may not
/// have them all, the whole outbox is read as before (the `ELSE`, evaluated only then).
/// No index on the claim's columns is needed, so a claim stays a HOT update.
const NEXT_DUE: &str = "
WITH first_free AS MATERIALIZED (
    SELECT due_at FROM outbox WHERE claimed_until IS NULL ORDER BY due_at LIMIT 1
),
held AS MATERIALIZED (
    SELECT greatest(due_at, coalesce(claimed_until, due_at)) AS free_at FROM outbox
    WHERE due_at < coalesce((SELECT due_at FROM first_free), 'infinity')
    ORDER BY due_at
    LIMIT 1000
)
SELECT EXTRACT(EPOCH FROM CASE
           WHEN (SELECT count(*) FROM held) < 1000
               THEN least((SELECT due_at FROM first_free), (SELECT min(free_at) FROM held))
           ELSE (SELECT min(greatest(due_at, coalesce(claimed_until, due_at))) FROM outbox)
       END - now())::float8";

/// Releases `item`'s claim and makes the row due after `delay`, counting the attempt or
/// not.
async fn reschedule(
    store: &PgOutboxStore,
    item: &OutboxItem,
    delay: Duration,
    error: &str,
    count_attempt: bool,
) -> OutboxResult<()> {
    let error = storable_text(error);
    let updated = sqlx::query(
        "UPDATE outbox
         SET claimed_until = NULL, claimed_by = NULL,
             due_at = now() + $4::float8 * interval '1 millisecond',
             last_error = $5,
             attempts = CASE WHEN $6 THEN attempts ELSE greatest(attempts - 1, 0) END
         WHERE id = $1 AND claimed_by = $2 AND attempts = $3",
    )
    .bind(item.id)
    .bind(&item.claimed_by)
    .bind(to_i32(item.attempts))
    .bind(millis(delay))
    .bind(&*error)
    .bind(count_attempt)
    .execute(&store.pool)
    .await
    .map_err(sql_error)?;
    if updated.rows_affected() > 0 {
        // Other dispatchers may be asleep until a later time than this row's new one.
        store.emitter.signal().tell_other_nodes();
    }
    Ok(())
}

#[async_trait]
impl OutboxStore for PgOutboxStore {
    #[tracing::instrument(skip(self))]
    async fn claim_due(
        &self,
        worker: &str,
        limit: u32,
        lease: Duration,
    ) -> OutboxResult<Vec<OutboxItem>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows: Vec<ClaimedRow> = sqlx::query_as(CLAIM)
            .bind(worker)
            .bind(i64::from(limit))
            .bind(millis(lease))
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error)?;
        // A row the domain types refuse must not hold up the rest of its batch, nor come
        // back after every lease: it becomes a dead letter once, and the others run.
        let mut items = Vec::with_capacity(rows.len());
        for row in rows {
            let claim = (row.id, row.claimed_by.clone(), row.attempts);
            match OutboxItem::try_from(row) {
                Ok(item) => items.push(item),
                Err(err) => {
                    let error = error_chain(&err);
                    tracing::error!(
                        outbox_id = %claim.0,
                        error = %error,
                        "claimed an outbox row that cannot be run; recording a dead letter"
                    );
                    self.dead_letter_undecodable(claim, &error).await?;
                }
            }
        }
        Ok(items)
    }

    #[tracing::instrument(skip_all, fields(rows = items.len()))]
    async fn complete(&self, items: &[OutboxItem]) -> OutboxResult<()> {
        if items.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = items.iter().map(|item| item.id).collect();
        if !items.iter().any(|item| item.dead_letter_id.is_some()) {
            // The common case needs no transaction: one statement is one.
            sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
                .bind(&ids)
                .execute(&self.pool)
                .await
                .map_err(sql_error)?;
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(sql_error)?;
        let deleted: Vec<Uuid> =
            sqlx::query_scalar("DELETE FROM outbox WHERE id = ANY($1) RETURNING id")
                .bind(&ids)
                .fetch_all(&mut *tx)
                .await
                .map_err(sql_error)?;
        // Only a row this call deleted resolves its dead letter: one completed meanwhile
        // by another dispatcher has resolved it already.
        let handled: Vec<Uuid> = items
            .iter()
            .filter(|item| deleted.contains(&item.id))
            .filter_map(|item| item.dead_letter_id)
            .collect();
        // One handler that succeeded outweighs another that failed.
        resolve(&mut tx, &handled, "handled_by_script", &["handler_failed"]).await?;
        tx.commit().await.map_err(sql_error)
    }

    #[tracing::instrument(skip_all, fields(outbox_id = %item.id))]
    async fn retry(&self, item: &OutboxItem, delay: Duration, error: &str) -> OutboxResult<()> {
        reschedule(self, item, delay, error, true).await
    }

    #[tracing::instrument(skip_all, fields(outbox_id = %item.id))]
    async fn defer(&self, item: &OutboxItem, delay: Duration, reason: &str) -> OutboxResult<()> {
        reschedule(self, item, delay, reason, false).await
    }

    #[tracing::instrument(skip_all, fields(outbox_id = %item.id))]
    async fn give_up(&self, item: &OutboxItem, error: &str) -> OutboxResult<()> {
        let error = storable_text(error);
        let mut change = begin(&self.pool, &self.emitter)
            .await
            .map_err(service_failure)?;
        let deleted =
            sqlx::query("DELETE FROM outbox WHERE id = $1 AND claimed_by = $2 AND attempts = $3")
                .bind(item.id)
                .bind(&item.claimed_by)
                .bind(to_i32(item.attempts))
                .execute(&mut **change.tx())
                .await
                .map_err(sql_error)?;
        if deleted.rows_affected() == 0 {
            // Another dispatcher holds the row now; its claim decides.
            return Ok(());
        }
        match item.dead_letter_id {
            Some(dead_letter) => {
                resolve(change.tx(), &[dead_letter], "handler_failed", &[]).await?;
            }
            None => {
                let dead_letter = insert_dead_letter(
                    change.tx(),
                    &NewDeadLetter {
                        app_id: item.app_id,
                        trigger_id: Some(item.trigger_id),
                        trigger_kind: item.trigger_kind,
                        script_id: Some(item.script_id),
                        event: item.event.clone(),
                        depth: item.depth,
                        attempts: item.attempts,
                        last_error: error.clone().into_owned(),
                    },
                )
                .await
                .map_err(outbox_error)?;
                // Handed to the app's dead-letter triggers like any event: a handler's run
                // is caused by the failed run, one level deeper.
                let event = ServiceEvent {
                    app_id: item.app_id,
                    subject: EventSubject::DeadLetter {
                        dead_letter_id: dead_letter.id,
                        source_kind: item.trigger_kind,
                        trigger_id: Some(item.trigger_id),
                        script_id: Some(item.script_id),
                        event: item.event.clone(),
                        attempts: item.attempts,
                        last_error: error.clone().into_owned(),
                    },
                    depth: item.depth.saturating_add(1),
                    causation_id: None,
                };
                change.emit(&event).await.map_err(service_failure)?;
            }
        }
        change.commit().await.map_err(service_failure)
    }

    #[tracing::instrument(skip(self))]
    async fn release(&self, worker: &str) -> OutboxResult<u64> {
        let released = sqlx::query(
            "UPDATE outbox
             SET claimed_until = NULL, claimed_by = NULL, attempts = greatest(attempts - 1, 0)
             WHERE claimed_by = $1",
        )
        .bind(worker)
        .execute(&self.pool)
        .await
        .map_err(sql_error)?
        .rows_affected();
        if released > 0 {
            self.emitter.signal().tell_other_nodes();
        }
        Ok(released)
    }

    async fn next_due_in(&self) -> OutboxResult<Option<Duration>> {
        // A held row becomes claimable when its lease ends, a free one when it is due; the
        // difference is taken on the database's clock, the one claims are judged by.
        // NULL (no rows) is an empty outbox; a negative wait is a row due already.
        let wait: Option<f64> = sqlx::query_scalar(NEXT_DUE)
            .fetch_one(&self.pool)
            .await
            .map_err(sql_error)?;
        Ok(wait.map(|secs| Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(Duration::ZERO)))
    }
}

/// Resolves the dead letters that are unresolved or resolved as one of `overridable`; one
/// resolved otherwise meanwhile (replayed, ignored) keeps its resolution.
async fn resolve(
    conn: &mut PgConnection,
    dead_letters: &[Uuid],
    resolution: &str,
    overridable: &[&str],
) -> OutboxResult<()> {
    if dead_letters.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE dead_letters SET resolution = $2, resolved_at = now()
         WHERE id = ANY($1) AND (resolution IS NULL OR resolution = ANY($3))",
    )
    .bind(dead_letters)
    .bind(resolution)
    .bind(overridable)
    .execute(conn)
    .await
    .map_err(sql_error)
    .map(|_| ())
}
