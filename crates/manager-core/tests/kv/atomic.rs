//! Versions, check-and-set, increments and atomic batches, on every implementation.

use picloud_shared::{
    EventSubject, KvAtomic, KvCheck, KvCondition, KvIncrement, KvMutation, KvOp, ServiceError,
    ServiceEvent,
};
use serde_json::{Value, json};

use crate::{Kv, coll, key, script_ctx};

/// `(op, key, value)` of each event.
fn changes(events: &[ServiceEvent]) -> Vec<(KvOp, String, Option<Value>)> {
    events
        .iter()
        .map(|e| match &e.subject {
            EventSubject::Kv { key, op, value, .. } => (*op, key.clone(), value.clone()),
            other => panic!("the kv service emitted {other:?}"),
        })
        .collect()
}

fn set(k: &str, value: Value) -> KvMutation {
    KvMutation::Set {
        collection: coll("c"),
        key: key(k),
        value,
    }
}

fn check(k: &str, version: Option<i64>) -> KvCheck {
    KvCheck {
        collection: coll("c"),
        key: key(k),
        version,
    }
}

pub async fn every_write_gives_the_key_a_larger_version_never_reused(kv: Kv) {
    let app = kv.add_app("shop").await;
    let ctx = script_ctx(app);
    let (c, k) = (coll("c"), key("k"));
    assert_eq!(kv.service.get_entry(&ctx, &c, &k).await.unwrap(), None);
    let first = kv.service.set(&ctx, &c, &k, json!(1)).await.unwrap();
    let entry = kv.service.get_entry(&ctx, &c, &k).await.unwrap().unwrap();
    assert_eq!((entry.value, entry.version), (json!(1), first));
    let second = kv.service.set(&ctx, &c, &k, json!(1)).await.unwrap();
    assert!(
        second > first,
        "{second} > {first}, even for the same value"
    );
    let counted = kv
        .service
        .incr(&ctx, &c, &k, KvIncrement::Int(1))
        .await
        .unwrap();
    assert!(counted.version > second);
    kv.service.delete(&ctx, &c, &k).await.unwrap();
    let again = kv.service.set(&ctx, &c, &k, json!(1)).await.unwrap();
    assert!(
        again > counted.version,
        "a re-created key does not reuse a version"
    );
    let page = kv.service.list(&ctx, &c, Default::default()).await.unwrap();
    assert_eq!(page.entries[0].version, again);
}

pub async fn a_conditional_set_writes_only_when_its_condition_holds(kv: Kv) {
    let app = kv.add_app("shop").await;
    let ctx = script_ctx(app);
    let (c, k) = (coll("c"), key("k"));
    let created = kv
        .service
        .set_if(&ctx, &c, &k, json!("first"), KvCondition::IfAbsent)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        kv.service
            .set_if(&ctx, &c, &k, json!("again"), KvCondition::IfAbsent)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        kv.service
            .set_if(
                &ctx,
                &c,
                &k,
                json!("stale"),
                KvCondition::IfVersion(created - 1)
            )
            .await
            .unwrap(),
        None
    );
    let replaced = kv
        .service
        .set_if(
            &ctx,
            &c,
            &k,
            json!("second"),
            KvCondition::IfVersion(created),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(replaced > created);
    assert_eq!(
        kv.service.get(&ctx, &c, &k).await.unwrap(),
        Some(json!("second"))
    );
    assert_eq!(
        kv.service
            .set_if(
                &ctx,
                &c,
                &key("none"),
                json!(1),
                KvCondition::IfVersion(created)
            )
            .await
            .unwrap(),
        None,
        "a version condition on an absent key fails"
    );
    let ops = changes(&kv.events());
    assert_eq!(ops.len(), 2, "failed conditions emit nothing: {ops:?}");
}

pub async fn increments_count_from_zero_and_refuse_what_is_not_a_number(kv: Kv) {
    let app = kv.add_app("shop").await;
    let ctx = script_ctx(app);
    let c = coll("counts");
    let one = kv
        .service
        .incr(&ctx, &c, &key("n"), KvIncrement::Int(1))
        .await
        .unwrap();
    assert_eq!(one.value, json!(1));
    let six = kv
        .service
        .incr(&ctx, &c, &key("n"), KvIncrement::Int(5))
        .await
        .unwrap();
    assert_eq!(six.value, json!(6));
    let back = kv
        .service
        .incr(&ctx, &c, &key("n"), KvIncrement::Int(-10))
        .await
        .unwrap();
    assert_eq!(back.value, json!(-4));
    let half = kv
        .service
        .incr(&ctx, &c, &key("f"), KvIncrement::Float(0.5))
        .await
        .unwrap();
    assert_eq!(half.value, json!(0.5));
    kv.service
        .set(&ctx, &c, &key("s"), json!("7"))
        .await
        .unwrap();
    let err = kv
        .service
        .incr(&ctx, &c, &key("s"), KvIncrement::Int(1))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ServiceError::InvalidArgument(
            "value for key 's' is not a number, so it cannot be incremented".to_owned()
        )
    );
    kv.service
        .set(&ctx, &c, &key("max"), json!(i64::MAX))
        .await
        .unwrap();
    let err = kv
        .service
        .incr(&ctx, &c, &key("max"), KvIncrement::Int(1))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("64-bit integer"), "{err}");
    assert_eq!(
        kv.service.get(&ctx, &c, &key("max")).await.unwrap(),
        Some(json!(i64::MAX))
    );
    let events = changes(&kv.events());
    assert_eq!(events[0], (KvOp::Set, "n".into(), Some(json!(1))));
    assert_eq!(events[2], (KvOp::Set, "n".into(), Some(json!(-4))));
    assert_eq!(events.len(), 6, "refused increments emit nothing");
}

pub async fn a_batch_whose_checks_hold_changes_every_key_and_emits_each_change(kv: Kv) {
    let app = kv.add_app("shop").await;
    let ctx = script_ctx(app);
    let c = coll("c");
    let a = kv
        .service
        .set(&ctx, &c, &key("a"), json!("old"))
        .await
        .unwrap();
    kv.service
        .set(&ctx, &c, &key("gone"), json!(true))
        .await
        .unwrap();
    let before = kv.events().len();
    let batch = KvAtomic {
        checks: vec![check("a", Some(a)), check("new", None)],
        mutations: vec![
            set("a", json!("new")),
            set("new", json!(1)),
            KvMutation::Incr {
                collection: coll("c"),
                key: key("new"),
                by: KvIncrement::Int(2),
            },
            KvMutation::Incr {
                collection: coll("c"),
                key: key("counter"),
                by: KvIncrement::Int(1),
            },
            KvMutation::Delete {
                collection: coll("c"),
                key: key("gone"),
            },
            KvMutation::Delete {
                collection: coll("c"),
                key: key("never-was"),
            },
        ],
    };
    assert!(kv.service.commit(&ctx, batch).await.unwrap());
    let get = |k: &'static str| {
        let (service, ctx, c) = (kv.service.clone(), ctx.clone(), c.clone());
        async move { service.get(&ctx, &c, &key(k)).await.unwrap() }
    };
    assert_eq!(get("a").await, Some(json!("new")));
    assert_eq!(get("new").await, Some(json!(3)));
    assert_eq!(get("counter").await, Some(json!(1)));
    assert_eq!(get("gone").await, None);
    assert_eq!(
        changes(&kv.events()[before..]),
        [
            (KvOp::Set, "a".into(), Some(json!("new"))),
            (KvOp::Set, "new".into(), Some(json!(1))),
            (KvOp::Set, "new".into(), Some(json!(3))),
            (KvOp::Set, "counter".into(), Some(json!(1))),
            (KvOp::Delete, "gone".into(), None),
        ]
    );
    // A batch of checks alone changes nothing and says whether they held.
    let held = KvAtomic {
        checks: vec![check("gone", None)],
        mutations: vec![],
    };
    assert!(kv.service.commit(&ctx, held).await.unwrap());
    assert_eq!(
        get("gone").await,
        None,
        "a check of absence leaves the key absent"
    );
}

pub async fn a_batch_whose_check_fails_changes_nothing_and_emits_nothing(kv: Kv) {
    let app = kv.add_app("shop").await;
    let ctx = script_ctx(app);
    let c = coll("c");
    let a = kv
        .service
        .set(&ctx, &c, &key("a"), json!("old"))
        .await
        .unwrap();
    let before = kv.events().len();
    for failing in [
        vec![check("a", Some(a + 1_000))],
        vec![check("a", None)],
        vec![check("absent", Some(a))],
        vec![check("absent", None), check("a", Some(a)), check("a", None)],
    ] {
        let batch = KvAtomic {
            checks: failing.clone(),
            mutations: vec![
                set("a", json!("new")),
                set("absent", json!(1)),
                KvMutation::Delete {
                    collection: coll("c"),
                    key: key("a"),
                },
            ],
        };
        assert!(
            !kv.service.commit(&ctx, batch).await.unwrap(),
            "{failing:?}"
        );
    }
    assert_eq!(
        kv.service.get(&ctx, &c, &key("a")).await.unwrap(),
        Some(json!("old"))
    );
    assert_eq!(
        kv.service
            .get_entry(&ctx, &c, &key("a"))
            .await
            .unwrap()
            .unwrap()
            .version,
        a
    );
    assert_eq!(
        kv.service.get(&ctx, &c, &key("absent")).await.unwrap(),
        None
    );
    assert_eq!(kv.events().len(), before);
    // Refused outright: too many operations, or a value that cannot be stored.
    let err = kv
        .service
        .commit(
            &ctx,
            KvAtomic {
                checks: vec![],
                mutations: vec![set("a", json!(1)); 101],
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::InvalidArgument(_)), "{err:?}");
    let err = kv
        .service
        .commit(
            &ctx,
            KvAtomic {
                checks: vec![],
                mutations: vec![
                    KvMutation::Incr {
                        collection: coll("c"),
                        key: key("counter"),
                        by: KvIncrement::Int(1),
                    },
                    KvMutation::Incr {
                        collection: coll("c"),
                        key: key("a"),
                        by: KvIncrement::Int(1),
                    },
                ],
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is not a number"), "{err}");
    assert_eq!(
        kv.service.get(&ctx, &c, &key("counter")).await.unwrap(),
        None,
        "a change refused mid-batch takes the earlier ones with it"
    );
}
