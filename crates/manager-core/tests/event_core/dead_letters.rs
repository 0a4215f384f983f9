//! The `DeadLetterRepository` suite.

use chrono::{TimeDelta, Utc};
use picloud_manager_core::dead_letters::{
    DeadLetter, DeadLetterActionError, DeadLetterCursor, ListDeadLetters, NewDeadLetter, Resolution,
};
use picloud_shared::{AppId, DeadLetterId, KvOp, TriggerId, TriggerKind};
use serde_json::json;

use crate::{Enqueued, Repos, kv_trigger};

/// An app with a script and a KV trigger on it.
struct Setup {
    app: AppId,
    trigger: TriggerId,
    script: picloud_shared::ScriptId,
}

async fn setup(repos: &Repos, slug: &str) -> Setup {
    let app = repos.add_app(slug).await;
    let script = repos.add_script(app, "on-change").await;
    let user = repos.add_user(&format!("{slug}-owner")).await.id;
    let trigger = repos
        .triggers
        .create(kv_trigger(app, &script, user, "*", &[KvOp::Set]))
        .await
        .unwrap();
    Setup {
        app,
        trigger: trigger.id,
        script: script.id,
    }
}

fn failed(setup: &Setup, key: &str) -> NewDeadLetter {
    NewDeadLetter {
        app_id: setup.app,
        trigger_id: Some(setup.trigger),
        trigger_kind: TriggerKind::Kv,
        script_id: Some(setup.script),
        event: json!({ "kind": "kv", "collection": "users", "key": key, "op": "set" }),
        depth: 2,
        attempts: 5,
        last_error: format!("no luck with {key}"),
    }
}

async fn record(repos: &Repos, new: NewDeadLetter) -> DeadLetter {
    repos.dead_letters.record(new).await.unwrap()
}

fn ids(letters: &[DeadLetter]) -> Vec<DeadLetterId> {
    letters.iter().map(|l| l.id).collect()
}

fn list(app: AppId, unresolved_only: bool) -> ListDeadLetters {
    ListDeadLetters {
        app,
        unresolved_only,
        limit: 100,
        before: None,
    }
}

pub async fn a_recorded_dead_letter_reads_back_unresolved(repos: Repos) {
    let setup = setup(&repos, "shop").await;
    let new = failed(&setup, "ada");
    let letter = record(&repos, new.clone()).await;
    assert_eq!(letter.app_id, setup.app);
    assert_eq!(letter.trigger_id, Some(setup.trigger));
    assert_eq!(letter.trigger_kind, TriggerKind::Kv);
    assert_eq!(letter.script_id, Some(setup.script));
    assert_eq!(letter.event, new.event);
    assert_eq!(letter.depth, 2);
    assert_eq!(letter.attempts, 5);
    assert_eq!(letter.last_error, "no luck with ada");
    assert_eq!(letter.resolution, None);
    assert_eq!(letter.resolved_at, None);
    assert!(letter.failed_at <= Utc::now());
    assert_eq!(
        repos.dead_letters.get(letter.id).await.unwrap(),
        Some(letter)
    );
    assert_eq!(
        repos.dead_letters.get(DeadLetterId::new()).await.unwrap(),
        None
    );
}

pub async fn lists_are_newest_first_filtered_and_paged_by_cursor(repos: Repos) {
    let shop = setup(&repos, "shop").await;
    let blog = setup(&repos, "blog").await;
    let first = record(&repos, failed(&shop, "a")).await;
    let second = record(&repos, failed(&shop, "b")).await;
    let third = record(&repos, failed(&shop, "c")).await;
    let theirs = record(&repos, failed(&blog, "x")).await;
    repos.dead_letters.ignore(second.id).await.unwrap();

    let all = repos
        .dead_letters
        .list(list(shop.app, false))
        .await
        .unwrap();
    assert_eq!(ids(&all), vec![third.id, second.id, first.id]);
    let open = repos.dead_letters.list(list(shop.app, true)).await.unwrap();
    assert_eq!(ids(&open), vec![third.id, first.id]);
    let blog_all = repos
        .dead_letters
        .list(list(blog.app, false))
        .await
        .unwrap();
    assert_eq!(ids(&blog_all), vec![theirs.id]);

    let page = repos
        .dead_letters
        .list(ListDeadLetters {
            limit: 2,
            ..list(shop.app, false)
        })
        .await
        .unwrap();
    assert_eq!(ids(&page), vec![third.id, second.id]);
    let next = repos
        .dead_letters
        .list(ListDeadLetters {
            limit: 2,
            before: Some(DeadLetterCursor::from(page.last().unwrap())),
            ..list(shop.app, false)
        })
        .await
        .unwrap();
    assert_eq!(ids(&next), vec![first.id]);
    let open_after_third = repos
        .dead_letters
        .list(ListDeadLetters {
            before: Some(DeadLetterCursor::from(&third)),
            ..list(shop.app, true)
        })
        .await
        .unwrap();
    assert_eq!(ids(&open_after_third), vec![first.id]);
}

pub async fn the_unresolved_count_is_per_app(repos: Repos) {
    let shop = setup(&repos, "shop").await;
    let blog = setup(&repos, "blog").await;
    assert_eq!(
        repos.dead_letters.count_unresolved(shop.app).await.unwrap(),
        0
    );
    let one = record(&repos, failed(&shop, "a")).await;
    record(&repos, failed(&shop, "b")).await;
    record(&repos, failed(&blog, "c")).await;
    assert_eq!(
        repos.dead_letters.count_unresolved(shop.app).await.unwrap(),
        2
    );
    assert_eq!(
        repos.dead_letters.count_unresolved(blog.app).await.unwrap(),
        1
    );
    repos.dead_letters.ignore(one.id).await.unwrap();
    assert_eq!(
        repos.dead_letters.count_unresolved(shop.app).await.unwrap(),
        1
    );
    // A failed handler leaves the event unhandled but takes it out of the badge.
    let other = record(&repos, failed(&shop, "d")).await;
    repos.resolve(other.id, Resolution::HandlerFailed).await;
    assert_eq!(
        repos.dead_letters.count_unresolved(shop.app).await.unwrap(),
        1
    );
}

pub async fn replay_enqueues_the_original_event_once_and_resolves(repos: Repos) {
    let shop = setup(&repos, "shop").await;
    let letter = record(&repos, failed(&shop, "ada")).await;
    let replayed = repos.dead_letters.replay(letter.id).await.unwrap();
    assert_eq!(replayed.resolution, Some(Resolution::Replayed));
    assert!(replayed.resolved_at.is_some());
    assert_eq!(
        repos.dead_letters.get(letter.id).await.unwrap(),
        Some(replayed)
    );
    assert_eq!(
        repos.enqueued(shop.trigger).await,
        vec![Enqueued {
            trigger_id: shop.trigger,
            event: letter.event.clone(),
            depth: 2,
            attempts: 0,
        }]
    );

    let err = repos.dead_letters.replay(letter.id).await.unwrap_err();
    assert!(
        matches!(
            err,
            DeadLetterActionError::AlreadyResolved {
                resolution: Resolution::Replayed,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("dead letter {} is already resolved (replayed)", letter.id)
    );
    assert_eq!(
        repos.enqueued(shop.trigger).await.len(),
        1,
        "enqueued twice"
    );
}

pub async fn replay_refuses_without_a_trigger(repos: Repos) {
    let shop = setup(&repos, "shop").await;
    // Refused at the depth limit: no trigger ever ran it.
    let refused = record(
        &repos,
        NewDeadLetter {
            trigger_id: None,
            script_id: None,
            attempts: 0,
            ..failed(&shop, "loop")
        },
    )
    .await;
    let err = repos.dead_letters.replay(refused.id).await.unwrap_err();
    assert!(
        matches!(err, DeadLetterActionError::NoTrigger(id) if id == refused.id),
        "{err:?}"
    );

    // Its trigger deleted since: the dead letter stays, without the trigger.
    let orphan = record(&repos, failed(&shop, "ada")).await;
    repos.triggers.delete(shop.trigger).await.unwrap();
    let kept = repos.dead_letters.get(orphan.id).await.unwrap().unwrap();
    assert_eq!(kept.trigger_id, None);
    assert_eq!(kept.resolution, None);
    let err = repos.dead_letters.replay(orphan.id).await.unwrap_err();
    assert!(
        matches!(err, DeadLetterActionError::NoTrigger(_)),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("dead letter {} has no trigger to replay it to", orphan.id)
    );
    // Nothing was resolved by the refusals; ignoring still works.
    assert_eq!(
        repos.dead_letters.count_unresolved(shop.app).await.unwrap(),
        2
    );
    let ignored = repos.dead_letters.ignore(orphan.id).await.unwrap();
    assert_eq!(ignored.resolution, Some(Resolution::Ignored));
}

pub async fn a_failed_handler_leaves_the_dead_letter_open(repos: Repos) {
    let shop = setup(&repos, "shop").await;
    let letter = record(&repos, failed(&shop, "ada")).await;
    repos.resolve(letter.id, Resolution::HandlerFailed).await;
    let replayed = repos.dead_letters.replay(letter.id).await.unwrap();
    assert_eq!(replayed.resolution, Some(Resolution::Replayed));
    assert_eq!(repos.enqueued(shop.trigger).await.len(), 1);

    let handled = record(&repos, failed(&shop, "bob")).await;
    repos.resolve(handled.id, Resolution::HandledByScript).await;
    let err = repos.dead_letters.ignore(handled.id).await.unwrap_err();
    assert!(
        matches!(
            err,
            DeadLetterActionError::AlreadyResolved {
                resolution: Resolution::HandledByScript,
                ..
            }
        ),
        "{err:?}"
    );
}

pub async fn ignore_resolves_once(repos: Repos) {
    let shop = setup(&repos, "shop").await;
    let letter = record(&repos, failed(&shop, "ada")).await;
    let ignored = repos.dead_letters.ignore(letter.id).await.unwrap();
    assert_eq!(ignored.resolution, Some(Resolution::Ignored));
    assert!(ignored.resolved_at.is_some());
    assert_eq!(
        repos.dead_letters.get(letter.id).await.unwrap(),
        Some(ignored)
    );
    assert!(repos.enqueued(shop.trigger).await.is_empty());
    for err in [
        repos.dead_letters.ignore(letter.id).await.unwrap_err(),
        repos.dead_letters.replay(letter.id).await.unwrap_err(),
    ] {
        assert!(
            matches!(
                err,
                DeadLetterActionError::AlreadyResolved {
                    resolution: Resolution::Ignored,
                    ..
                }
            ),
            "{err:?}"
        );
    }
    assert!(repos.enqueued(shop.trigger).await.is_empty());
}

pub async fn actions_on_a_missing_dead_letter_are_not_found(repos: Repos) {
    let missing = DeadLetterId::new();
    let err = repos.dead_letters.replay(missing).await.unwrap_err();
    assert!(
        matches!(err, DeadLetterActionError::NotFound(id) if id == missing),
        "{err:?}"
    );
    let err = repos.dead_letters.ignore(missing).await.unwrap_err();
    assert!(
        matches!(err, DeadLetterActionError::NotFound(id) if id == missing),
        "{err:?}"
    );
}

pub async fn prune_deletes_only_dead_letters_resolved_before_the_cutoff(repos: Repos) {
    let shop = setup(&repos, "shop").await;
    let open = record(&repos, failed(&shop, "open")).await;
    let ignored = record(&repos, failed(&shop, "ignored")).await;
    let handled = record(&repos, failed(&shop, "handled")).await;
    repos.dead_letters.ignore(ignored.id).await.unwrap();
    repos.resolve(handled.id, Resolution::HandledByScript).await;

    // Nothing was resolved before an hour ago.
    let an_hour_ago = Utc::now() - TimeDelta::hours(1);
    assert_eq!(
        repos
            .dead_letters
            .prune_resolved_before(an_hour_ago)
            .await
            .unwrap(),
        0
    );
    let tomorrow = Utc::now() + TimeDelta::days(1);
    assert_eq!(
        repos
            .dead_letters
            .prune_resolved_before(tomorrow)
            .await
            .unwrap(),
        2
    );
    assert!(repos.dead_letters.get(open.id).await.unwrap().is_some());
    assert!(repos.dead_letters.get(ignored.id).await.unwrap().is_none());
    assert!(repos.dead_letters.get(handled.id).await.unwrap().is_none());
}
