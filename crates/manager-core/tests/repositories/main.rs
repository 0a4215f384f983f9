//! The repository test suite, written once and run against both implementations: the
//! in-memory ones always, the PostgreSQL ones against a fresh database per test (from
//! `DATABASE_URL`; the tests fail when it is unset).

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions fail loudly on the first surprise too"
)]

#[path = "../common/mod.rs"]
mod common;

mod apps;
mod executions;
mod memberships;
mod scripts;
mod tokens;
mod users;

pub use picloud_testkit::PHC;
use sqlx::PgPool;

pub use common::repos::Repos;

picloud_testkit::backend_suite!(
    memory: Repos::in_memory(),
    postgres(migrator = "picloud_manager_core::MIGRATOR"): |pool| Repos::postgres(pool);
    apps::the_default_app_exists_under_its_well_known_id,
    apps::apps_are_found_by_id_and_slug,
    apps::creating_with_an_owner_makes_them_its_owner,
    apps::a_renamed_apps_old_slug_stays_reserved_for_it,
    apps::a_taken_slug_conflicts,
    apps::a_missing_owner_is_not_found_and_leaves_no_app,
    apps::lists_are_ordered_by_slug_filtered_and_paged,
    apps::update_renames_and_refuses_a_taken_slug,
    apps::updating_a_missing_app_or_changing_nothing_fails,
    apps::delete_refuses_an_app_with_scripts_without_cascade,
    apps::cascading_delete_returns_the_scripts_and_removes_what_belonged_to_the_app,
    apps::deleting_a_missing_app_is_not_found,
    users::a_created_user_reads_back_by_id_and_username,
    users::a_taken_username_conflicts,
    users::users_are_listed_by_username_and_paged,
    users::set_password_replaces_the_hash,
    users::deleting_a_user_removes_their_tokens_and_memberships,
    users::create_if_none_creates_only_the_first_user,
    users::create_if_none_creates_one_user_when_racing,
    tokens::a_created_token_reads_back_and_is_found_by_its_hash,
    tokens::expired_and_revoked_tokens_are_not_usable,
    tokens::tokens_for_a_missing_user_or_app_are_not_found,
    tokens::a_session_cannot_be_limited_to_an_app,
    tokens::a_users_tokens_are_listed_newest_first_by_kind,
    tokens::revoke_is_idempotent_and_keeps_the_first_time,
    tokens::revoke_all_revokes_only_that_users_live_tokens,
    tokens::touch_keeps_the_latest_use,
    tokens::revoking_a_token_revokes_every_token_made_through_it,
    memberships::set_role_adds_and_changes_a_role,
    memberships::members_are_listed_by_username,
    memberships::set_role_names_a_missing_app_or_user,
    memberships::remove_takes_a_member_out,
    scripts::a_created_script_reads_back_unchanged,
    scripts::creating_in_a_missing_app_is_not_found_naming_the_app,
    scripts::a_duplicate_name_in_the_same_app_conflicts,
    scripts::the_same_name_may_be_used_in_another_app,
    scripts::get_by_name_joins_the_app_slug,
    scripts::lists_are_paged_in_name_order,
    scripts::lists_can_be_limited_to_one_app,
    scripts::lists_can_be_limited_to_several_apps_in_one_order,
    scripts::update_changes_given_fields_and_bumps_the_version,
    scripts::renaming_onto_a_used_name_conflicts,
    scripts::updating_a_missing_script_is_not_found,
    scripts::an_empty_update_is_invalid,
    scripts::delete_removes_the_script,
    executions::inserted_records_read_back_unchanged,
    executions::insert_batch_is_idempotent_on_the_record_id,
    executions::an_empty_batch_writes_nothing,
    executions::runs_are_listed_newest_first_and_paged_by_cursor,
    executions::prune_deletes_only_runs_before_the_cutoff,
);

/// PostgreSQL only: the token table holds the SHA-256 of a secret, never the secret.
#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn the_stored_token_hash_is_the_sha256_of_the_secret(pool: PgPool) {
    tokens::the_stored_hash_is_the_sha256_of_the_secret(Repos::postgres(pool)).await;
}

/// A closed pool is reported as `Unavailable`, which the API answers with 503.
#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_closed_pool_is_unavailable(pool: PgPool) {
    let repos = Repos::postgres(pool.clone());
    pool.close().await;
    let err = repos
        .scripts
        .get(picloud_shared::ScriptId::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, picloud_manager_core::RepoError::Unavailable(_)),
        "{err:?}"
    );
}
