//! The `kv` trigger kind: run a script when a KV entry is set or deleted in a collection
//! that the trigger's glob matches. Details in `kv_trigger_details`.

use picloud_shared::{CollectionGlob, EventSubject, KvOp, TriggerKind};
use serde::{Deserialize, Serialize};

use super::glob_ops::{GlobKind, Ops, WatchedOp};

impl WatchedOp for KvOp {
    const ALL: &'static [Self] = &[Self::Set, Self::Delete];
    #[cfg(feature = "admin-api")]
    const SET_SCHEMA_NAME: &'static str = "KvOps";
    #[cfg(feature = "admin-api")]
    const SET_SCHEMA_DESCRIPTION: &'static str = "The operations a `kv` trigger watches: \
        never empty, each once, in the order set,\ndelete.";

    fn stored_name(self) -> &'static str {
        self.as_str()
    }
}

/// The operations a `kv` trigger watches: never empty, each once, in the order set,
/// delete.
pub type KvOps = Ops<KvOp>;

/// What a `kv` trigger watches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "admin-api", derive(utoipa::ToSchema))]
pub struct KvDetails {
    /// Which collections: `*` (all), a prefix followed by `*` (`orders:*`), or an exact
    /// collection name.
    pub collection: CollectionGlob,
    /// Which operations.
    pub ops: KvOps,
}

/// The details of a `kv` trigger as a client sends them.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "admin-api", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct KvDetailsRequest {
    /// Which collections: `*` (all), a prefix followed by `*` (`orders:*`), or an exact
    /// collection name.
    pub collection: String,
    /// Which operations (`set`, `delete`); both when absent.
    #[serde(default)]
    pub ops: Option<Vec<KvOp>>,
}

/// The `kv` kind.
pub(crate) struct Kv;

impl GlobKind for Kv {
    const KIND: TriggerKind = TriggerKind::Kv;
    const TABLE: &'static str = "kv_trigger_details";
    type Op = KvOp;
    type Details = KvDetails;
    type Request = KvDetailsRequest;

    fn new_details(collection: CollectionGlob, ops: KvOps) -> KvDetails {
        KvDetails { collection, ops }
    }

    fn parts(details: &KvDetails) -> (&CollectionGlob, &KvOps) {
        (&details.collection, &details.ops)
    }

    fn asked(request: KvDetailsRequest) -> (String, Option<Vec<KvOp>>) {
        (request.collection, request.ops)
    }

    fn change(subject: &EventSubject) -> Option<(&str, KvOp)> {
        match subject {
            EventSubject::Kv { collection, op, .. } => Some((collection, *op)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use picloud_shared::ErrorCode;
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::triggers::kinds::Kind;

    fn change(collection: &str, op: KvOp) -> EventSubject {
        EventSubject::Kv {
            collection: collection.to_owned(),
            key: "k".to_owned(),
            op,
            value: None,
        }
    }

    fn details(glob: &str, ops: &[KvOp]) -> KvDetails {
        KvDetails {
            collection: CollectionGlob::parse(glob).unwrap(),
            ops: KvOps::new(ops).unwrap(),
        }
    }

    fn op() -> impl Strategy<Value = KvOp> {
        prop_oneof![Just(KvOp::Set), Just(KvOp::Delete)]
    }

    proptest! {
        // Short names over a small alphabet, so prefixes and exact names often coincide.
        #[test]
        fn a_glob_matches_exactly_what_its_form_says(
            name in "[ab:]{1,4}",
            collection in "[ab:]{0,5}",
            op in op(),
        ) {
            let both = [KvOp::Set, KvOp::Delete];
            prop_assert!(Kv::matches(&details("*", &both), &change(&collection, op)));
            prop_assert_eq!(
                Kv::matches(&details(&format!("{name}*"), &both), &change(&collection, op)),
                collection.starts_with(&name)
            );
            prop_assert_eq!(
                Kv::matches(&details(&name, &both), &change(&collection, op)),
                collection == name
            );
        }

        #[test]
        fn only_the_watched_ops_match(watched in op(), happened in op()) {
            prop_assert_eq!(
                Kv::matches(&details("*", &[watched]), &change("c", happened)),
                watched == happened
            );
        }
    }

    #[test]
    fn events_of_other_kinds_never_match() {
        let dead_letter = EventSubject::DeadLetter {
            dead_letter_id: picloud_shared::DeadLetterId::new(),
            source_kind: TriggerKind::Kv,
            trigger_id: None,
            script_id: None,
            event: json!({}),
            attempts: 1,
            last_error: "boom".to_owned(),
        };
        assert!(!Kv::matches(
            &details("*", &[KvOp::Set, KvOp::Delete]),
            &dead_letter
        ));
    }

    #[test]
    fn requests_are_validated_naming_the_problem() {
        let request = |collection: &str, ops: Option<Vec<KvOp>>| KvDetailsRequest {
            collection: collection.to_owned(),
            ops,
        };
        let all = Kv::details(request("orders:*", None)).unwrap();
        assert_eq!(all.ops.as_slice(), &[KvOp::Set, KvOp::Delete]);
        let deduplicated = Kv::details(request(
            "x",
            Some(vec![KvOp::Delete, KvOp::Set, KvOp::Delete]),
        ))
        .unwrap();
        assert_eq!(deduplicated.ops.as_slice(), &[KvOp::Set, KvOp::Delete]);
        assert_eq!(
            Kv::details(request("x", Some(vec![]))).unwrap_err().code,
            ErrorCode::InvalidOps
        );
        assert_eq!(
            Kv::details(request("a*b", None)).unwrap_err().code,
            ErrorCode::InvalidGlob
        );
    }
}
