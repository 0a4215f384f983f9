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
use rhai::{Dynamic, Engine, FuncRegistration, Map};
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

/// Registers `kv::collection` and the handle's methods on `engine`.
pub(crate) fn register(engine: &mut Engine) {
    register_collection(engine, collection);
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
    let name = args::collection_name(&text(name, "collection name")?)?;
    Ok(KvCollection { name })
}

fn kv_key(key: Dynamic) -> RhaiResult<KvKey> {
    let key = text(key, "key")?;
    KvKey::parse(&key).map_err(|e| throw(e.to_string()))
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

#[cfg(test)]
mod tests {
    use rhai::INT;

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
