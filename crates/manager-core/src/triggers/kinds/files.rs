//! The `files` trigger kind: run a script when a file is created, updated or deleted in a
//! collection that the trigger's glob matches. Details in `files_trigger_details`.

use picloud_shared::{CollectionGlob, EventSubject, FileOp, TriggerKind};
use serde::{Deserialize, Serialize};

use super::glob_ops::{GlobKind, Ops, WatchedOp};

impl WatchedOp for FileOp {
    const ALL: &'static [Self] = &FileOp::ALL;
    #[cfg(feature = "admin-api")]
    const SET_SCHEMA_NAME: &'static str = "FilesOps";
    #[cfg(feature = "admin-api")]
    const SET_SCHEMA_DESCRIPTION: &'static str = "The operations a `files` trigger watches: \
        never empty, each once, in the order create,\nupdate, delete.";

    fn stored_name(self) -> &'static str {
        self.as_str()
    }
}

/// The operations a `files` trigger watches: never empty, each once, in the order create,
/// update, delete.
pub type FilesOps = Ops<FileOp>;

/// What a `files` trigger watches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "admin-api", derive(utoipa::ToSchema))]
pub struct FilesDetails {
    /// Which collections: `*` (all), a prefix followed by `*` (`avatars*`), or an exact
    /// collection name.
    pub collection: CollectionGlob,
    /// Which operations.
    pub ops: FilesOps,
}

/// The details of a `files` trigger as a client sends them.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "admin-api", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FilesDetailsRequest {
    /// Which collections: `*` (all), a prefix followed by `*` (`avatars*`), or an exact
    /// collection name.
    pub collection: String,
    /// Which operations (`create`, `update`, `delete`); all three when absent.
    #[serde(default)]
    pub ops: Option<Vec<FileOp>>,
}

/// The `files` kind.
pub(crate) struct Files;

impl GlobKind for Files {
    const KIND: TriggerKind = TriggerKind::Files;
    const TABLE: &'static str = "files_trigger_details";
    type Op = FileOp;
    type Details = FilesDetails;
    type Request = FilesDetailsRequest;

    fn new_details(collection: CollectionGlob, ops: FilesOps) -> FilesDetails {
        FilesDetails { collection, ops }
    }

    fn parts(details: &FilesDetails) -> (&CollectionGlob, &FilesOps) {
        (&details.collection, &details.ops)
    }

    fn asked(request: FilesDetailsRequest) -> (String, Option<Vec<FileOp>>) {
        (request.collection, request.ops)
    }

    fn change(subject: &EventSubject) -> Option<(&str, FileOp)> {
        match subject {
            EventSubject::Files { collection, op, .. } => Some((collection, *op)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use picloud_shared::{ErrorCode, KvOp};
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::triggers::kinds::Kind;

    fn change(collection: &str, op: FileOp) -> EventSubject {
        EventSubject::Files {
            collection: collection.to_owned(),
            name: "a.png".to_owned(),
            op,
            file: None,
        }
    }

    fn details(glob: &str, ops: &[FileOp]) -> FilesDetails {
        FilesDetails {
            collection: CollectionGlob::parse(glob).unwrap(),
            ops: FilesOps::new(ops).unwrap(),
        }
    }

    fn op() -> impl Strategy<Value = FileOp> {
        prop::sample::select(FileOp::ALL.to_vec())
    }

    proptest! {
        // Short names over a small alphabet, so prefixes and exact names often coincide.
        #[test]
        fn a_glob_matches_exactly_what_its_form_says(
            name in "[ab:]{1,4}",
            collection in "[ab:]{0,5}",
            op in op(),
        ) {
            let all = FileOp::ALL;
            prop_assert!(Files::matches(&details("*", &all), &change(&collection, op)));
            prop_assert_eq!(
                Files::matches(&details(&format!("{name}*"), &all), &change(&collection, op)),
                collection.starts_with(&name)
            );
            prop_assert_eq!(
                Files::matches(&details(&name, &all), &change(&collection, op)),
                collection == name
            );
        }

        #[test]
        fn only_the_watched_ops_match(
            watched in prop::sample::subsequence(FileOp::ALL.to_vec(), 1..=3),
            happened in op(),
        ) {
            prop_assert_eq!(
                Files::matches(&details("*", &watched), &change("c", happened)),
                watched.contains(&happened)
            );
        }

        #[test]
        fn ops_are_canonical_whatever_the_order_and_repeats_asked(
            asked in prop::collection::vec(op(), 1..8),
        ) {
            let ops = FilesOps::new(&asked).unwrap();
            let expected: Vec<FileOp> =
                FileOp::ALL.into_iter().filter(|op| asked.contains(op)).collect();
            prop_assert_eq!(ops.as_slice(), expected.as_slice());
        }
    }

    #[test]
    fn events_of_other_kinds_never_match() {
        let all = details("*", &FileOp::ALL);
        let kv_change = EventSubject::Kv {
            collection: "avatars".to_owned(),
            key: "a.png".to_owned(),
            op: KvOp::Set,
            value: None,
        };
        assert!(!Files::matches(&all, &kv_change));
        let dead_letter = EventSubject::DeadLetter {
            dead_letter_id: picloud_shared::DeadLetterId::new(),
            source_kind: TriggerKind::Files,
            trigger_id: None,
            script_id: None,
            event: json!({}),
            attempts: 1,
            last_error: "boom".to_owned(),
        };
        assert!(!Files::matches(&all, &dead_letter));
    }

    #[test]
    fn requests_are_validated_naming_the_problem() {
        let request = |collection: &str, ops: Option<Vec<FileOp>>| FilesDetailsRequest {
            collection: collection.to_owned(),
            ops,
        };
        let all = Files::details(request("avatars*", None)).unwrap();
        assert_eq!(all.collection.as_str(), "avatars*");
        assert_eq!(
            all.ops.as_slice(),
            &[FileOp::Create, FileOp::Update, FileOp::Delete]
        );
        let deduplicated = Files::details(request(
            "x",
            Some(vec![FileOp::Delete, FileOp::Create, FileOp::Delete]),
        ))
        .unwrap();
        assert_eq!(
            deduplicated.ops.as_slice(),
            &[FileOp::Create, FileOp::Delete]
        );
        let empty = Files::details(request("x", Some(vec![]))).unwrap_err();
        assert_eq!(empty.code, ErrorCode::InvalidOps);
        assert_eq!(
            empty.message,
            "ops must name at least one of create, update, delete"
        );
        let bad_glob = Files::details(request("a*b", None)).unwrap_err();
        assert_eq!(bad_glob.code, ErrorCode::InvalidGlob);
        assert!(bad_glob.message.contains("'a*b'"), "{}", bad_glob.message);
    }

    #[test]
    fn requests_refuse_unknown_fields_and_ops() {
        let parse = |value| serde_json::from_value::<FilesDetailsRequest>(value);
        let ok = parse(json!({ "collection": "*", "ops": ["update"] })).unwrap();
        assert_eq!(ok.ops, Some(vec![FileOp::Update]));
        assert!(parse(json!({ "collection": "*", "colour": "red" })).is_err());
        assert!(parse(json!({ "collection": "*", "ops": ["set"] })).is_err());
    }

    #[test]
    fn details_serialize_as_the_api_shows_them() {
        let details = details("avatars*", &[FileOp::Delete, FileOp::Create]);
        assert_eq!(
            serde_json::to_value(&details).unwrap(),
            json!({ "collection": "avatars*", "ops": ["create", "delete"] })
        );
    }
}
