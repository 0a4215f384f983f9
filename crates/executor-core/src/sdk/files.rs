//! The `files` module: `files::collection(name)` returns a handle whose methods store, read
//! and remove the executing script's own app's files.
//!
//! ```rhai
//! let avatars = files::collection("avatars");
//! let info = avatars.create("ada.png", png, #{ content_type: "image/png", metadata: #{ owner: "ada" } });
//! avatars.create("notes.txt", "some text");      // a string is stored as its UTF-8 bytes
//! let meta = avatars.head("ada.png");            // () when absent
//! let bytes = avatars.get("ada.png");            // a blob; () when absent
//! avatars.update("ada.png", smaller, #{ content_type: "image/png" });
//! let existed = avatars.delete("ada.png");       // true when it was there
//! let page = avatars.list(#{ prefix: "a", limit: 10 });
//! for file in page.files { log::info(`${file.name}: ${file.size} bytes`); }
//! let next = avatars.list(#{ prefix: "a", limit: 10, cursor: page.next_cursor });
//! ```
//!
//! A file is described by a map of its `collection`, `name`, `size`, `content_type`,
//! `sha256`, `metadata`, `version`, `created_at` and `updated_at` (what `head` and `list`
//! answer, and what `create` and `update` return). `create` throws when the file exists and
//! `update` when it does not; both set the content type (unless given: `text/plain;
//! charset=utf-8` for a string, `application/octet-stream` for a blob) and replace the
//! metadata (none unless given).
//!
//! A file `get` reads becomes a blob in the script's memory, so one larger than the run may
//! still hold (`max_memory_bytes` less what it holds already) or than a blob may be
//! (`max_array_size`) is refused before a byte is read. Every failure throws a message
//! naming the problem; absence is `()`.

use std::collections::BTreeMap;

use bytes::Bytes;
use picloud_shared::files::read_to_vec;
use picloud_shared::{
    ByteStream, CollectionName, ContentType, FileInfo, FileListOptions, FileMetadata, FileName,
    FileWrite, WriteMode,
};
use rhai::{Dynamic, Engine, FuncRegistration, Map, Module};
use serde_json::{Value, json};

use super::args::{self, text};
use super::{Call, CollectionHandle, RhaiResult, current, register_collection, throw};
use crate::run_state;

/// The content type of a file written from a string without one.
const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// A handle on one collection of the running script's app's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FilesCollection {
    name: CollectionName,
}

impl CollectionHandle for FilesCollection {
    const MODULE: &'static str = "files";
    const TYPE_NAME: &'static str = "FilesCollection";

    fn name(&self) -> &CollectionName {
        &self.name
    }
}

/// Registers `files::collection` and the handle's methods on `engine`.
pub(crate) fn register(engine: &mut Engine) {
    register_collection(engine, collection, Module::new());
    // Volatile: each is a side effect or a read of changing data, never to be folded.
    FuncRegistration::new("create")
        .with_volatility(true)
        .register_into_engine(engine, |c: &mut FilesCollection, name, content, options| {
            write(c, WriteMode::Create, name, content, options)
        });
    FuncRegistration::new("create")
        .with_volatility(true)
        .register_into_engine(engine, |c: &mut FilesCollection, name, content| {
            write(c, WriteMode::Create, name, content, Dynamic::UNIT)
        });
    FuncRegistration::new("update")
        .with_volatility(true)
        .register_into_engine(engine, |c: &mut FilesCollection, name, content, options| {
            write(c, WriteMode::Update, name, content, options)
        });
    FuncRegistration::new("update")
        .with_volatility(true)
        .register_into_engine(engine, |c: &mut FilesCollection, name, content| {
            write(c, WriteMode::Update, name, content, Dynamic::UNIT)
        });
    FuncRegistration::new("head")
        .with_volatility(true)
        .register_into_engine(engine, head);
    FuncRegistration::new("get")
        .with_volatility(true)
        .register_into_engine(engine, get);
    FuncRegistration::new("delete")
        .with_volatility(true)
        .register_into_engine(engine, delete);
    FuncRegistration::new("list")
        .with_volatility(true)
        .register_into_engine(engine, list);
    FuncRegistration::new("list")
        .with_volatility(true)
        .register_into_engine(engine, |c: &mut FilesCollection| list(c, Dynamic::UNIT));
}

fn collection(name: Dynamic) -> RhaiResult<FilesCollection> {
    let name = args::collection_name(&required_text(name, "collection name")?)?;
    Ok(FilesCollection { name })
}

/// A string argument the call cannot do without, or a thrown error naming what it should
/// have been.
fn required_text(value: Dynamic, what: &str) -> RhaiResult<String> {
    if value.is_unit() {
        return Err(throw(format!("{what} is required")));
    }
    text(value, what)
}

fn file_name(name: Dynamic) -> RhaiResult<FileName> {
    let name = required_text(name, "file name")?;
    FileName::parse(&name).map_err(|e| throw(e.to_string()))
}

/// A map of options, `()` for none.
fn options_map(options: Dynamic, what: &str) -> RhaiResult<Map> {
    if options.is_unit() {
        return Ok(Map::new());
    }
    let type_name = options.type_name();
    options
        .try_cast::<Map>()
        .ok_or_else(|| throw(format!("{what} must be a map, not {type_name}")))
}

/// What a file is written from: a blob's bytes, or a string's UTF-8 bytes (which are
/// text unless the script says otherwise).
#[derive(Debug, PartialEq, Eq)]
struct Content {
    bytes: Vec<u8>,
    is_text: bool,
}

fn file_content(value: Dynamic) -> RhaiResult<Content> {
    const WHAT: &str = "file content";
    if value.is_unit() {
        return Err(throw(format!("{WHAT} is required (a blob or a string)")));
    }
    if value.is_blob() {
        let bytes = value.into_blob().map_err(|type_name| {
            throw(format!(
                "{WHAT} must be a blob or a string, not {type_name}"
            ))
        })?;
        return Ok(Content {
            bytes,
            is_text: false,
        });
    }
    value
        .into_string()
        .map(|text| Content {
            bytes: text.into_bytes(),
            is_text: true,
        })
        .map_err(|type_name| {
            throw(format!(
                "{WHAT} must be a blob or a string, not {type_name}"
            ))
        })
}

/// What `create` and `update` store beside the bytes.
#[derive(Debug, Default, PartialEq, Eq)]
struct WriteOptions {
    content_type: Option<ContentType>,
    metadata: FileMetadata,
}

/// `#{content_type, metadata}`, each optional; anything else is a mistake worth naming.
/// `method` (`create`, `update`) names the call in messages.
fn write_options(options: Dynamic, method: &str) -> RhaiResult<WriteOptions> {
    let options = options_map(options, &format!("{method} options"))?;
    let mut parsed = WriteOptions::default();
    for (name, value) in options {
        let what = format!("{method} option '{name}'");
        match name.as_str() {
            "content_type" | "metadata" if value.is_unit() => {}
            "content_type" => {
                let raw = text(value, &what)?;
                let content_type = ContentType::parse(&raw).map_err(|e| throw(e.to_string()))?;
                parsed.content_type = Some(content_type);
            }
            "metadata" => parsed.metadata = metadata(value, &what)?,
            other => {
                return Err(throw(format!(
                    "unknown {method} option '{other}' (expected content_type or metadata)"
                )));
            }
        }
    }
    Ok(parsed)
}

/// A map of string values, validated as a file's metadata.
fn metadata(value: Dynamic, what: &str) -> RhaiResult<FileMetadata> {
    let type_name = value.type_name();
    let map = value
        .try_cast::<Map>()
        .ok_or_else(|| throw(format!("{what} must be a map, not {type_name}")))?;
    let entries = map
        .into_iter()
        .map(|(name, value)| {
            let value = text(value, &format!("metadata entry '{name}'"))?;
            Ok((name.to_string(), value))
        })
        .collect::<RhaiResult<BTreeMap<_, _>>>()?;
    FileMetadata::new(entries).map_err(|e| throw(e.to_string()))
}

/// A single-chunk body: the bytes are already whole in the script's memory.
fn body(bytes: Vec<u8>) -> ByteStream {
    Box::pin(futures_util::stream::once(
        async move { Ok(Bytes::from(bytes)) },
    ))
}

fn info_to_script(call: &Call, info: &FileInfo) -> RhaiResult<Dynamic> {
    call.to_script(
        &info.to_json(),
        &format!("metadata of file '{}'", info.name),
    )
}

fn write(
    c: &mut FilesCollection,
    mode: WriteMode,
    name: Dynamic,
    content: Dynamic,
    options: Dynamic,
) -> RhaiResult<Dynamic> {
    let method = match mode {
        WriteMode::Create => "create",
        WriteMode::Update | WriteMode::Upsert => "update",
    };
    let name = file_name(name)?;
    let content = file_content(content)?;
    let options = write_options(options, method)?;
    let content_type = match options.content_type {
        None if content.is_text => ContentType::parse(TEXT_CONTENT_TYPE).ok(),
        given => given,
    };
    let write = FileWrite {
        mode,
        content_type,
        metadata: options.metadata,
        expected_size: Some(u64::try_from(content.bytes.len()).unwrap_or(u64::MAX)),
    };
    let call = current()?;
    let files = &call.services().files;
    let info =
        call.block_on(files.write(call.ctx(), &c.name, &name, write, body(content.bytes)))?;
    info_to_script(&call, &info)
}

fn head(c: &mut FilesCollection, name: Dynamic) -> RhaiResult<Dynamic> {
    let name = file_name(name)?;
    let call = current()?;
    let files = &call.services().files;
    match call.block_on(files.head(call.ctx(), &c.name, &name))? {
        Some(info) => info_to_script(&call, &info),
        None => Ok(Dynamic::UNIT),
    }
}

fn get(c: &mut FilesCollection, name: Dynamic) -> RhaiResult<Dynamic> {
    let name = file_name(name)?;
    let call = current()?;
    let files = &call.services().files;
    let Some(download) = call.block_on(files.open(call.ctx(), &c.name, &name))? else {
        return Ok(Dynamic::UNIT);
    };
    let limit = read_limit(&call, &name, download.info.size)?;
    // Polled on this thread, so the bytes are counted against the run's memory as they
    // arrive.
    let bytes = call.block_on(read_to_vec(download, limit, &format!("file '{name}'")))?;
    Ok(Dynamic::from_blob(bytes))
}

/// The most bytes a file read now may have: what a blob may hold and what the run may
/// still allocate. A file of `size` over it is refused, naming the limit it would break.
fn read_limit(call: &Call, name: &FileName, size: u64) -> RhaiResult<u64> {
    let as_u64 = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    let blob_limit = call.sizes().max_array_size;
    if size > as_u64(blob_limit) {
        return Err(throw(format!(
            "file '{name}' is {size} bytes, over the limit of {blob_limit} bytes of a blob \
             (max_array_size)"
        )));
    }
    let memory_left = run_state::memory_left();
    if size > as_u64(memory_left) {
        return Err(throw(format!(
            "file '{name}' is {size} bytes, more than the {memory_left} bytes of memory this \
             run has left (max_memory_bytes)"
        )));
    }
    Ok(as_u64(blob_limit.min(memory_left)))
}

fn delete(c: &mut FilesCollection, name: Dynamic) -> RhaiResult<bool> {
    let name = file_name(name)?;
    let call = current()?;
    let files = &call.services().files;
    call.block_on(files.delete(call.ctx(), &c.name, &name))
}

fn list(c: &mut FilesCollection, options: Dynamic) -> RhaiResult<Dynamic> {
    let options = list_options(options, &c.name)?;
    let call = current()?;
    let files = &call.services().files;
    let page = call.block_on(files.list(call.ctx(), options))?;
    // Converted as one value, so the page as a whole must fit the sandbox's size limits.
    let listed: Vec<Value> = page.files.iter().map(FileInfo::to_json).collect();
    let page = json!({ "files": listed, "next_cursor": page.next_cursor });
    call.to_script(&page, "this page of files")
}

/// `#{prefix, limit, cursor}`, each optional, within `collection`; anything else is a
/// mistake worth naming.
fn list_options(options: Dynamic, collection: &CollectionName) -> RhaiResult<FileListOptions> {
    let asked = args::list_options(options_map(options, "list options")?)?;
    let default = FileListOptions::default();
    Ok(FileListOptions {
        collection: Some(collection.clone()),
        prefix: asked.prefix,
        limit: asked.limit.unwrap_or(default.limit),
        cursor: asked.cursor,
    })
}

#[cfg(test)]
mod tests {
    use picloud_shared::files::DEFAULT_FILE_LIST_LIMIT;
    use rhai::{Blob, INT};

    use super::*;
    use crate::sdk::testing::message;

    fn map(pairs: &[(&str, Dynamic)]) -> Dynamic {
        Dynamic::from_map(crate::sdk::testing::map(pairs))
    }

    fn avatars() -> CollectionName {
        CollectionName::parse("avatars").unwrap()
    }

    #[test]
    fn write_options_are_read_and_mistakes_named() {
        let parsed = write_options(
            map(&[
                ("content_type", "image/png".into()),
                ("metadata", map(&[("owner", "ada".into())])),
            ]),
            "create",
        )
        .unwrap();
        assert_eq!(
            parsed,
            WriteOptions {
                content_type: Some(ContentType::parse("image/png").unwrap()),
                metadata: FileMetadata::new(BTreeMap::from([(
                    "owner".to_owned(),
                    "ada".to_owned()
                )]))
                .unwrap(),
            }
        );
        assert_eq!(
            write_options(Dynamic::UNIT, "create").unwrap(),
            WriteOptions::default()
        );
        assert_eq!(
            write_options(
                map(&[("content_type", Dynamic::UNIT), ("metadata", Dynamic::UNIT)]),
                "update"
            )
            .unwrap(),
            WriteOptions::default(),
            "() is the same as leaving an option out"
        );

        let refused =
            |options: Dynamic, method: &str| message(&write_options(options, method).unwrap_err());
        assert_eq!(
            refused(map(&[("contentType", "image/png".into())]), "update"),
            "unknown update option 'contentType' (expected content_type or metadata)"
        );
        assert_eq!(
            refused("image/png".into(), "create"),
            "create options must be a map, not string"
        );
        assert_eq!(
            refused(map(&[("content_type", Dynamic::from(1 as INT))]), "create"),
            "create option 'content_type' must be a string, not i64"
        );
        assert_eq!(
            refused(map(&[("content_type", "png".into())]), "create"),
            "content type must look like 'type/subtype', optionally followed by '; parameters'"
        );
        assert_eq!(
            refused(map(&[("metadata", "owner=ada".into())]), "create"),
            "create option 'metadata' must be a map, not string"
        );
        assert_eq!(
            refused(
                map(&[("metadata", map(&[("owner", Dynamic::from(7 as INT))]))]),
                "create"
            ),
            "metadata entry 'owner' must be a string, not i64"
        );
        assert_eq!(
            refused(
                map(&[("metadata", map(&[("bad name", "x".into())]))]),
                "create"
            ),
            "metadata entry \"bad name\" must be named with 1 to 64 ASCII letters, digits, '_', \
             '-' and '.'"
        );
    }

    #[test]
    fn list_options_are_read_within_the_handles_collection() {
        let parsed = list_options(
            map(&[
                ("prefix", "a".into()),
                ("limit", Dynamic::from(5 as INT)),
                ("cursor", Dynamic::UNIT),
            ]),
            &avatars(),
        )
        .unwrap();
        assert_eq!(
            parsed,
            FileListOptions {
                collection: Some(avatars()),
                prefix: Some("a".to_owned()),
                limit: 5,
                cursor: None,
            }
        );
        let default = list_options(Dynamic::UNIT, &avatars()).unwrap();
        assert_eq!(default.collection, Some(avatars()));
        assert_eq!(default.limit, DEFAULT_FILE_LIST_LIMIT);

        let refused = |options: Dynamic| message(&list_options(options, &avatars()).unwrap_err());
        assert_eq!(
            refused(map(&[("collection", "other".into())])),
            "unknown list option 'collection' (expected prefix, limit or cursor)"
        );
        assert_eq!(
            refused(Dynamic::from(10 as INT)),
            "list options must be a map, not i64"
        );
        // The other mistakes are named by the shared parser (`args`), tested there.
    }

    #[test]
    fn missing_and_mistyped_arguments_are_named_before_any_call() {
        let refused_name = |name: Dynamic| message(&file_name(name).unwrap_err());
        assert_eq!(refused_name(Dynamic::UNIT), "file name is required");
        assert_eq!(
            refused_name(Dynamic::from(3 as INT)),
            "file name must be a string, not i64"
        );
        assert_eq!(refused_name("".into()), "file name must not be empty");
        assert_eq!(
            refused_name("../etc/passwd".into()),
            "file name must not contain a '.' or '..' segment"
        );

        let refused_content = |value: Dynamic| message(&file_content(value).unwrap_err());
        assert_eq!(
            refused_content(Dynamic::UNIT),
            "file content is required (a blob or a string)"
        );
        assert_eq!(
            refused_content(Dynamic::from(3 as INT)),
            "file content must be a blob or a string, not i64"
        );
        assert_eq!(
            file_content(Dynamic::from_blob(vec![1, 2])).unwrap(),
            Content {
                bytes: vec![1, 2],
                is_text: false
            }
        );
        assert_eq!(
            file_content("ü".into()).unwrap(),
            Content {
                bytes: "ü".as_bytes().to_vec(),
                is_text: true
            }
        );
        assert!(
            file_content(Dynamic::from_blob(Blob::new())).is_ok(),
            "empty is content"
        );

        let refused_collection = |name: Dynamic| message(&collection(name).unwrap_err());
        assert_eq!(
            refused_collection(Dynamic::UNIT),
            "collection name is required"
        );
        assert_eq!(
            refused_collection(Dynamic::from(3 as INT)),
            "collection name must be a string, not i64"
        );
        assert_eq!(
            refused_collection("bad name".into()),
            "collection name may contain only ASCII letters, digits, '_', '-', '.' and ':'"
        );
    }
}
