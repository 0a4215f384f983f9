//! Reading the arguments scripts pass to the service modules: what every module takes the
//! same way (strings, collection names, list options), each mistake thrown with a message
//! naming it.

use picloud_shared::CollectionName;
use rhai::{Dynamic, Map};

use super::{RhaiResult, throw};

/// A string argument, or a thrown error naming what it should have been.
pub(super) fn text(value: Dynamic, what: &str) -> RhaiResult<String> {
    if value.is_string() {
        Ok(value.into_string().unwrap_or_default())
    } else {
        Err(throw(format!(
            "{what} must be a string, not {}",
            value.type_name()
        )))
    }
}

/// A collection name, validated.
pub(super) fn collection_name(name: &str) -> RhaiResult<CollectionName> {
    CollectionName::parse(name).map_err(|e| throw(e.to_string()))
}

/// The options of a `list` call: the page a script asks for. What it leaves out (or sets
/// to `()`) is `None`, for the service's default.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct ListOptions {
    /// Only names starting with this.
    pub prefix: Option<String>,
    /// The page size. Out-of-range values are the service's to refuse, with its own
    /// message: a negative one is 0, one too large for a `u32` is `u32::MAX`.
    pub limit: Option<u32>,
    /// Continue after this (the previous page's `next_cursor`).
    pub cursor: Option<String>,
}

/// `#{prefix, limit, cursor}`, each optional; anything else is a mistake worth naming.
pub(super) fn list_options(options: Map) -> RhaiResult<ListOptions> {
    let mut parsed = ListOptions::default();
    for (name, value) in options {
        let optional_text = |value: Dynamic| {
            if value.is_unit() {
                Ok(None)
            } else {
                text(value, &format!("list option '{name}'")).map(Some)
            }
        };
        match name.as_str() {
            "prefix" => parsed.prefix = optional_text(value)?,
            "cursor" => parsed.cursor = optional_text(value)?,
            "limit" if value.is_unit() => {}
            "limit" => {
                let limit = value.as_int().map_err(|type_name| {
                    throw(format!(
                        "list option 'limit' must be an integer, not {type_name}"
                    ))
                })?;
                parsed.limit = Some(u32::try_from(limit.max(0)).unwrap_or(u32::MAX));
            }
            other => {
                return Err(throw(format!(
                    "unknown list option '{other}' (expected prefix, limit or cursor)"
                )));
            }
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use rhai::INT;

    use super::*;
    use crate::sdk::testing::{map as options, message};

    #[test]
    fn list_options_are_read_and_mistakes_named() {
        let parsed = list_options(options(&[
            ("prefix", "a".into()),
            ("limit", Dynamic::from(5 as INT)),
            ("cursor", Dynamic::UNIT),
        ]))
        .unwrap();
        assert_eq!(
            parsed,
            ListOptions {
                prefix: Some("a".to_owned()),
                limit: Some(5),
                cursor: None,
            }
        );
        assert_eq!(list_options(Map::new()).unwrap(), ListOptions::default());
        let unset = list_options(options(&[("limit", Dynamic::UNIT)])).unwrap();
        assert_eq!(unset.limit, None, "() is the same as leaving it out");
        let err = list_options(options(&[("limt", Dynamic::from(5 as INT))])).unwrap_err();
        assert_eq!(
            message(&err),
            "unknown list option 'limt' (expected prefix, limit or cursor)"
        );
        let err = list_options(options(&[("limit", "ten".into())])).unwrap_err();
        assert_eq!(
            message(&err),
            "list option 'limit' must be an integer, not string"
        );
        let err = list_options(options(&[("prefix", Dynamic::from(1 as INT))])).unwrap_err();
        assert_eq!(
            message(&err),
            "list option 'prefix' must be a string, not i64"
        );
        let negative = list_options(options(&[("limit", Dynamic::from(-1 as INT))])).unwrap();
        assert_eq!(negative.limit, Some(0), "left for the service to refuse");
        let huge = list_options(options(&[("limit", Dynamic::from(INT::MAX))])).unwrap();
        assert_eq!(huge.limit, Some(u32::MAX), "left for the service to refuse");
    }

    #[test]
    fn text_and_collection_names_name_the_mistake() {
        assert_eq!(text("a".into(), "key").unwrap(), "a");
        let err = text(Dynamic::UNIT, "key").unwrap_err();
        assert_eq!(message(&err), "key must be a string, not ()");
        let err = collection_name("bad name").unwrap_err();
        assert_eq!(
            message(&err),
            "collection name may contain only ASCII letters, digits, '_', '-', '.' and ':'"
        );
    }
}
