//! The one place driver errors become [`RepoError`]s: Postgres error codes are read here and
//! nowhere else.

use crate::repository::RepoError;

/// What a constraint violation means for the statement that hit it, in the caller's words.
#[derive(Debug, Default)]
pub(crate) struct Violations {
    /// What clashed when a unique constraint fires (23505), e.g. `script 'x' in app …`.
    pub unique: Option<String>,
    /// What is missing when a foreign key fires (23503), e.g. `app 0190…`.
    pub foreign_key: Option<String>,
    /// For statements with more than one foreign key: what is missing when the named
    /// constraint fires. Consulted before `foreign_key`.
    pub foreign_keys: Vec<(&'static str, String)>,
}

/// Translates a driver error with no statement-specific meaning for violations.
pub(crate) fn db_error(err: sqlx::Error) -> RepoError {
    translate(err, Violations::default())
}

/// Translates a driver error, using `violations` to describe constraint violations.
pub(crate) fn translate(err: sqlx::Error, violations: Violations) -> RepoError {
    if is_unavailable(&err) {
        return RepoError::Unavailable(Box::new(err));
    }
    let code = match &err {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    };
    match code.as_deref() {
        Some("23505") => RepoError::Conflict {
            what: violations
                .unique
                .unwrap_or_else(|| constraint_name(&err, "record")),
        },
        Some("23503") => {
            let fired = match &err {
                sqlx::Error::Database(db) => db.constraint().map(str::to_owned),
                _ => None,
            };
            let by_constraint = violations
                .foreign_keys
                .into_iter()
                .find(|(constraint, _)| fired.as_deref() == Some(*constraint))
                .map(|(_, what)| what);
            RepoError::NotFound {
                what: by_constraint
                    .or(violations.foreign_key)
                    .unwrap_or_else(|| constraint_name(&err, "referenced record")),
            }
        }
        // A CHECK or NOT NULL refusal means a value slipped past validation above: the
        // request is wrong, not the database.
        Some("23514" | "23502") => RepoError::Invalid(format!(
            "value refused by {}",
            constraint_name(&err, "a database constraint")
        )),
        _ => RepoError::Internal(Box::new(err)),
    }
}

/// Whether two transactions deadlocked (40P01) and PostgreSQL chose this one to abort:
/// nothing of it happened, and running it again may well succeed.
pub(crate) fn is_deadlock(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some("40P01"))
}

/// Errors a later retry may not see: the server or the pool, not the statement, failed.
fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 53: insufficient resources (too many connections,
            // disk full); 57P01-57P03: the server is shutting down or starting up;
            // 40001/40P01: serialization failure or deadlock, retryable by definition.
            code.starts_with("08")
                || code.starts_with("53")
                || matches!(&*code, "57P01" | "57P02" | "57P03" | "40001" | "40P01")
        }),
        _ => false,
    }
}

fn constraint_name(err: &sqlx::Error, fallback: &str) -> String {
    match err {
        sqlx::Error::Database(db) => db
            .constraint()
            .map_or_else(|| fallback.to_owned(), |c| format!("constraint {c}")),
        _ => fallback.to_owned(),
    }
}

/// Data read back that the domain types refuse: the row was written by something that
/// skipped validation, which is a fault, not a client error.
pub(crate) fn corrupt_row(what: String) -> RepoError {
    RepoError::Internal(what.into())
}
