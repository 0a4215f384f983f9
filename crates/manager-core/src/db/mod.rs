//! What every PostgreSQL implementation shares: the one translation of driver errors
//! into [`RepoError`](crate::repository::RepoError)s, and the one repair of script-made text
//! PostgreSQL cannot store.

mod error;

use std::borrow::Cow;

pub(crate) use error::*;

/// `text` as PostgreSQL can store it: NUL characters, which `text` and `jsonb` refuse, become
/// U+FFFD. For text a script made (its log lines, its error messages), which is recorded
/// as faithfully as the database allows rather than refused: refusing it would lose the
/// record, or leave a failed event claimed and retried forever.
pub(crate) fn storable_text(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_nul_is_replaced_and_clean_text_is_not_copied() {
        assert_eq!(storable_text("a\0b\0"), "a\u{FFFD}b\u{FFFD}");
        assert_eq!(storable_text("tab\tand\nnewline"), "tab\tand\nnewline");
        assert!(matches!(storable_text("clean"), Cow::Borrowed("clean")));
    }
}
