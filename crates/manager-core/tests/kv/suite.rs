//! The suite every `KvService` implementation passes.

use picloud_shared::{
    AppId, AppRole, EventSubject, KvListOptions, KvOp, MAX_KV_VALUE_BYTES, Scope, ServiceError,
    ServiceEvent,
};
use serde_json::{Value, json};

use crate::{Kv, coll, key, principal, run_as, script_ctx};

/// `(op, collection, key, value)` of each event.
fn changes(events: &[ServiceEvent]) -> Vec<(KvOp, String, String, Option<Value>)> {
    events
        .iter()
        .map(|e| {
            let EventSubject::Kv {
                collection,
                key,
                op,
                value,
            } = &e.subject
            else {
                panic!("the kv service emitted a {} event", e.subject.kind());
            };
            (*op, collection.clone(), key.clone(), value.clone())
        })
        .collect()
}

fn keys(page: &picloud_shared::KvPage) -> Vec<&str> {
    page.entries.iter().map(|e| e.key.as_str()).collect()
}

fn page(prefix: Option<&str>, limit: u32, cursor: Option<&str>) -> KvListOptions {
    KvListOptions {
        prefix: prefix.map(str::to_owned),
        limit,
        cursor: cursor.map(str::to_owned),
    }
}

pub async fn a_set_value_reads_back_and_a_set_replaces_it(kv: Kv) {
    let app = kv.add_app("shop").await;
    let ctx = script_ctx(app);
    let users = coll("users");
    assert_eq!(
        kv.service.get(&ctx, &users, &key("ada")).await.unwrap(),
        None
    );
    let ada = json!({ "name": "Ada", "born": 1815, "langs": ["en"], "ok": true, "x": null });
    kv.service
        .set(&ctx, &users, &key("ada"), ada.clone())
        .await
        .unwrap();
    assert_eq!(
        kv.service.get(&ctx, &users, &key("ada")).await.unwrap(),
        Some(ada.clone())
    );
    kv.service
        .set(&ctx, &users, &key("ada"), json!(2.5))
        .await
        .unwrap();
    assert_eq!(
        kv.service.get(&ctx, &users, &key("ada")).await.unwrap(),
        Some(json!(2.5))
    );
    // The same key in another collection is another entry.
    assert_eq!(
        kv.service
            .get(&ctx, &coll("admins"), &key("ada"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        changes(&kv.events()),
        [
            (KvOp::Set, "users".into(), "ada".into(), Some(ada)),
            (KvOp::Set, "users".into(), "ada".into(), Some(json!(2.5))),
        ]
    );
}

pub async fn delete_says_whether_the_key_existed_and_only_a_real_delete_emits(kv: Kv) {
    let app = kv.add_app("shop").await;
    let ctx = script_ctx(app);
    let users = coll("users");
    assert!(!kv.service.delete(&ctx, &users, &key("ada")).await.unwrap());
    assert!(kv.events().is_empty(), "deleting nothing emits nothing");
    kv.service
        .set(&ctx, &users, &key("ada"), json!(1))
        .await
        .unwrap();
    assert!(kv.service.delete(&ctx, &users, &key("ada")).await.unwrap());
    assert_eq!(
        kv.service.get(&ctx, &users, &key("ada")).await.unwrap(),
        None
    );
    assert!(!kv.service.delete(&ctx, &users, &key("ada")).await.unwrap());
    assert_eq!(
        changes(&kv.events()),
        [
            (KvOp::Set, "users".into(), "ada".into(), Some(json!(1))),
            (KvOp::Delete, "users".into(), "ada".into(), None),
        ]
    );
    assert!(kv.service.collections(&ctx).await.unwrap().is_empty());
}

pub async fn lists_are_in_byte_order_filtered_by_prefix_and_paged(kv: Kv) {
    let app = kv.add_app("shop").await;
    let ctx = script_ctx(app);
    let c = coll("things");
    // Byte order: uppercase before lowercase, ':' (0x3a) before letters, 'é' after 'z'.
    for (i, k) in [
        "user:bob",
        "user:ada",
        "Zed",
        "userx",
        "é",
        "user:carl",
        "a",
    ]
    .iter()
    .enumerate()
    {
        kv.service.set(&ctx, &c, &key(k), json!(i)).await.unwrap();
    }
    let all = kv
        .service
        .list(&ctx, &c, page(None, 100, None))
        .await
        .unwrap();
    assert_eq!(
        keys(&all),
        [
            "Zed",
            "a",
            "user:ada",
            "user:bob",
            "user:carl",
            "userx",
            "é"
        ]
    );
    assert_eq!(all.entries[2].value, json!(1));
    assert_eq!(all.next_cursor, None);

    let first = kv
        .service
        .list(&ctx, &c, page(Some("user:"), 2, None))
        .await
        .unwrap();
    assert_eq!(keys(&first), ["user:ada", "user:bob"]);
    assert_eq!(first.next_cursor.as_deref(), Some("user:bob"));
    let second = kv
        .service
        .list(
            &ctx,
            &c,
            page(Some("user:"), 2, first.next_cursor.as_deref()),
        )
        .await
        .unwrap();
    assert_eq!(keys(&second), ["user:carl"]);
    assert_eq!(second.next_cursor, None);

    // A cursor alone continues after that key, whether or not it exists.
    let rest = kv
        .service
        .list(&ctx, &c, page(None, 100, Some("user:b")))
        .await
        .unwrap();
    assert_eq!(keys(&rest), ["user:bob", "user:carl", "userx", "é"]);
    let none = kv
        .service
        .list(&ctx, &c, page(Some("nobody"), 100, None))
        .await
        .unwrap();
    assert!(none.entries.is_empty());
    assert_eq!(none.next_cursor, None);
    let empty_prefix = kv
        .service
        .list(&ctx, &c, page(Some(""), 3, None))
        .await
        .unwrap();
    assert_eq!(keys(&empty_prefix), ["Zed", "a", "user:ada"]);
    assert!(
        empty_prefix.entries[0].updated_at <= chrono::Utc::now(),
        "entries carry when they were written"
    );
}

pub async fn a_page_that_ends_the_collection_has_no_cursor(kv: Kv) {
    let app = kv.add_app("shop").await;
    let ctx = script_ctx(app);
    let c = coll("things");
    for k in ["a", "b", "c", "d"] {
        kv.service.set(&ctx, &c, &key(k), json!(k)).await.unwrap();
    }
    let first = kv
        .service
        .list(&ctx, &c, page(None, 2, None))
        .await
        .unwrap();
    assert_eq!(first.next_cursor.as_deref(), Some("b"));
    let last = kv
        .service
        .list(&ctx, &c, page(None, 2, Some("b")))
        .await
        .unwrap();
    assert_eq!(keys(&last), ["c", "d"]);
    assert_eq!(last.next_cursor, None, "no empty page is promised");
}

/// L10: a page of large values stops at about a MiB of values and says where to go on.
pub async fn a_page_of_large_values_is_cut_at_its_byte_budget(kv: Kv) {
    let app = kv.add_app("shop").await;
    let ctx = script_ctx(app);
    let c = coll("blobs");
    // 40 values of 60 KiB: 2.4 MB in all, a page of 1,000 by count.
    let big = "x".repeat(60 * 1024);
    let all: Vec<String> = (0..40).map(|n| format!("k{n:02}")).collect();
    for k in &all {
        kv.service.set(&ctx, &c, &key(k), json!(big)).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor = None::<String>;
    loop {
        let page = kv
            .service
            .list(&ctx, &c, page(None, 1000, cursor.as_deref()))
            .await
            .unwrap();
        let bytes: usize = page.entries.iter().map(|e| e.value.to_string().len()).sum();
        assert!(
            bytes <= picloud_shared::kv::MAX_KV_PAGE_BYTES,
            "a page of {bytes} bytes"
        );
        sizes.push(page.entries.len());
        seen.extend(keys(&page).into_iter().map(str::to_owned));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, all, "every entry exactly once, in order");
    // 17 values of 61,442 bytes (the string and its quotes) fit in a MiB.
    assert_eq!(sizes, [17, 17, 6]);
}

pub async fn collections_are_counted_per_app(kv: Kv) {
    let app = kv.add_app("shop").await;
    let other = kv.add_app("other").await;
    let ctx = script_ctx(app);
    for (c, k) in [
        ("users", "a"),
        ("users", "b"),
        ("orders:2024", "o1"),
        ("Zeta", "z"),
    ] {
        kv.service
            .set(&ctx, &coll(c), &key(k), json!(0))
            .await
            .unwrap();
    }
    kv.service
        .set(&script_ctx(other), &coll("secret"), &key("s"), json!(0))
        .await
        .unwrap();
    let listed: Vec<(String, u64)> = kv
        .service
        .collections(&ctx)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.name.to_string(), c.keys))
        .collect();
    assert_eq!(
        listed,
        [
            ("Zeta".to_owned(), 1),
            ("orders:2024".to_owned(), 1),
            ("users".to_owned(), 2)
        ]
    );
}

pub async fn values_up_to_64_kib_are_accepted_and_one_byte_more_is_refused(kv: Kv) {
    let app = kv.add_app("shop").await;
    let ctx = script_ctx(app);
    let c = coll("big");
    // The compact JSON of a string is its text plus two quotes.
    let fits = json!("x".repeat(MAX_KV_VALUE_BYTES - 2));
    kv.service
        .set(&ctx, &c, &key("fits"), fits.clone())
        .await
        .unwrap();
    assert_eq!(
        kv.service.get(&ctx, &c, &key("fits")).await.unwrap(),
        Some(fits)
    );
    let over = json!("x".repeat(MAX_KV_VALUE_BYTES - 1));
    let err = kv
        .service
        .set(&ctx, &c, &key("over"), over)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "value for key 'over' is 65537 bytes, over the limit of 65536 bytes"
    );
    assert!(matches!(err, ServiceError::TooLarge { .. }));
    assert_eq!(kv.service.get(&ctx, &c, &key("over")).await.unwrap(), None);
    assert_eq!(kv.events().len(), 1, "the refused write emitted nothing");
}

pub async fn values_that_cannot_be_stored_and_bad_list_options_are_refused(kv: Kv) {
    let app = kv.add_app("shop").await;
    let ctx = script_ctx(app);
    let c = coll("c");
    let err = kv
        .service
        .set(&ctx, &c, &key("k"), json!({ "text": "nul\u{0}inside" }))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "value for key 'k' contains a NUL character, which cannot be stored"
    );
    let err = kv
        .service
        .list(&ctx, &c, page(None, 0, None))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "limit must be between 1 and 1000, not 0");
    let err = kv
        .service
        .list(&ctx, &c, page(Some("bad\nprefix"), 10, None))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "prefix must not contain control characters"
    );
    assert!(kv.events().is_empty());
}

pub async fn one_apps_context_never_reaches_another_apps_entries(kv: Kv) {
    let alpha = kv.add_app("alpha").await;
    let beta = kv.add_app("beta").await;
    let (a, b) = (script_ctx(alpha), script_ctx(beta));
    let users = coll("users");
    kv.service
        .set(&a, &users, &key("ada"), json!("alpha's"))
        .await
        .unwrap();
    assert_eq!(kv.service.get(&b, &users, &key("ada")).await.unwrap(), None);
    assert!(
        kv.service
            .list(&b, &users, KvListOptions::default())
            .await
            .unwrap()
            .entries
            .is_empty()
    );
    assert!(kv.service.collections(&b).await.unwrap().is_empty());
    assert!(!kv.service.delete(&b, &users, &key("ada")).await.unwrap());

    kv.service
        .set(&b, &users, &key("ada"), json!("beta's"))
        .await
        .unwrap();
    assert_eq!(
        kv.service.get(&a, &users, &key("ada")).await.unwrap(),
        Some(json!("alpha's"))
    );
    assert!(kv.service.delete(&b, &users, &key("ada")).await.unwrap());
    assert_eq!(
        kv.service.get(&a, &users, &key("ada")).await.unwrap(),
        Some(json!("alpha's"))
    );
    let apps: Vec<AppId> = kv.events().iter().map(|e| e.app_id).collect();
    assert_eq!(apps, [alpha, beta, beta], "each event names its own app");
}

pub async fn a_principal_needs_the_role_and_scope_for_each_call(kv: Kv) {
    let app = kv.add_app("shop").await;
    let other = kv.add_app("other").await;
    let c = coll("users");
    kv.service
        .set(&script_ctx(app), &c, &key("ada"), json!(1))
        .await
        .unwrap();

    let viewer = run_as(app, principal(&[(app, AppRole::Viewer)], &Scope::ALL));
    assert_eq!(
        kv.service.get(&viewer, &c, &key("ada")).await.unwrap(),
        Some(json!(1))
    );
    let err = kv
        .service
        .set(&viewer, &c, &key("ada"), json!(2))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ServiceError::Forbidden("ada lacks data:write in this app".to_owned())
    );
    assert_eq!(
        err.to_string(),
        "permission denied: ada lacks data:write in this app"
    );
    assert!(kv.service.delete(&viewer, &c, &key("ada")).await.is_err());

    // A member of another app only, e.g. removed from this one since registering.
    let gone = run_as(app, principal(&[(other, AppRole::Owner)], &Scope::ALL));
    for err in [
        kv.service.get(&gone, &c, &key("ada")).await.unwrap_err(),
        kv.service
            .list(&gone, &c, KvListOptions::default())
            .await
            .unwrap_err(),
        kv.service.collections(&gone).await.unwrap_err(),
    ] {
        assert_eq!(
            err.to_string(),
            "permission denied: ada has no access to this app any more"
        );
    }

    let no_scope = run_as(
        app,
        principal(&[(app, AppRole::Owner)], &[Scope::ScriptRead]),
    );
    let err = kv
        .service
        .get(&no_scope, &c, &key("ada"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "permission denied: ada lacks data:read in this app"
    );

    let developer = run_as(app, principal(&[(app, AppRole::Developer)], &Scope::ALL));
    kv.service
        .set(&developer, &c, &key("ada"), json!(3))
        .await
        .unwrap();
    assert_eq!(
        kv.service
            .get(&script_ctx(app), &c, &key("ada"))
            .await
            .unwrap(),
        Some(json!(3))
    );
    assert_eq!(kv.events().len(), 2, "refused calls emitted nothing");
}

pub async fn events_carry_the_runs_depth_plus_one_and_its_id(kv: Kv) {
    let app = kv.add_app("shop").await;
    let http = script_ctx(app);
    let triggered = run_as(app, principal(&[(app, AppRole::Developer)], &Scope::ALL));
    let c = coll("c");
    kv.service
        .set(&http, &c, &key("k"), json!(1))
        .await
        .unwrap();
    kv.service.delete(&triggered, &c, &key("k")).await.unwrap();
    let events = kv.events();
    assert_eq!(events.len(), 2);
    assert_eq!(
        (events[0].depth, events[0].causation_id),
        (1, http.execution_id)
    );
    assert_eq!(
        (events[1].depth, events[1].causation_id),
        (3, triggered.execution_id)
    );
    assert!(events.iter().all(|e| e.app_id == app));
}
