//! The outbox's claim side against PostgreSQL: the contract every `OutboxStore` meets
//! (`picloud_testkit::outbox::contract`), then what is PostgreSQL's own: claims under a
//! lease with `SKIP LOCKED`, the columns every settlement writes, dead letters and their
//! fan-out, and the LISTEN/NOTIFY waker.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions fail loudly on the first surprise too"
)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use picloud_manager_core::outbox::{OutboxEmitter, PgOutboxStore};
use picloud_manager_core::{DEFAULT_APP_ID, OutboxSignal, PgOutboxWaker};
use picloud_shared::{
    AccessDenied, AppId, AppRole, Capability, Credential, OutboxStore, OutboxWaker, Scope,
    TriggerKind,
};
use picloud_testkit::PHC;
use picloud_testkit::outbox::{OutboxFixture, RowState};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

const LEASE: Duration = Duration::from_secs(60);

struct Fixture {
    pool: PgPool,
    store: PgOutboxStore,
    app: Uuid,
    user: Uuid,
    script: Uuid,
    trigger: Uuid,
}

async fn user(pool: &PgPool, name: &str, role: Option<&str>) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO users (id, username, password_hash) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(name)
        .bind(PHC)
        .execute(pool)
        .await
        .unwrap();
    if let Some(role) = role {
        sqlx::query("INSERT INTO app_members (app_id, user_id, role) VALUES ($1, $2, $3)")
            .bind(DEFAULT_APP_ID.as_uuid())
            .bind(id)
            .bind(role)
            .execute(pool)
            .await
            .unwrap();
    }
    id
}

async fn script(pool: &PgPool, name: &str) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO scripts (id, app_id, name, source) VALUES ($1, $2, $3, '()')")
        .bind(id)
        .bind(DEFAULT_APP_ID.as_uuid())
        .bind(name)
        .execute(pool)
        .await
        .unwrap();
    id
}

/// A trigger of `kind` on `script`, registered by `user`: at most 3 attempts, 100 ms base
/// delay, 1 s maximum.
async fn trigger(pool: &PgPool, kind: &str, script: Uuid, user: Uuid) -> Uuid {
    trigger_in(pool, DEFAULT_APP_ID.as_uuid(), kind, script, user).await
}

/// [`trigger`] in `app`. A kind this binary does not know gets no details row.
async fn trigger_in(pool: &PgPool, app: Uuid, kind: &str, script: Uuid, user: Uuid) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO triggers (id, app_id, kind, script_id, registered_by_principal,
                               max_attempts, backoff_base_ms, backoff_max_ms)
         VALUES ($1, $2, $3, $4, $5, 3, 100, 1000)",
    )
    .bind(id)
    .bind(app)
    .bind(kind)
    .bind(script)
    .bind(user)
    .execute(pool)
    .await
    .unwrap();
    let details = match kind {
        "kv" => {
            "INSERT INTO kv_trigger_details (trigger_id, collection_glob, ops)
             VALUES ($1, '*', ARRAY['set', 'delete'])"
        }
        "dead_letter" => {
            "INSERT INTO dead_letter_trigger_details (trigger_id, source_kinds)
             VALUES ($1, ARRAY['kv'])"
        }
        _ => return id,
    };
    sqlx::query(details).bind(id).execute(pool).await.unwrap();
    id
}

impl Fixture {
    async fn new(pool: PgPool) -> Self {
        let user = user(&pool, "ada", Some("developer")).await;
        let script = script(&pool, "on-change").await;
        let trigger = trigger(&pool, "kv", script, user).await;
        Self {
            store: PgOutboxStore::new(
                pool.clone(),
                OutboxEmitter::new(8, OutboxSignal::spawn(pool.clone())),
            ),
            pool,
            app: DEFAULT_APP_ID.as_uuid(),
            user,
            script,
            trigger,
        }
    }

    /// A due outbox row for the fixture's trigger.
    async fn row(&self, event: Value) -> Uuid {
        self.row_for(self.trigger, self.script, event, None).await
    }

    async fn row_for(
        &self,
        trigger: Uuid,
        script: Uuid,
        event: Value,
        dead_letter: Option<Uuid>,
    ) -> Uuid {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO outbox (id, app_id, trigger_id, script_id, event, depth, dead_letter_id)
             VALUES ($1, $2, $3, $4, $5, 2, $6)",
        )
        .bind(id)
        .bind(self.app)
        .bind(trigger)
        .bind(script)
        .bind(event)
        .bind(dead_letter)
        .execute(&self.pool)
        .await
        .unwrap();
        id
    }

    async fn outbox(&self, id: Uuid) -> Option<(i32, Option<String>, Option<String>, bool)> {
        sqlx::query_as(
            "SELECT attempts, claimed_by, last_error, due_at > now() FROM outbox WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .unwrap()
    }

    async fn outbox_rows(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    async fn dead_letters(&self) -> Vec<DeadLetterRow> {
        sqlx::query_as(
            "SELECT id, trigger_id, trigger_kind, script_id, event, depth, attempts, last_error,
                    resolution
             FROM dead_letters ORDER BY failed_at, id",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }
}

/// Rows for the fixture's trigger (3 attempts, no dead-letter triggers); time passes by
/// moving every due time and lease end back, which is what the passing of time looks like
/// to statements that compare them with `now()`.
#[async_trait]
impl OutboxFixture for Fixture {
    fn store(&self) -> &dyn OutboxStore {
        &self.store
    }

    async fn add_row(&self, event: Value, due_in: Duration) -> Uuid {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO outbox (id, app_id, trigger_id, script_id, event, depth, due_at)
             VALUES ($1, $2, $3, $4, $5, 2, now() + $6::float8 * interval '1 millisecond')",
        )
        .bind(id)
        .bind(self.app)
        .bind(self.trigger)
        .bind(self.script)
        .bind(event)
        .bind(due_in.as_secs_f64() * 1000.0)
        .execute(&self.pool)
        .await
        .unwrap();
        id
    }

    async fn row(&self, id: Uuid) -> Option<RowState> {
        let row: Option<(i32, Option<String>)> =
            sqlx::query_as("SELECT attempts, claimed_by FROM outbox WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .unwrap();
        row.map(|(attempts, claimed_by)| RowState {
            attempts: u32::try_from(attempts).unwrap(),
            claimed_by,
        })
    }

    async fn elapse(&self, by: Duration) {
        sqlx::query(
            "UPDATE outbox
             SET due_at = due_at - $1::float8 * interval '1 millisecond',
                 claimed_until = claimed_until - $1::float8 * interval '1 millisecond'",
        )
        .bind(by.as_secs_f64() * 1000.0)
        .execute(&self.pool)
        .await
        .unwrap();
    }
}

picloud_testkit::outbox_store_contract!(
    #[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
    async fn(pool: PgPool) {
        Fixture::new(pool).await
    }
);

#[derive(Debug, sqlx::FromRow)]
struct DeadLetterRow {
    id: Uuid,
    trigger_id: Option<Uuid>,
    trigger_kind: String,
    script_id: Option<Uuid>,
    event: Value,
    depth: i32,
    attempts: i32,
    last_error: String,
    resolution: Option<String>,
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_claim_carries_the_event_the_retry_policy_and_the_registering_user(pool: PgPool) {
    let f = Fixture::new(pool).await;
    let id = f.row(json!({ "kind": "kv", "key": "ada" })).await;

    let items = f.store.claim_due("w1", 10, LEASE).await.unwrap();
    assert_eq!(items.len(), 1);
    let item = &items[0];
    assert_eq!(item.id, id);
    assert_eq!(item.app_id.as_uuid(), f.app);
    assert_eq!(item.trigger_id.as_uuid(), f.trigger);
    assert_eq!(item.trigger_kind, TriggerKind::Kv);
    assert_eq!(item.script_id.as_uuid(), f.script);
    assert_eq!(item.event, json!({ "kind": "kv", "key": "ada" }));
    assert_eq!(item.depth, 2);
    assert_eq!(item.attempts, 1, "the claim counts its attempt, the first");
    assert_eq!(item.max_attempts, 3);
    assert_eq!(item.base_delay, Duration::from_millis(100));
    assert_eq!(item.max_delay, Duration::from_millis(1000));
    assert_eq!(item.dead_letter_id, None);
    assert_eq!(item.claimed_by, "w1");

    let principal = item.run_as.as_ref().unwrap();
    assert_eq!(principal.user_id.as_uuid(), f.user);
    assert_eq!(principal.username.as_str(), "ada");
    assert_eq!(
        principal.credential,
        Credential::Trigger {
            trigger_id: item.trigger_id
        },
        "the run acts through its trigger, not a token"
    );
    assert_eq!(principal.scopes, Scope::ALL.into_iter().collect());
    assert_eq!(principal.app_restriction, Some(DEFAULT_APP_ID));
    assert_eq!(principal.role_in(DEFAULT_APP_ID), Some(AppRole::Developer));
    assert_eq!(
        principal.authorize(&Capability::AppKvWrite(DEFAULT_APP_ID)),
        Ok(())
    );
    assert!(
        principal
            .authorize(&Capability::AppKvRead(AppId::new()))
            .is_err(),
        "limited to the trigger's app"
    );

    // The claim is in the table: the attempt is counted, the row is held.
    assert_eq!(
        f.outbox(id).await,
        Some((1, Some("w1".to_owned()), None, false))
    );
    assert!(
        f.store.claim_due("w2", 10, LEASE).await.unwrap().is_empty(),
        "a held row is not claimed twice"
    );
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_user_who_left_the_app_runs_with_no_role_there(pool: PgPool) {
    let f = Fixture::new(pool).await;
    sqlx::query("DELETE FROM app_members WHERE user_id = $1")
        .bind(f.user)
        .execute(&f.pool)
        .await
        .unwrap();
    f.row(json!({})).await;

    let item = f.store.claim_due("w1", 1, LEASE).await.unwrap().remove(0);
    let principal = item.run_as.unwrap();
    assert_eq!(
        principal.authorize(&Capability::AppKvRead(DEFAULT_APP_ID)),
        Err(AccessDenied::Hidden)
    );
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn two_claimers_never_get_the_same_row(pool: PgPool) {
    let f = Arc::new(Fixture::new(pool).await);
    for n in 0..300 {
        f.row(json!({ "n": n })).await;
    }
    let claimer = |worker: &'static str| {
        let f = Arc::clone(&f);
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = f.store.claim_due(worker, 7, LEASE).await.unwrap();
                if batch.is_empty() {
                    return mine;
                }
                assert!(batch.iter().all(|item| item.claimed_by == worker));
                mine.extend(batch.into_iter().map(|item| item.id));
            }
        })
    };
    let (a, b, c) = (claimer("a"), claimer("b"), claimer("c"));
    let (a, b, c) = (a.await.unwrap(), b.await.unwrap(), c.await.unwrap());

    let total = a.len() + b.len() + c.len();
    let distinct: HashSet<Uuid> = a.iter().chain(&b).chain(&c).copied().collect();
    assert_eq!(total, 300, "every row was claimed");
    assert_eq!(distinct.len(), 300, "no row was claimed twice");
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn an_expired_lease_makes_the_row_claimable_again(pool: PgPool) {
    let f = Fixture::new(pool).await;
    let id = f.row(json!({})).await;

    // A claimer that dies right after claiming.
    let first = f
        .store
        .claim_due("crashed", 1, Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert!(f.store.claim_due("w2", 1, LEASE).await.unwrap().is_empty());
    let wait = f.store.next_due_in().await.unwrap().unwrap();
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_millis(200),
        "the row comes back when the lease ends: {wait:?}"
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = f.store.claim_due("w2", 1, LEASE).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].id, id);
    assert_eq!(
        second[0].attempts, 2,
        "the crashed attempt counts, so a row that kills its claimer ends"
    );

    // The dead claimer's late settlement changes nothing: the new claim decides.
    f.store
        .retry(&first[0], Duration::from_secs(3600), "late")
        .await
        .unwrap();
    f.store.give_up(&first[0], "late").await.unwrap();
    assert_eq!(
        f.outbox(id).await,
        Some((2, Some("w2".to_owned()), None, false))
    );
    assert!(f.dead_letters().await.is_empty());
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn release_hands_a_workers_claims_back_without_counting_them(pool: PgPool) {
    let f = Fixture::new(pool).await;
    let held = f.row(json!({ "n": 1 })).await;
    let other = f.row(json!({ "n": 2 })).await;
    assert_eq!(
        f.store.claim_due("leaving", 1, LEASE).await.unwrap()[0].id,
        held
    );
    assert_eq!(
        f.store.claim_due("staying", 1, LEASE).await.unwrap()[0].id,
        other
    );

    assert_eq!(f.store.release("leaving").await.unwrap(), 1);
    assert_eq!(f.outbox(held).await, Some((0, None, None, false)));
    assert_eq!(
        f.outbox(other).await,
        Some((1, Some("staying".to_owned()), None, false)),
        "another worker's claim stays"
    );
    let again = f.store.claim_due("w3", 5, LEASE).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, held);
    assert_eq!(again[0].attempts, 1, "the released claim was not counted");
    assert_eq!(f.store.release("nobody").await.unwrap(), 0);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn retry_reschedules_and_defer_does_not_spend_the_attempt(pool: PgPool) {
    let f = Fixture::new(pool).await;
    let id = f.row(json!({})).await;

    let item = f.store.claim_due("w", 1, LEASE).await.unwrap().remove(0);
    f.store
        .retry(&item, Duration::from_secs(3600), "boom")
        .await
        .unwrap();
    assert_eq!(
        f.outbox(id).await,
        Some((1, None, Some("boom".to_owned()), true))
    );
    assert!(f.store.claim_due("w", 1, LEASE).await.unwrap().is_empty());
    let wait = f.store.next_due_in().await.unwrap().unwrap();
    assert!(
        wait > Duration::from_secs(3590) && wait <= Duration::from_secs(3600),
        "{wait:?}"
    );

    sqlx::query("UPDATE outbox SET due_at = now()")
        .execute(&f.pool)
        .await
        .unwrap();
    let item = f.store.claim_due("w", 1, LEASE).await.unwrap().remove(0);
    assert_eq!(item.attempts, 2);
    f.store
        .defer(&item, Duration::from_millis(50), "no free execution slot")
        .await
        .unwrap();
    assert_eq!(
        f.outbox(id)
            .await
            .map(|(attempts, claimed_by, error, _)| (attempts, claimed_by, error)),
        Some((1, None, Some("no free execution slot".to_owned()))),
        "a deferral spends no attempt"
    );
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn an_error_holding_nul_is_stored_with_a_replacement_character(pool: PgPool) {
    // A script can throw any string; PostgreSQL cannot store NUL. Refusing the settlement
    // would leave the row claimed and retried forever, so the text is repaired instead.
    let f = Fixture::new(pool).await;
    let handler_script = script(&f.pool, "on-dead-letter").await;
    trigger(&f.pool, "dead_letter", handler_script, f.user).await;
    let id = f.row(json!({})).await;

    let item = f.store.claim_due("w", 1, LEASE).await.unwrap().remove(0);
    f.store
        .retry(&item, Duration::ZERO, "bad\0text")
        .await
        .unwrap();
    assert_eq!(
        f.outbox(id).await,
        Some((1, None, Some("bad\u{FFFD}text".to_owned()), false)),
        "due again at once, the attempt counted"
    );

    let item = f.store.claim_due("w", 1, LEASE).await.unwrap().remove(0);
    f.store.give_up(&item, "bad\0again").await.unwrap();
    assert_eq!(f.outbox(id).await, None, "the failed row is gone");
    let dead = f.dead_letters().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].last_error, "bad\u{FFFD}again");
    let delivery = f.store.claim_due("w", 1, LEASE).await.unwrap().remove(0);
    assert_eq!(delivery.event["last_error"], "bad\u{FFFD}again");
}

/// L14: a row this binary cannot read (here, a trigger kind it does not know, as after a
/// newer node added one) becomes a dead letter once instead of coming back every lease.
#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn an_unreadable_claimed_row_becomes_a_dead_letter_once(pool: PgPool) {
    let f = Fixture::new(pool).await;
    sqlx::query("INSERT INTO trigger_kinds (name) VALUES ('from_the_future')")
        .execute(&f.pool)
        .await
        .unwrap();
    let future = trigger(&f.pool, "from_the_future", f.script, f.user).await;
    let unreadable = f.row_for(future, f.script, json!({ "n": 1 }), None).await;
    let readable = f.row(json!({ "n": 2 })).await;

    let claimed = f.store.claim_due("w", 10, LEASE).await.unwrap();
    assert_eq!(
        claimed.iter().map(|item| item.id).collect::<Vec<_>>(),
        [readable],
        "the readable row still runs"
    );
    assert_eq!(f.outbox(unreadable).await, None, "gone from the outbox");
    let dead = f.dead_letters().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].trigger_id, Some(future));
    assert_eq!(dead[0].trigger_kind, "from_the_future");
    assert_eq!(dead[0].event, json!({ "n": 1 }));
    assert_eq!(dead[0].attempts, 1);
    assert!(
        dead[0].last_error.contains("could not be read"),
        "{}",
        dead[0].last_error
    );

    // Nothing comes back after the lease.
    f.elapse(LEASE * 2).await;
    let again = f.store.claim_due("w", 10, LEASE).await.unwrap();
    assert!(again.iter().all(|item| item.id != unreadable));
    assert_eq!(f.dead_letters().await.len(), 1);
}

/// L3: deleting what a queued delivery needs turns it into a dead letter, in the deleting
/// transaction, rather than letting the foreign key drop it silently.
#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn deleting_a_trigger_its_script_or_its_user_dead_letters_the_queued_events(pool: PgPool) {
    use picloud_manager_core::access::{PgUserRepository, UserRepository};
    use picloud_manager_core::scripts::{PgScriptRepository, ScriptRepository};
    use picloud_manager_core::triggers::{PgTriggerRepository, TriggerRepository};
    use picloud_shared::{ScriptId, TriggerId, UserId};

    let f = Fixture::new(pool).await;
    let queued = f.row(json!({ "n": "script" })).await;
    sqlx::query("UPDATE outbox SET last_error = 'boom', attempts = 2 WHERE id = $1")
        .bind(queued)
        .execute(&f.pool)
        .await
        .unwrap();
    PgScriptRepository::new(f.pool.clone())
        .delete(ScriptId::from_uuid(f.script))
        .await
        .unwrap();

    let other_script = script(&f.pool, "other").await;
    let by_trigger = trigger(&f.pool, "kv", other_script, f.user).await;
    f.row_for(by_trigger, other_script, json!({ "n": "trigger" }), None)
        .await;
    PgTriggerRepository::new(f.pool.clone())
        .delete(TriggerId::from_uuid(by_trigger))
        .await
        .unwrap();

    let grace = user(&f.pool, "grace", Some("developer")).await;
    let by_user = trigger(&f.pool, "kv", other_script, grace).await;
    f.row_for(by_user, other_script, json!({ "n": "user" }), None)
        .await;
    PgUserRepository::new(f.pool.clone())
        .delete(UserId::from_uuid(grace))
        .await
        .unwrap();

    assert_eq!(f.outbox_rows().await, 0);
    let dead = f.dead_letters().await;
    let summary: Vec<(Value, i32, &str)> = dead
        .iter()
        .map(|d| (d.event.clone(), d.attempts, d.last_error.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (
                json!({ "n": "script" }),
                2,
                "not delivered: its trigger's script was deleted (last error: boom)"
            ),
            (
                json!({ "n": "trigger" }),
                0,
                "not delivered: its trigger was deleted"
            ),
            (
                json!({ "n": "user" }),
                0,
                "not delivered: the user who registered its trigger was deleted"
            ),
        ]
    );
    assert!(
        dead.iter()
            .all(|d| d.trigger_id.is_none() && d.trigger_kind == "kv"),
        "the trigger is gone, its kind is kept"
    );
}

/// M6: one app's flood does not starve another's triggers: a claim shares itself out
/// between the apps with due rows, however old the flood's rows are.
#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_claim_is_shared_between_apps_with_due_rows(pool: PgPool) {
    let f = Fixture::new(pool).await;
    for n in 0..50 {
        f.row(json!({ "flood": n })).await;
    }
    let quiet = Uuid::now_v7();
    sqlx::query("INSERT INTO apps (id, slug, name) VALUES ($1, 'quiet', 'Quiet')")
        .bind(quiet)
        .execute(&f.pool)
        .await
        .unwrap();
    let quiet_script = Uuid::now_v7();
    sqlx::query("INSERT INTO scripts (id, app_id, name, source) VALUES ($1, $2, 'q', '()')")
        .bind(quiet_script)
        .bind(quiet)
        .execute(&f.pool)
        .await
        .unwrap();
    let quiet_trigger = trigger_in(&f.pool, quiet, "kv", quiet_script, f.user).await;
    for n in 0..2 {
        sqlx::query(
            "INSERT INTO outbox (id, app_id, trigger_id, script_id, event, depth)
             VALUES ($1, $2, $3, $4, $5, 1)",
        )
        .bind(Uuid::now_v7())
        .bind(quiet)
        .bind(quiet_trigger)
        .bind(quiet_script)
        .bind(json!({ "quiet": n }))
        .execute(&f.pool)
        .await
        .unwrap();
    }

    let claimed = f.store.claim_due("w", 10, LEASE).await.unwrap();
    let from_quiet = claimed
        .iter()
        .filter(|item| item.app_id.as_uuid() == quiet)
        .count();
    assert_eq!(from_quiet, 2, "the quiet app's rows are in the first claim");
    assert_eq!(
        claimed.len(),
        7,
        "the flood gets its half: 5 of its 50, and the 2"
    );
    let next = f.store.claim_due("w", 10, LEASE).await.unwrap();
    assert_eq!(
        next.len(),
        10,
        "with only the flood due, it gets the whole claim"
    );
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn complete_removes_the_row(pool: PgPool) {
    let f = Fixture::new(pool).await;
    let id = f.row(json!({})).await;
    let item = f.store.claim_due("w", 1, LEASE).await.unwrap().remove(0);
    f.store.complete(std::slice::from_ref(&item)).await.unwrap();
    assert_eq!(f.outbox(id).await, None);
    assert_eq!(f.store.next_due_in().await.unwrap(), None);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn complete_removes_every_row_it_is_given_and_no_other(pool: PgPool) {
    let f = Fixture::new(pool).await;
    for n in 0..4 {
        f.row(json!({ "n": n })).await;
    }
    let mut items = f.store.claim_due("w", 4, LEASE).await.unwrap();
    assert_eq!(items.len(), 4);
    let kept = items.pop().unwrap();
    f.store.complete(&items).await.unwrap();
    for item in &items {
        assert_eq!(f.outbox(item.id).await, None);
    }
    assert_eq!(f.outbox_rows().await, 1, "only the row left out remains");
    assert!(f.outbox(kept.id).await.is_some());
    f.store.complete(&[]).await.unwrap();
    assert_eq!(f.outbox_rows().await, 1, "an empty call deletes nothing");
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn giving_up_makes_a_dead_letter_and_hands_it_to_dead_letter_triggers(pool: PgPool) {
    let f = Fixture::new(pool).await;
    let handler_script = script(&f.pool, "on-dead-letter").await;
    let handler = trigger(&f.pool, "dead_letter", handler_script, f.user).await;
    let event = json!({ "kind": "kv", "collection": "orders", "key": "o-1" });
    let id = f.row(event.clone()).await;

    let item = f.store.claim_due("w", 1, LEASE).await.unwrap().remove(0);
    f.store.give_up(&item, "boom").await.unwrap();

    assert_eq!(f.outbox(id).await, None, "the failed row is gone");
    let dead = f.dead_letters().await;
    assert_eq!(dead.len(), 1);
    let dead_letter = &dead[0];
    assert_eq!(dead_letter.trigger_id, Some(f.trigger));
    assert_eq!(dead_letter.trigger_kind, "kv");
    assert_eq!(dead_letter.script_id, Some(f.script));
    assert_eq!(dead_letter.event, event);
    assert_eq!(dead_letter.depth, 2);
    assert_eq!(dead_letter.attempts, 1);
    assert_eq!(dead_letter.last_error, "boom");
    assert_eq!(
        dead_letter.resolution, None,
        "unresolved: the badge counts it"
    );

    // The handler's delivery is due at once.
    let delivery = f.store.claim_due("w", 5, LEASE).await.unwrap();
    assert_eq!(delivery.len(), 1);
    let delivery = &delivery[0];
    assert_eq!(delivery.trigger_id.as_uuid(), handler);
    assert_eq!(delivery.trigger_kind, TriggerKind::DeadLetter);
    assert_eq!(delivery.script_id.as_uuid(), handler_script);
    assert_eq!(delivery.dead_letter_id, Some(dead_letter.id));
    assert_eq!(delivery.depth, 3, "the handler runs one level deeper");
    assert_eq!(delivery.event["kind"], "dead_letter");
    assert_eq!(delivery.event["dead_letter_id"], json!(dead_letter.id));
    assert_eq!(delivery.event["event"], event);
    assert_eq!(delivery.event["attempts"], 1);
    assert_eq!(delivery.event["last_error"], "boom");

    // The handler succeeds: the dead letter is resolved.
    f.store
        .complete(std::slice::from_ref(delivery))
        .await
        .unwrap();
    assert_eq!(
        f.dead_letters().await[0].resolution.as_deref(),
        Some("handled_by_script")
    );
    assert_eq!(f.outbox_rows().await, 0);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_dead_letter_handler_past_the_depth_limit_is_refused_too(pool: PgPool) {
    // The failed row is at depth 2, so its dead-letter handler would run at depth 3: past a
    // limit of 2, it is refused like any deep event, not run one level past the limit.
    let f = Fixture::new(pool).await;
    let store = PgOutboxStore::new(
        f.pool.clone(),
        OutboxEmitter::new(2, OutboxSignal::spawn(f.pool.clone())),
    );
    let handler_script = script(&f.pool, "on-dead-letter").await;
    trigger(&f.pool, "dead_letter", handler_script, f.user).await;
    f.row(json!({ "kind": "kv" })).await;

    let item = store.claim_due("w", 1, LEASE).await.unwrap().remove(0);
    assert_eq!(item.depth, 2);
    store.give_up(&item, "boom").await.unwrap();

    assert!(
        store.claim_due("w", 5, LEASE).await.unwrap().is_empty(),
        "no handler delivery past the limit"
    );
    let dead = f.dead_letters().await;
    assert_eq!(dead.len(), 2, "{dead:?}");
    let refused = dead
        .iter()
        .find(|letter| letter.trigger_id.is_none())
        .expect("the refused handler delivery is a dead letter");
    assert_eq!(refused.trigger_kind, "dead_letter");
    assert_eq!(refused.depth, 3);
    assert_eq!(refused.last_error, "trigger depth limit of 2 reached");
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_failed_dead_letter_handler_makes_no_new_dead_letter(pool: PgPool) {
    let f = Fixture::new(pool).await;
    let handler_script = script(&f.pool, "on-dead-letter").await;
    trigger(&f.pool, "dead_letter", handler_script, f.user).await;
    f.row(json!({})).await;
    let item = f.store.claim_due("w", 1, LEASE).await.unwrap().remove(0);
    f.store.give_up(&item, "boom").await.unwrap();

    let delivery = f.store.claim_due("w", 1, LEASE).await.unwrap().remove(0);
    f.store
        .give_up(&delivery, "the handler broke too")
        .await
        .unwrap();

    let dead = f.dead_letters().await;
    assert_eq!(dead.len(), 1, "no dead letter of a dead letter");
    assert_eq!(dead[0].resolution.as_deref(), Some("handler_failed"));
    assert_eq!(dead[0].last_error, "boom");
    assert_eq!(f.outbox_rows().await, 0, "and no further fan-out");
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn giving_up_without_dead_letter_triggers_fans_out_to_nobody(pool: PgPool) {
    let f = Fixture::new(pool).await;
    f.row(json!({})).await;
    let item = f.store.claim_due("w", 1, LEASE).await.unwrap().remove(0);
    f.store.give_up(&item, "boom").await.unwrap();
    assert_eq!(f.dead_letters().await.len(), 1);
    assert_eq!(f.outbox_rows().await, 0);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn next_due_in_reports_the_earliest_claimable_row(pool: PgPool) {
    let f = Fixture::new(pool).await;
    assert_eq!(f.store.next_due_in().await.unwrap(), None, "empty outbox");
    let id = f.row(json!({})).await;
    assert_eq!(f.store.next_due_in().await.unwrap(), Some(Duration::ZERO));
    sqlx::query("UPDATE outbox SET due_at = now() + interval '10 seconds' WHERE id = $1")
        .bind(id)
        .execute(&f.pool)
        .await
        .unwrap();
    let wait = f.store.next_due_in().await.unwrap().unwrap();
    assert!(
        wait > Duration::from_secs(9) && wait <= Duration::from_secs(10),
        "{wait:?}"
    );
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_notification_wakes_the_waker_and_the_deadline_ends_the_wait(pool: PgPool) {
    let waker = PgOutboxWaker::spawn(pool.clone(), &OutboxSignal::spawn(pool.clone()));
    // The first connection counts as a wake-up; once it has come, LISTEN is in place.
    tokio::time::timeout(Duration::from_secs(10), waker.wait_until(None))
        .await
        .unwrap();
    // A wake-up is also kept for a waiter between two waits (spurious returns are
    // allowed); a wait that is already over takes it.
    waker.wait_until(Some(Instant::now())).await;

    let started = Instant::now();
    waker
        .wait_until(Some(Instant::now() + Duration::from_millis(300)))
        .await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
        "with nothing notified it waits until the deadline: {waited:?}"
    );

    let waker = Arc::new(waker);
    let waited = woken_by(&waker, async {
        sqlx::query("SELECT pg_notify('picloud_outbox', '')")
            .execute(&pool)
            .await
            .unwrap();
    })
    .await;
    assert!(
        waited < Duration::from_secs(10),
        "woken by NOTIFY: {waited:?}"
    );

    // A notification sent while nobody waits is kept for the next wait.
    waker.wait_until(Some(Instant::now())).await;
    let started = Instant::now();
    waker
        .wait_until(Some(Instant::now() + Duration::from_millis(200)))
        .await;
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "nothing kept yet"
    );
    sqlx::query("SELECT pg_notify('picloud_outbox', '')")
        .execute(&pool)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    waker
        .wait_until(Some(Instant::now() + Duration::from_secs(60)))
        .await;
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_signal_wakes_its_own_process_at_once_and_other_nodes_by_notify(pool: PgPool) {
    let here = OutboxSignal::spawn(pool.clone());
    let waker = Arc::new(PgOutboxWaker::spawn(pool.clone(), &here));
    tokio::time::timeout(Duration::from_secs(10), waker.wait_until(None))
        .await
        .unwrap();
    waker.wait_until(Some(Instant::now())).await;

    // This process's own rows.
    let waited = woken_by(&waker, async { here.rows_committed() }).await;
    assert!(
        waited < Duration::from_secs(10),
        "woken in memory: {waited:?}"
    );
    // Its own notification, arriving later, may or may not wake it once more (spurious
    // returns are allowed); let it arrive and be taken.
    tokio::time::sleep(Duration::from_millis(300)).await;
    waker.wait_until(Some(Instant::now())).await;

    // Another node's rows: a signal of its own, reaching this one only through NOTIFY.
    let there = OutboxSignal::spawn(pool.clone());
    let waited = woken_by(&waker, async { there.rows_committed() }).await;
    assert!(
        waited < Duration::from_secs(10),
        "woken by NOTIFY: {waited:?}"
    );
}

/// How long a waiter asleep for a minute takes to wake after `wake` (run once the waiter
/// is asleep); fails the test after ten seconds.
async fn woken_by(waker: &Arc<PgOutboxWaker>, wake: impl Future<Output = ()>) -> Duration {
    let asleep = tokio::spawn({
        let waker = Arc::clone(waker);
        async move {
            let started = Instant::now();
            waker
                .wait_until(Some(Instant::now() + Duration::from_secs(60)))
                .await;
            started.elapsed()
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    wake.await;
    tokio::time::timeout(Duration::from_secs(10), asleep)
        .await
        .unwrap_or_else(|_| panic!("still asleep after ten seconds"))
        .unwrap()
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_burst_of_announcements_sends_few_notifications(pool: PgPool) {
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool)
        .await
        .unwrap();
    listener.listen("picloud_outbox").await.unwrap();
    let signal = OutboxSignal::spawn(pool.clone());
    for _ in 0..1000 {
        signal.rows_committed();
    }
    let first = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("the burst was announced")
        .unwrap();
    assert!(!first.payload().is_empty(), "names the announcing process");
    let mut more = 0;
    while let Ok(next) = tokio::time::timeout(Duration::from_millis(500), listener.recv()).await {
        next.unwrap();
        more += 1;
    }
    // One in flight when the burst began, at most one more for everything after it.
    assert!(more <= 1, "{more} further notifications for one burst");
}
