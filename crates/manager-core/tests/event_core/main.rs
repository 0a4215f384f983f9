//! The event core's control plane: the trigger and dead-letter repository suites, written
//! once and run against both implementations (the in-memory ones always, PostgreSQL
//! against a fresh database per test from `DATABASE_URL`; the tests fail when it is
//! unset), and the outbox emitter and dead-letter fan-out against PostgreSQL.

#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly on the first surprise"
)]

#[path = "../common/mod.rs"]
mod common;

mod dead_letters;
mod emitter;
mod executions;
mod triggers;

use picloud_manager_core::triggers::kinds::{
    DeadLetterDetails, FilesDetails, FilesOps, KvDetails, KvOps, SourceKinds,
};
use picloud_manager_core::triggers::{NewTrigger, Trigger, TriggerDetails};
use picloud_shared::{
    AppId, CollectionGlob, FileOp, KvOp, RetryPolicy, Script, TriggerId, TriggerKind, UserId,
};

pub use common::repos::{Backend, Enqueued, Repos};

/// A KV trigger on `glob` for `ops`, with the default retry policy.
pub fn kv_trigger(
    app: AppId,
    script: &Script,
    user: UserId,
    glob: &str,
    ops: &[KvOp],
) -> NewTrigger {
    NewTrigger {
        app_id: app,
        script_id: script.id,
        enabled: true,
        registered_by: user,
        retry: RetryPolicy::default(),
        details: TriggerDetails::Kv(KvDetails {
            collection: CollectionGlob::parse(glob).unwrap(),
            ops: KvOps::new(ops).unwrap(),
        }),
    }
}

/// A files trigger on `glob` for `ops`, with the default retry policy.
pub fn files_trigger(
    app: AppId,
    script: &Script,
    user: UserId,
    glob: &str,
    ops: &[FileOp],
) -> NewTrigger {
    NewTrigger {
        app_id: app,
        script_id: script.id,
        enabled: true,
        registered_by: user,
        retry: RetryPolicy::default(),
        details: TriggerDetails::Files(FilesDetails {
            collection: CollectionGlob::parse(glob).unwrap(),
            ops: FilesOps::new(ops).unwrap(),
        }),
    }
}

/// A dead-letter trigger for KV dead letters.
pub fn dead_letter_trigger(app: AppId, script: &Script, user: UserId) -> NewTrigger {
    dead_letter_trigger_for(app, script, user, &[TriggerKind::Kv])
}

/// A dead-letter trigger for the dead letters of triggers of `kinds`.
pub fn dead_letter_trigger_for(
    app: AppId,
    script: &Script,
    user: UserId,
    kinds: &[TriggerKind],
) -> NewTrigger {
    NewTrigger {
        app_id: app,
        script_id: script.id,
        enabled: true,
        registered_by: user,
        retry: RetryPolicy::default(),
        details: TriggerDetails::DeadLetter(DeadLetterDetails {
            source_kinds: SourceKinds::new(kinds).unwrap(),
        }),
    }
}

/// The ids of `triggers`, in order.
pub fn ids(triggers: &[Trigger]) -> Vec<TriggerId> {
    triggers.iter().map(|t| t.id).collect()
}

picloud_testkit::backend_suite!(
    memory: Repos::in_memory(),
    postgres(migrator = "picloud_manager_core::MIGRATOR"): |pool| Repos::postgres(pool);
    triggers::a_kv_trigger_reads_back_as_created,
    triggers::a_files_trigger_reads_back_as_created_and_changes_within_its_kind,
    triggers::a_dead_letter_trigger_reads_back_with_its_source_kinds,
    triggers::a_script_of_another_app_or_none_is_not_found_and_nothing_is_stored,
    triggers::a_missing_user_is_not_found,
    triggers::lists_are_filtered_by_app_and_kind_and_paged_oldest_first,
    triggers::set_enabled_switches_a_trigger,
    triggers::update_replaces_retry_and_details_of_the_same_kind_only,
    triggers::delete_removes_a_trigger,
    triggers::targets_are_this_apps_enabled_triggers_the_kinds_matcher_accepts,
    triggers::file_changes_target_only_the_files_triggers_that_match,
    triggers::deleting_the_script_or_the_user_deletes_their_triggers,
    dead_letters::a_recorded_dead_letter_reads_back_unresolved,
    dead_letters::lists_are_newest_first_filtered_and_paged_by_cursor,
    dead_letters::the_unresolved_count_is_per_app,
    dead_letters::replay_enqueues_the_original_event_once_and_resolves,
    dead_letters::replay_refuses_without_a_trigger,
    dead_letters::a_failed_handler_leaves_the_dead_letter_open,
    dead_letters::ignore_resolves_once,
    dead_letters::actions_on_a_missing_dead_letter_are_not_found,
    dead_letters::prune_deletes_only_dead_letters_resolved_before_the_cutoff,
    executions::a_triggered_run_reads_back_with_its_trigger,
    emitter::a_set_writes_one_row_per_matching_enabled_trigger_of_the_app_only,
    emitter::a_file_change_writes_one_row_per_matching_enabled_files_trigger,
    emitter::an_event_no_trigger_matches_writes_nothing,
    emitter::a_run_past_its_delivery_budget_is_refused,
    emitter::an_event_past_the_depth_limit_becomes_one_unresolved_dead_letter,
    emitter::a_deep_event_nothing_watches_is_not_a_dead_letter,
    emitter::a_dead_letter_fans_out_to_the_apps_enabled_dead_letter_triggers,
    emitter::a_files_dead_letter_reaches_only_handlers_of_files_dead_letters,
);
