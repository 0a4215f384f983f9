//! Suites written once per trait and run on each of its backends: the in-memory one always,
//! PostgreSQL against a fresh database per test.

/// Generates, for each suite function `module::test`, one test `in_memory::test` that runs
/// it on the in-memory backend and one test `postgres::test` that runs it on PostgreSQL.
///
/// `memory` builds the in-memory backend. `postgres` takes what goes inside
/// `#[sqlx::test(…)]` (the caller's migrator: this crate cannot name it), then builds the
/// backend from the test's pool, named as in a closure. Each suite function takes the
/// backend by value and is awaited. The tests live in two modules beside the invocation,
/// which see what it sees; the calling crate supplies `tokio` and `sqlx` (with its
/// `migrate` feature).
///
/// ```ignore
/// picloud_testkit::backend_suite!(
///     memory: Repos::in_memory(),
///     postgres(migrator = "picloud_manager_core::MIGRATOR"): |pool| Repos::postgres(pool);
///     apps::a_taken_slug_conflicts,
///     users::a_taken_username_conflicts,
/// );
/// ```
#[macro_export]
macro_rules! backend_suite {
    (
        memory: $memory:expr,
        postgres $sqlx_test:tt: |$pool:ident| $postgres:expr;
        $($module:ident :: $test:ident),* $(,)?
    ) => {
        mod in_memory {
            #[allow(unused_imports, reason = "the backend's types come from the caller's module")]
            use super::*;
            $(
                #[tokio::test]
                async fn $test() {
                    super::$module::$test($memory).await;
                }
            )*
        }

        mod postgres {
            #[allow(unused_imports, reason = "the backend's types come from the caller's module")]
            use super::*;
            $(
                #[sqlx::test $sqlx_test]
                async fn $test($pool: sqlx::PgPool) {
                    super::$module::$test($postgres).await;
                }
            )*
        }
    };
}
