//! Text a script made, as a log line may show it: scripts choose their error messages, so
//! one must neither flood the log (a thrown string can be a megabyte, logged on every retry)
//! nor rewrite the operator's terminal (escape sequences, fake line breaks).

use std::fmt;

/// `text` for a log field: at most [`LogText::MAX_CHARS`] characters, control characters
/// escaped (`\n`, `\u{1b}`), and, when cut, the full size said.
#[derive(Debug, Clone, Copy)]
pub struct LogText<'a>(pub &'a str);

impl LogText<'_> {
    /// The most characters of the text a log line shows.
    pub const MAX_CHARS: usize = 512;
}

impl fmt::Display for LogText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (shown, c) in self.0.chars().enumerate() {
            if shown == Self::MAX_CHARS {
                return write!(f, "… ({} bytes in all)", self.0.len());
            }
            if c.is_control() || crate::names::is_bidi_control(c) {
                write!(f, "{}", c.escape_unicode())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_clean_text_is_shown_as_it_is() {
        assert_eq!(LogText("boom: x is 1").to_string(), "boom: x is 1");
    }

    #[test]
    fn control_and_bidi_characters_are_escaped() {
        assert_eq!(
            LogText("a\nb\u{1b}[2J\u{202E}c").to_string(),
            "a\\u{a}b\\u{1b}[2J\\u{202e}c"
        );
    }

    #[test]
    fn long_text_is_cut_and_says_its_size() {
        let long = "é".repeat(10_000);
        let shown = LogText(&long).to_string();
        assert!(shown.starts_with(&"é".repeat(LogText::MAX_CHARS)));
        assert!(shown.ends_with("… (20000 bytes in all)"), "{shown}");
        assert_eq!(
            shown.chars().count(),
            LogText::MAX_CHARS + "… (20000 bytes in all)".chars().count()
        );
        let exact = "x".repeat(LogText::MAX_CHARS);
        assert_eq!(LogText(&exact).to_string(), exact);
    }
}
