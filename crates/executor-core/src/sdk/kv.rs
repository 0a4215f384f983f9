//! The `kv` module: `kv::collection(name)` returns a handle whose methods read and change
//! the executing script's own app's entries.
//!
//! ```rhai
//! let users = kv::collection("users");
//! users.set("ada", #{ name: "Ada" });
//! let ada = users.get("ada");          // () when absent
//! let existed = users.delete("ada");   // true when it was there
//! let page = users.list(#{ prefix: "a", limit: 10 });
//! for entry in page.entries { log::info(entry.key); }
//! let next = users.list(#{ prefix: "a", limit: 10, cursor: page.next_cursor });
//! ```
//!
//! Values cross as JSON. Every failure throws a message naming the problem; absence is `()`.

use picloud_shared::{CollectionName, KvKey, KvListOptions};
use rhai::{Dynamic, Engine, EvalAltResult, FuncRegistration, Map, Module, Shared};
use serde_json::{Value, json};

use super::{Call, current, throw};
use crate::json::{dynamic_to_json, json_to_dynamic};

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

/// A handle on one collection of the running script's app. It holds only the validated
/// name: the app always comes from the run, never from the script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KvCollection {
    name: CollectionName,
}

/// Registers `kv::collection` and the handle's methods on `engine`.
pub(crate) fn register(engine: &mut Engine) {
    let mut module = Module::new();
    FuncRegistration::new("collection")
        .with_volatility(true)
        .set_into_module(&mut module, collection);
    engine.register_static_module("kv", Shared::new(module));

    engine.register_type_with_name::<KvCollection>("KvCollection");
    engine.register_get("name", |c: &mut KvCollection| c.name.to_string());
    engine.register_fn("to_string", |c: &mut KvCollection| {
        format!("kv collection '{}'", c.name)
    });
    engine.register_fn("to_debug", |c: &mut KvCollection| {
        format!("kv collection '{}'", c.name)
    });
    // Volatile: each is a side effect or a read of changing data, never to be folded.
    FuncRegistration::new("get")
        .with_volatility(true)
        .register_into_engine(engine, get);
    FuncRegistration::new("set")
        .with_volatility(true)
        .register_into_engine(engine, set);
    FuncRegistration::new("delete")
        .with_volatility(true)
        .register_into_engine(engine, delete);
    FuncRegistration::new("list")
        .with_volatility(true)
        .register_into_engine(engine, list);
    FuncRegistration::new("list")
        .with_volatility(true)
        .register_into_engine(engine, |c: &mut KvCollection| list(c, Map::new()));
}

fn collection(name: Dynamic) -> RhaiResult<KvCollection> {
    let name = text(name, "collection name")?;
    CollectionName::parse(&name)
        .map(|name| KvCollection { name })
        .map_err(|e| throw(e.to_string()))
}

/// A string argument, or a thrown error naming what it should have been.
fn text(value: Dynamic, what: &str) -> RhaiResult<String> {
    if value.is_string() {
        Ok(value.into_string().unwrap_or_default())
    } else {
        Err(throw(format!(
            "{what} must be a string, not {}",
            value.type_name()
        )))
    }
}

fn kv_key(key: Dynamic) -> RhaiResult<KvKey> {
    let key = text(key, "key")?;
    KvKey::parse(&key).map_err(|e| throw(e.to_string()))
}

fn to_script(call: &Call, value: &Value, what: &str) -> RhaiResult<Dynamic> {
    json_to_dynamic(value, call.sizes())
        .map_err(|e| throw(format!("{what} is too large for this script: {e}")))
}

fn get(c: &mut KvCollection, key: Dynamic) -> RhaiResult<Dynamic> {
    let key = kv_key(key)?;
    let call = current()?;
    let kv = &call.services().kv;
    match call.block_on(kv.get(call.ctx(), &c.name, &key))? {
        Some(value) => to_script(&call, &value, &format!("value for key '{key}'")),
        None => Ok(Dynamic::UNIT),
    }
}

fn set(c: &mut KvCollection, key: Dynamic, value: Dynamic) -> RhaiResult<()> {
    let key = kv_key(key)?;
    let value = dynamic_to_json(&value)
        .map_err(|e| throw(format!("value for key '{key}' cannot be stored: {e}")))?;
    let call = current()?;
    let kv = &call.services().kv;
    call.block_on(kv.set(call.ctx(), &c.name, &key, value))
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
    to_script(&call, &page, "this page of entries")
}

/// `#{prefix, limit, cursor}`, each optional; anything else is a mistake worth naming.
fn list_options(options: Map) -> RhaiResult<KvListOptions> {
    let mut parsed = KvListOptions::default();
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
                // Out-of-range values are the service's to refuse, with its own message.
                parsed.limit = u32::try_from(limit.max(0)).unwrap_or(u32::MAX);
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

    fn options(pairs: &[(&str, Dynamic)]) -> Map {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), v.clone()))
            .collect()
    }

    fn message(err: &EvalAltResult) -> String {
        match err {
            EvalAltResult::ErrorRuntime(value, _) => value.to_string(),
            other => panic!("expected a thrown message, got {other:?}"),
        }
    }

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
            KvListOptions {
                prefix: Some("a".to_owned()),
                limit: 5,
                cursor: None,
            }
        );
        assert_eq!(list_options(Map::new()).unwrap(), KvListOptions::default());
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
        assert_eq!(negative.limit, 0, "left for the service to refuse");
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
        let err = kv_key("".into()).unwrap_err();
        assert_eq!(message(&err), "key must not be empty");
    }
}
