//! What every PostgreSQL implementation shares: the one translation of driver errors
//! into [`RepoError`](crate::repository::RepoError)s.

mod error;

pub(crate) use error::*;
