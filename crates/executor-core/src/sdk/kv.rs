//! The `kv` module: `kv::collection(name)` returns a handle whose methods read and change
//! the executing script's own app's entries, and `kv::atomic()` a batch of checks and
//! changes that commit together or not at all.
//!
//! ```rhai
//! let users = kv::collection("users");
//! users.set("ada", #{ name: "Ada" });
//! let ada = users.get("ada");          // () when absent
//! let page = users.list(#{ prefix: "a", limit: 10 });
//! for entry in page.entries { log::info(entry.key); }
//! let next = users.list(#{ prefix: "a", limit: 10, cursor: page.next_cursor });
//!
//! // Every write gives its key a new, larger version.
//! let e = users.get_entry("ada");      // #{ value, version }; () when absent
//! // Check-and-set: true when written; false, with nothing written, when the condition
//! // did not hold (another write came first).
//! let won = users.set("ada", #{ name: "Ada L." }, #{ if_version: e.version });
//! let first = users.set("bob", #{ name: "Bob" }, #{ if_absent: true });
//! let existed = users.delete("ada");   // true when it was there
//!
//! // A read-modify-write of one key that cannot lose an update: retry until the write wins.
//! let c = kv::collection("counters");
//! loop { let e = c.get_entry("n"); let n = if e == () { 0 } else { e.value }; if c.set("n", n + 1, if e == () { #{ if_absent: true } } else { #{ if_version: e.version } }) { break; } }
//!
//! // A counter in one step: the new value (an absent key counts as 0).
//! let visits = c.incr("visits");       // by 1
//! let score = c.incr("score", 2.5);    // by an INT (an INT stays one) or a FLOAT
//!
//! // Several keys at once or not at all: commit() is false, and nothing changed, when a
//! // check failed. Here, work done once per event however often the event is delivered.
//! let seen = kv::collection("seen");
//! let done = kv::atomic()
//!     .check(seen, ctx.event.id, ())   // () when the key must be absent, else its version
//!     .set(seen, ctx.event.id, true)
//!     .incr(c, "events")               // or .incr(c, "events", 5)
//!     .delete(users, "bob")
//!     .commit();
//! let batch = kv::atomic();            // or step by step
//! batch.set(c, "a", 1);
//! batch.check(c, "a", ());             // checks see the store before the batch
//! let both = batch.commit();
//! ```
//!
//! Values cross as JSON. Every failure throws a message naming the problem; absence is
//! `()`; a lost race (a condition or check that did not hold) is `false`, never a throw. A
//! batch holds at most 100 checks and changes; each change emits its own event when it
//! commits (a delete only when the key existed), none when a check failed.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use picloud_shared::kv::{MAX_KV_ATOMIC_OPERATIONS, check_kv_value, too_many_operations};
use picloud_shared::{
    CollectionName, KvAtomic, KvCheck, KvCondition, KvIncrement, KvKey, KvListOptions, KvMutation,
};
use rhai::{Dynamic, Engine, FuncRegistration, INT, Map, Module, NativeCallContext};
use serde_json::{Value, json};

use super::args::{self, text};
use super::{CollectionHandle, RhaiResult, current, register_collection, throw};
use crate::json::dynamic_to_json;

/// A handle on one KV collection of the running script's app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KvCollection {
    name: CollectionName,
}

impl CollectionHandle for KvCollection {
    const MODULE: &'static str = "kv";
    const TYPE_NAME: &'static str = "KvCollection";

    fn name(&self) -> &CollectionName {
        &self.name
    }
}

/// What `kv::atomic()` returns: checks and changes gathered until `commit()`.
///
/// Rhai passes a method's receiver by `&mut` and calls the next method of a chain on what
/// the last one returned, so each method adds to the batch in place and returns it too.
/// What it returns is the same batch, not a copy: a copy would copy every value gathered
/// so far at every step (Rhai still holds the previous step's result when the next one
/// runs). So, unlike most Rhai values, `let b2 = b;` names the same batch twice.
#[derive(Debug, Clone, Default)]
pub(crate) struct KvAtomicBatch {
    batch: Arc<Mutex<KvAtomic>>,
}

impl KvAtomicBatch {
    fn lock(&self) -> MutexGuard<'_, KvAtomic> {
        // Nothing that holds the lock can panic, and a batch is plain data anyway.
        self.batch.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `step` and returns the batch. The step that would take it past
    /// [`MAX_KV_ATOMIC_OPERATIONS`] is refused at the line that adds it, in the words the
    /// service would refuse the whole batch with at `commit()`.
    fn add(&mut self, step: Step) -> RhaiResult<Self> {
        {
            let mut batch = self.lock();
            let count = batch.checks.len() + batch.mutations.len() + 1;
            if count > MAX_KV_ATOMIC_OPERATIONS {
                return Err(throw(too_many_operations(count).to_string()));
            }
            match step {
                Step::Check(check) => batch.checks.push(check),
                Step::Change(change) => batch.mutations.push(change),
            }
        }
        Ok(self.clone())
    }
}

impl fmt::Display for KvAtomicBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let batch = self.lock();
        let count =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        write!(
            f,
            "kv atomic batch of {} and {}",
            count(batch.checks.len(), "check", "checks"),
            count(batch.mutations.len(), "change", "changes")
        )
    }
}

/// One step added to a batch.
enum Step {
    Check(KvCheck),
    Change(KvMutation),
}

/// Registers `kv::collection`, `kv::atomic`, the handle's methods and the batch's on
/// `engine`.
pub(crate) fn register(engine: &mut Engine) {
    let mut module = Module::new();
    FuncRegistration::new("atomic")
        .with_volatility(true)
        .set_into_module(&mut module, KvAtomicBatch::default);
    register_collection(engine, collection, module);
    // Volatile: each is a side effect or a read of changing data, never to be folded.
    FuncRegistration::new("get")
        .with_volatility(true)
        .register_into_engine(engine, get);
    FuncRegistration::new("get_entry")
        .with_volatility(true)
        .register_into_engine(engine, get_entry);
    FuncRegistration::new("set")
        .with_volatility(true)
        .register_into_engine(engine, set);
    FuncRegistration::new("set")
        .with_volatility(true)
        .register_into_engine(engine, set_if);
    FuncRegistration::new("incr")
        .with_volatility(true)
        .register_into_engine(engine, incr);
    FuncRegistration::new("incr")
        .with_volatility(true)
        .register_into_engine(engine, |c: &mut KvCollection, key: Dynamic| {
            incr(c, key, Dynamic::from(1 as INT))
        });
    FuncRegistration::new("delete")
        .with_volatility(true)
        .register_into_engine(engine, delete);
    FuncRegistration::new("list")
        .with_volatility(true)
        .register_into_engine(engine, list);
    FuncRegistration::new("list")
        .with_volatility(true)
        .register_into_engine(engine, |c: &mut KvCollection| list(c, Map::new()));
    register_batch(engine);
}

/// The batch's type and methods. Only `commit` reaches the service; the others change
/// the batch, so none may be folded either.
fn register_batch(engine: &mut Engine) {
    engine.register_type_with_name::<KvAtomicBatch>("KvAtomicBatch");
    let shown = |b: &mut KvAtomicBatch| b.to_string();
    engine.register_fn("to_string", shown);
    engine.register_fn("to_debug", shown);
    FuncRegistration::new("check")
        .with_volatility(true)
        .register_into_engine(engine, batch_check);
    FuncRegistration::new("set")
        .with_volatility(true)
        .register_into_engine(engine, batch_set);
    FuncRegistration::new("delete")
        .with_volatility(true)
        .register_into_engine(engine, batch_delete);
    FuncRegistration::new("incr")
        .with_volatility(true)
        .register_into_engine(engine, batch_incr);
    FuncRegistration::new("incr")
        .with_volatility(true)
        .register_into_engine(
            engine,
            |ctx: NativeCallContext, b: &mut KvAtomicBatch, c: Dynamic, key: Dynamic| {
                batch_incr(ctx, b, c, key, Dynamic::from(1 as INT))
            },
        );
    FuncRegistration::new("commit")
        .with_volatility(true)
        .register_into_engine(engine, commit);
}

fn collection(name: Dynamic) -> RhaiResult<KvCollection> {
    let name = args::collection_name(&text(name, "collection name")?)?;
    Ok(KvCollection { name })
}

fn kv_key(key: Dynamic) -> RhaiResult<KvKey> {
    let key = text(key, "key")?;
    KvKey::parse(&key).map_err(|e| throw(e.to_string()))
}

/// A script value as the JSON to store under `key` (the service checks its size).
fn kv_value(key: &KvKey, value: &Dynamic) -> RhaiResult<Value> {
    dynamic_to_json(value)
        .map_err(|e| throw(format!("value for key '{key}' cannot be stored: {e}")))
}

fn get(c: &mut KvCollection, key: Dynamic) -> RhaiResult<Dynamic> {
    let key = kv_key(key)?;
    let call = current()?;
    let kv = &call.services().kv;
    match call.block_on(kv.get(call.ctx(), &c.name, &key))? {
        Some(value) => call.to_script(&value, &format!("value for key '{key}'")),
        None => Ok(Dynamic::UNIT),
    }
}

fn get_entry(c: &mut KvCollection, key: Dynamic) -> RhaiResult<Dynamic> {
    let key = kv_key(key)?;
    let call = current()?;
    let kv = &call.services().kv;
    match call.block_on(kv.get_entry(call.ctx(), &c.name, &key))? {
        Some(entry) => call.to_script(
            &json!({ "value": entry.value, "version": entry.version }),
            &format!("value for key '{key}'"),
        ),
        None => Ok(Dynamic::UNIT),
    }
}

fn set(c: &mut KvCollection, key: Dynamic, value: Dynamic) -> RhaiResult<()> {
    let key = kv_key(key)?;
    let value = kv_value(&key, &value)?;
    let call = current()?;
    let kv = &call.services().kv;
    call.block_on(kv.set(call.ctx(), &c.name, &key, value))
        .map(|_version| ())
}

/// `set(key, value, #{ if_version: n })` or `#{ if_absent: true }`: whether it wrote.
fn set_if(
    c: &mut KvCollection,
    key: Dynamic,
    value: Dynamic,
    options: Dynamic,
) -> RhaiResult<bool> {
    let key = kv_key(key)?;
    let condition = set_condition(options)?;
    let value = kv_value(&key, &value)?;
    let call = current()?;
    let kv = &call.services().kv;
    let written = call.block_on(kv.set_if(call.ctx(), &c.name, &key, value, condition))?;
    Ok(written.is_some())
}

/// The options of a conditional `set`: exactly one of `if_version` (an integer) and
/// `if_absent` (`true`); anything else is a mistake worth naming.
fn set_condition(options: Dynamic) -> RhaiResult<KvCondition> {
    let type_name = options.type_name();
    let options = options
        .try_cast::<Map>()
        .ok_or_else(|| throw(format!("set options must be a map, not {type_name}")))?;
    let mut condition = None;
    for (name, value) in options {
        let this = match name.as_str() {
            "if_version" => KvCondition::IfVersion(value.as_int().map_err(|type_name| {
                throw(format!(
                    "set option 'if_version' must be an integer, not {type_name}"
                ))
            })?),
            "if_absent" if value.as_bool() == Ok(true) => KvCondition::IfAbsent,
            "if_absent" => {
                let shown = if value.is_bool() {
                    "false".to_owned()
                } else {
                    value.type_name().to_owned()
                };
                return Err(throw(format!(
                    "set option 'if_absent' can only be true, not {shown} (to write \
                     whatever is there, call set(key, value))"
                )));
            }
            other => {
                return Err(throw(format!(
                    "unknown set option '{other}' (expected if_version or if_absent)"
                )));
            }
        };
        if condition.replace(this).is_some() {
            return Err(throw(
                "set options if_version and if_absent cannot be used together",
            ));
        }
    }
    condition.ok_or_else(|| {
        throw(
            "set options need if_version or if_absent (to write whatever is there, call \
             set(key, value))",
        )
    })
}

/// `incr(key, by)`: the new value.
fn incr(c: &mut KvCollection, key: Dynamic, by: Dynamic) -> RhaiResult<Dynamic> {
    let key = kv_key(key)?;
    let by = increment(by)?;
    let call = current()?;
    let kv = &call.services().kv;
    let entry = call.block_on(kv.incr(call.ctx(), &c.name, &key, by))?;
    call.to_script(&entry.value, &format!("value for key '{key}'"))
}

/// An amount to add: an INT stays whole, a FLOAT does not.
fn increment(by: Dynamic) -> RhaiResult<KvIncrement> {
    if let Ok(whole) = by.as_int() {
        return Ok(KvIncrement::Int(whole));
    }
    by.as_float().map(KvIncrement::Float).map_err(|type_name| {
        throw(format!(
            "incr amount must be an integer or a float, not {type_name}"
        ))
    })
}

fn delete(c: &mut KvCollection, key: Dynamic) -> RhaiResult<bool> {
    let key = kv_key(key)?;
    let call = current()?;
    let kv = &call.services().kv;
    call.block_on(kv.delete(call.ctx(), &c.name, &key))
}

fn list(c: &mut KvCollection, options: Map) -> RhaiResult<Dynamic> {
    let options = list_options(options)?;
    let call = current()?;
    let kv = &call.services().kv;
    let page = call.block_on(kv.list(call.ctx(), &c.name, options))?;
    // Converted as one value, so the page as a whole must fit the sandbox's size limits.
    let entries: Vec<Value> = page
        .entries
        .into_iter()
        .map(|entry| json!({ "key": entry.key.as_str(), "value": entry.value }))
        .collect();
    let page = json!({ "entries": entries, "next_cursor": page.next_cursor });
    call.to_script(&page, "this page of entries")
}

/// `#{prefix, limit, cursor}`, each optional; anything else is a mistake worth naming.
fn list_options(options: Map) -> RhaiResult<KvListOptions> {
    let asked = args::list_options(options)?;
    let default = KvListOptions::default();
    Ok(KvListOptions {
        prefix: asked.prefix,
        limit: asked.limit.unwrap_or(default.limit),
        cursor: asked.cursor,
    })
}

/// The collection and key a batch's step names: a `kv::collection(…)` handle (whose app
/// is the run's, like every call's) and a key.
fn target(
    ctx: &NativeCallContext,
    c: Dynamic,
    key: Dynamic,
) -> RhaiResult<(CollectionName, KvKey)> {
    let type_name = ctx.engine().map_type_name(c.type_name()).to_owned();
    let c = c.try_cast::<KvCollection>().ok_or_else(|| {
        throw(format!(
            "an atomic batch's collection must be a kv collection (kv::collection(name)), \
             not {type_name}"
        ))
    })?;
    Ok((c.name, kv_key(key)?))
}

/// The version a check wants: `()` for none (the key must be absent), else an integer.
fn expected_version(version: Dynamic) -> RhaiResult<Option<i64>> {
    if version.is_unit() {
        return Ok(None);
    }
    version.as_int().map(Some).map_err(|type_name| {
        throw(format!(
            "the version to check must be an integer, or () for a key that must be \
             absent, not {type_name}"
        ))
    })
}

fn batch_check(
    ctx: NativeCallContext,
    b: &mut KvAtomicBatch,
    c: Dynamic,
    key: Dynamic,
    version: Dynamic,
) -> RhaiResult<KvAtomicBatch> {
    let (collection, key) = target(&ctx, c, key)?;
    let version = expected_version(version)?;
    b.add(Step::Check(KvCheck {
        collection,
        key,
        version,
    }))
}

fn batch_set(
    ctx: NativeCallContext,
    b: &mut KvAtomicBatch,
    c: Dynamic,
    key: Dynamic,
    value: Dynamic,
) -> RhaiResult<KvAtomicBatch> {
    let (collection, key) = target(&ctx, c, key)?;
    let value = kv_value(&key, &value)?;
    // Checked here too, so a value too large throws at the line that adds it.
    check_kv_value(&key, &value).map_err(|e| throw(e.to_string()))?;
    b.add(Step::Change(KvMutation::Set {
        collection,
        key,
        value,
    }))
}

fn batch_delete(
    ctx: NativeCallContext,
    b: &mut KvAtomicBatch,
    c: Dynamic,
    key: Dynamic,
) -> RhaiResult<KvAtomicBatch> {
    let (collection, key) = target(&ctx, c, key)?;
    b.add(Step::Change(KvMutation::Delete { collection, key }))
}

fn batch_incr(
    ctx: NativeCallContext,
    b: &mut KvAtomicBatch,
    c: Dynamic,
    key: Dynamic,
    by: Dynamic,
) -> RhaiResult<KvAtomicBatch> {
    let (collection, key) = target(&ctx, c, key)?;
    let by = increment(by)?;
    b.add(Step::Change(KvMutation::Incr {
        collection,
        key,
        by,
    }))
}

/// Commits the batch: whether every check held (when one did not, nothing changed).
fn commit(b: &mut KvAtomicBatch) -> RhaiResult<bool> {
    let call = current()?;
    let kv = &call.services().kv;
    // A copy: the batch stays as it was, to be committed again if the script wants.
    let batch = b.lock().clone();
    call.block_on(kv.commit(call.ctx(), batch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdk::testing::{map as options, message};

    #[test]
    fn list_options_fill_in_the_kv_defaults() {
        assert_eq!(list_options(Map::new()).unwrap(), KvListOptions::default());
        let asked = list_options(options(&[
            ("cursor", "u:bob".into()),
            ("limit", Dynamic::UNIT),
        ]));
        assert_eq!(
            asked.unwrap(),
            KvListOptions {
                cursor: Some("u:bob".to_owned()),
                ..KvListOptions::default()
            }
        );
        let limited = list_options(options(&[("limit", Dynamic::from(7 as INT))]));
        assert_eq!(limited.unwrap().limit, 7);
        // Mistakes are named by the shared parser (`args`), and tested there.
        let err = list_options(options(&[("limt", Dynamic::from(5 as INT))])).unwrap_err();
        assert_eq!(
            message(&err),
            "unknown list option 'limt' (expected prefix, limit or cursor)"
        );
    }

    #[test]
    fn set_options_hold_exactly_one_condition() {
        let condition = |pairs: &[(&str, Dynamic)]| set_condition(options(pairs).into());
        assert_eq!(
            condition(&[("if_version", Dynamic::from(7 as INT))]).unwrap(),
            KvCondition::IfVersion(7)
        );
        assert_eq!(
            condition(&[("if_absent", Dynamic::TRUE)]).unwrap(),
            KvCondition::IfAbsent
        );
        let refused = [
            (
                condition(&[
                    ("if_version", Dynamic::from(7 as INT)),
                    ("if_absent", Dynamic::TRUE),
                ]),
                "set options if_version and if_absent cannot be used together",
            ),
            (
                condition(&[]),
                "set options need if_version or if_absent (to write whatever is there, \
                 call set(key, value))",
            ),
            (
                condition(&[("if_versoin", Dynamic::from(7 as INT))]),
                "unknown set option 'if_versoin' (expected if_version or if_absent)",
            ),
            (
                condition(&[("if_version", "7".into())]),
                "set option 'if_version' must be an integer, not string",
            ),
            (
                condition(&[("if_version", Dynamic::UNIT)]),
                "set option 'if_version' must be an integer, not ()",
            ),
            (
                condition(&[("if_absent", Dynamic::FALSE)]),
                "set option 'if_absent' can only be true, not false (to write whatever is \
                 there, call set(key, value))",
            ),
            (
                condition(&[("if_absent", Dynamic::from(1 as INT))]),
                "set option 'if_absent' can only be true, not i64 (to write whatever is \
                 there, call set(key, value))",
            ),
            (
                set_condition(Dynamic::from(7 as INT)),
                "set options must be a map, not i64",
            ),
            (
                set_condition(Dynamic::UNIT),
                "set options must be a map, not ()",
            ),
        ];
        for (outcome, expected) in refused {
            assert_eq!(message(&outcome.unwrap_err()), expected);
        }
    }

    #[test]
    fn amounts_and_versions_are_integers_or_what_they_say() {
        assert_eq!(
            increment(Dynamic::from(-3 as INT)).unwrap(),
            KvIncrement::Int(-3)
        );
        assert_eq!(
            increment(Dynamic::from(0.5)).unwrap(),
            KvIncrement::Float(0.5)
        );
        for (by, type_name) in [("1".into(), "string"), (Dynamic::UNIT, "()")] {
            assert_eq!(
                message(&increment(by).unwrap_err()),
                format!("incr amount must be an integer or a float, not {type_name}")
            );
        }
        assert_eq!(expected_version(Dynamic::UNIT).unwrap(), None);
        assert_eq!(
            expected_version(Dynamic::from(12 as INT)).unwrap(),
            Some(12)
        );
        assert_eq!(
            message(&expected_version(Dynamic::from(1.0)).unwrap_err()),
            "the version to check must be an integer, or () for a key that must be absent, \
             not f64"
        );
    }

    /// An engine with the `kv` module and nothing else: enough to build batches, which
    /// reach no service until `commit()`.
    fn engine() -> Engine {
        let mut engine = Engine::new();
        register(&mut engine);
        engine
    }

    fn built(source: &str) -> KvAtomic {
        let batch: KvAtomicBatch = engine().eval(source).unwrap();
        batch.lock().clone()
    }

    #[test]
    fn a_batch_is_built_chained_or_step_by_step_alike() {
        let c = CollectionName::parse("c").unwrap();
        let d = CollectionName::parse("d").unwrap();
        let key = |k: &str| KvKey::parse(k).unwrap();
        let expected = KvAtomic {
            checks: vec![
                KvCheck {
                    collection: c.clone(),
                    key: key("seen"),
                    version: None,
                },
                KvCheck {
                    collection: d.clone(),
                    key: key("v"),
                    version: Some(4),
                },
            ],
            mutations: vec![
                KvMutation::Set {
                    collection: c.clone(),
                    key: key("seen"),
                    value: json!({ "at": [1, 2.5, "x", null] }),
                },
                KvMutation::Incr {
                    collection: d.clone(),
                    key: key("n"),
                    by: KvIncrement::Int(1),
                },
                KvMutation::Incr {
                    collection: d.clone(),
                    key: key("f"),
                    by: KvIncrement::Float(0.5),
                },
                KvMutation::Delete {
                    collection: c,
                    key: key("old"),
                },
            ],
        };
        let setup = r#"let c = kv::collection("c"); let d = kv::collection("d");"#;
        let chained = built(&format!(
            r#"{setup} kv::atomic().check(c, "seen", ()).set(c, "seen", #{{ at: [1, 2.5, "x", ()] }})
               .incr(d, "n").check(d, "v", 4).incr(d, "f", 0.5).delete(c, "old")"#
        ));
        assert_eq!(chained, expected);
        let stepwise = built(&format!(
            r#"{setup} let b = kv::atomic();
               b.check(c, "seen", ());
               b.set(c, "seen", #{{ at: [1, 2.5, "x", ()] }});
               b.incr(d, "n");
               b.check(d, "v", 4);
               b.incr(d, "f", 0.5);
               b.delete(c, "old");
               b"#
        ));
        assert_eq!(stepwise, expected);

        let shown: String = engine()
            .eval(r#"let b = kv::atomic(); let same = b; same.delete(kv::collection("c"), "k"); `${b}`"#)
            .unwrap();
        assert_eq!(
            shown, "kv atomic batch of 0 checks and 1 change",
            "a batch is one object, whatever names it"
        );
    }

    #[test]
    fn a_batch_refuses_bad_steps_where_they_are_added() {
        let attempt = |step: &str| {
            let source = format!(r#"let c = kv::collection("c"); let b = kv::atomic(); {step}"#);
            let err = engine().eval::<Dynamic>(&source).unwrap_err();
            message(&err)
        };
        assert_eq!(
            attempt(r#"b.set("c", "k", 1)"#),
            "an atomic batch's collection must be a kv collection (kv::collection(name)), \
             not string"
        );
        assert_eq!(attempt(r#"b.delete(c, "")"#), "key must not be empty");
        assert_eq!(
            attempt(r#"b.check(c, "k", "1")"#),
            "the version to check must be an integer, or () for a key that must be absent, \
             not string"
        );
        assert_eq!(
            attempt(r#"b.incr(c, "k", "1")"#),
            "incr amount must be an integer or a float, not string"
        );
        assert_eq!(
            attempt(r#"b.set(c, "f", || 1)"#),
            "value for key 'f' cannot be stored: a value of type 'Fn' cannot be converted to JSON"
        );
        assert_eq!(
            attempt(r#"let big = "x"; big.pad(65535, 'x'); b.set(c, "big", big)"#),
            "value for key 'big' is 65537 bytes, over the limit of 65536 bytes"
        );
        assert_eq!(
            attempt(
                r#"for i in 0..50 { b.check(c, `k${i}`, ()); b.set(c, `k${i}`, i); }
                   b.delete(c, "one too many")"#
            ),
            "an atomic batch holds 101 checks and changes, over the limit of 100"
        );
        // The refused step is not added: the batch still holds its 100.
        let full: KvAtomicBatch = engine()
            .eval(
                r#"let c = kv::collection("c"); let b = kv::atomic();
                   for i in 0..100 { b.delete(c, `k${i}`); }
                   try { b.delete(c, "k"); } catch {}
                   b"#,
            )
            .unwrap();
        assert_eq!(full.lock().mutations.len(), MAX_KV_ATOMIC_OPERATIONS);
    }

    #[test]
    fn collection_names_and_keys_are_validated_before_any_call() {
        let err = collection("bad name".into()).unwrap_err();
        assert_eq!(
            message(&err),
            "collection name may contain only ASCII letters, digits, '_', '-', '.' and ':'"
        );
        let err = collection(Dynamic::from(3 as INT)).unwrap_err();
        assert_eq!(message(&err), "collection name must be a string, not i64");
        // Unlike `files::collection`, which says it is required.
        let err = collection(Dynamic::UNIT).unwrap_err();
        assert_eq!(message(&err), "collection name must be a string, not ()");
        let err = kv_key("".into()).unwrap_err();
        assert_eq!(message(&err), "key must not be empty");
    }
}
