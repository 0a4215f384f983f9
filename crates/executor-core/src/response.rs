//! The response convention: how a script's final value becomes an HTTP response.
//!
//! A map with a `statusCode` key is a structured response,
//! `#{statusCode: 200..=599, headers?: #{name: "value"}, body?: any}`. Any other value is
//! a 200 with that value as the body. Bodies: a string is `text/plain; charset=utf-8`, a
//! blob `application/octet-stream`, `()` an empty body with no content type, and anything
//! else JSON-able (maps, arrays, numbers, booleans) `application/json`. A `content-type`
//! header set by the script wins over the one the body would get.
//!
//! PiCloud owns the message's framing and the connection: a script may not set the
//! headers that describe them ([`FRAMING_HEADERS`], and any `proxy-*`), nor answer with an
//! informational 1xx status. hyper writes a `content-length` it is handed verbatim and
//! then the real body, so a script's own value would let it smuggle a second response
//! onto a kept-alive connection; each is a script error naming the header instead.

use bytes::Bytes;
use picloud_shared::{ExecutionError, ScriptResponse};
use rhai::{Blob, Dynamic, ImmutableString, Map};

use crate::json::dynamic_to_json;

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";
const BYTES: &str = "application/octet-stream";

/// Headers the HTTP server derives from the real body and connection (RFC 9110 §7.6.1 and
/// §8.6, RFC 9112 §6-7): set by a script they could desync the response stream.
pub(crate) const FRAMING_HEADERS: [&str; 8] = [
    "connection",
    "content-length",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn is_framing_header(lowercase_name: &str) -> bool {
    FRAMING_HEADERS.contains(&lowercase_name) || lowercase_name.starts_with("proxy-")
}

/// Converts a script's final value into a response, or a script error naming what is wrong.
pub(crate) fn into_response(value: Dynamic) -> Result<ScriptResponse, ExecutionError> {
    let value = value.flatten();
    if let Some(map) = value.read_lock::<Map>()
        && let Some(status) = map.get("statusCode")
    {
        return structured(status, &map);
    }
    let (body, content_type) = body(&value)?;
    Ok(ScriptResponse {
        status: 200,
        headers: content_type
            .map(|ct| vec![("content-type".to_owned(), ct.to_owned())])
            .unwrap_or_default(),
        body,
    })
}

fn invalid(message: impl Into<String>) -> ExecutionError {
    ExecutionError::Script {
        message: message.into(),
        line: None,
        column: None,
    }
}

fn structured(status: &Dynamic, map: &Map) -> Result<ScriptResponse, ExecutionError> {
    let status = status
        .as_int()
        .ok()
        .and_then(|s| u16::try_from(s).ok())
        .filter(|s| (200..=599).contains(s))
        .ok_or_else(|| {
            invalid(format!(
                "response statusCode must be an integer from 200 to 599, got {}",
                describe(status)
            ))
        })?;

    let mut headers = match map.get("headers") {
        None => Vec::new(),
        Some(h) if h.is_unit() => Vec::new(),
        Some(h) => headers(h)?,
    };

    let (body, content_type) = match map.get("body") {
        Some(b) => body(b)?,
        None => (Bytes::new(), None),
    };
    let has_content_type = headers.iter().any(|(name, _)| name == "content-type");
    if let (Some(ct), false) = (content_type, has_content_type) {
        headers.push(("content-type".to_owned(), ct.to_owned()));
    }
    Ok(ScriptResponse {
        status,
        headers,
        body,
    })
}

fn headers(value: &Dynamic) -> Result<Vec<(String, String)>, ExecutionError> {
    let value = value.flatten_clone();
    let map = value.read_lock::<Map>().ok_or_else(|| {
        invalid(format!(
            "response headers must be a map of strings, got {}",
            describe(&value)
        ))
    })?;
    let mut headers = Vec::with_capacity(map.len());
    for (name, value) in map.iter() {
        if !is_header_name(name) {
            return Err(invalid(format!(
                "response header name {:?} is not a valid HTTP header name",
                name.as_str()
            )));
        }
        let lowercase_name = name.to_ascii_lowercase();
        if is_framing_header(&lowercase_name) {
            return Err(invalid(format!(
                "response header {:?} is set by PiCloud from the real body and connection; a script may not set it",
                name.as_str()
            )));
        }
        let value = value.flatten_clone();
        let text = value.read_lock::<ImmutableString>().ok_or_else(|| {
            invalid(format!(
                "response headers.{name} must be a string, got {}",
                describe(&value)
            ))
        })?;
        if !is_header_value(&text) {
            return Err(invalid(format!(
                "response headers.{name} contains characters not allowed in an HTTP header"
            )));
        }
        headers.push((lowercase_name, text.to_string()));
    }
    Ok(headers)
}

/// RFC 9110 token characters.
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Visible characters, spaces and tabs; no line breaks or other control characters.
fn is_header_value(value: &str) -> bool {
    value.chars().all(|c| c == '\t' || !c.is_control())
}

fn body(value: &Dynamic) -> Result<(Bytes, Option<&'static str>), ExecutionError> {
    let value = value.flatten_clone();
    if value.is_unit() {
        return Ok((Bytes::new(), None));
    }
    if let Some(text) = value.read_lock::<ImmutableString>() {
        return Ok((Bytes::from(text.to_string()), Some(TEXT)));
    }
    if let Ok(c) = value.as_char() {
        return Ok((Bytes::from(c.to_string()), Some(TEXT)));
    }
    if let Some(blob) = value.read_lock::<Blob>() {
        return Ok((Bytes::from(blob.clone()), Some(BYTES)));
    }
    let json = dynamic_to_json(&value)
        .map_err(|err| invalid(format!("response body cannot be sent as JSON: {err}")))?;
    let bytes = serde_json::to_vec(&json)
        .map_err(|err| invalid(format!("response body cannot be sent as JSON: {err}")))?;
    Ok((Bytes::from(bytes), Some(JSON)))
}

fn describe(value: &Dynamic) -> String {
    if value.is_unit() {
        "()".to_owned()
    } else if value.is_string() {
        format!("{:?}", value.to_string())
    } else if value.is_int() || value.is_float() || value.is_bool() {
        format!("{} ({})", value, value.type_name())
    } else {
        format!("a value of type '{}'", value.type_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(&str, Dynamic)]) -> Dynamic {
        Dynamic::from_map(
            entries
                .iter()
                .map(|(k, v)| ((*k).into(), v.clone()))
                .collect(),
        )
    }

    fn header<'a>(response: &'a ScriptResponse, name: &str) -> Option<&'a str> {
        response
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn every_framing_header_is_refused_whatever_its_case_and_others_pass() {
        let with_header = |name: &str| {
            map(&[
                ("statusCode", Dynamic::from_int(200)),
                ("headers", map(&[(name, "1".into())])),
            ])
        };
        for name in FRAMING_HEADERS {
            for spelled in [name.to_owned(), name.to_ascii_uppercase()] {
                let refused = into_response(with_header(&spelled)).unwrap_err();
                assert!(
                    refused.to_string().contains("a script may not set it"),
                    "{spelled}: {refused}"
                );
            }
        }
        let allowed = into_response(with_header("x-request-note")).unwrap();
        assert_eq!(header(&allowed, "x-request-note"), Some("1"));
    }

    #[test]
    fn plain_values_are_200s_typed_by_their_kind() {
        let text = into_response("hi".into()).unwrap();
        assert_eq!((text.status, text.body.as_ref()), (200, b"hi".as_slice()));
        assert_eq!(header(&text, "content-type"), Some(TEXT));

        let json = into_response(map(&[("a", Dynamic::from_int(1))])).unwrap();
        assert_eq!(json.body.as_ref(), br#"{"a":1}"#);
        assert_eq!(header(&json, "content-type"), Some(JSON));

        let number = into_response(Dynamic::from_int(42)).unwrap();
        assert_eq!(number.body.as_ref(), b"42");
        assert_eq!(header(&number, "content-type"), Some(JSON));

        let blob = into_response(Dynamic::from_blob(vec![0xff, 0])).unwrap();
        assert_eq!(blob.body.as_ref(), [0xff, 0]);
        assert_eq!(header(&blob, "content-type"), Some(BYTES));

        let unit = into_response(Dynamic::UNIT).unwrap();
        assert_eq!(unit.status, 200);
        assert!(unit.body.is_empty());
        assert!(unit.headers.is_empty());
    }

    #[test]
    fn structured_responses_keep_status_headers_and_body() {
        let headers = map(&[
            ("X-Trace", "abc".into()),
            ("Content-Type", "text/csv".into()),
        ]);
        let response = into_response(map(&[
            ("statusCode", Dynamic::from_int(201)),
            ("headers", headers),
            ("body", "a,b".into()),
        ]))
        .unwrap();
        assert_eq!(response.status, 201);
        assert_eq!(header(&response, "x-trace"), Some("abc"));
        assert_eq!(header(&response, "content-type"), Some("text/csv"));
        assert_eq!(response.headers.len(), 2, "the script's content-type wins");
        assert_eq!(response.body.as_ref(), b"a,b");
    }

    #[test]
    fn a_structured_response_without_body_is_empty() {
        let response = into_response(map(&[("statusCode", Dynamic::from_int(204))])).unwrap();
        assert_eq!(response.status, 204);
        assert!(response.body.is_empty());
        assert!(response.headers.is_empty());
    }

    #[test]
    fn bad_fields_are_named() {
        let message = |value: Dynamic| match into_response(value) {
            Err(ExecutionError::Script { message, .. }) => message,
            other => panic!("expected a script error, got {other:?}"),
        };
        assert_eq!(
            message(map(&[("statusCode", "200".into())])),
            r#"response statusCode must be an integer from 200 to 599, got "200""#
        );
        assert!(message(map(&[("statusCode", Dynamic::from_int(99))])).contains("statusCode"));
        assert!(message(map(&[("statusCode", Dynamic::from_int(600))])).contains("statusCode"));
        assert!(
            message(map(&[
                ("statusCode", Dynamic::from_int(200)),
                ("headers", "nope".into())
            ]))
            .starts_with("response headers must be a map")
        );
        assert!(
            message(map(&[
                ("statusCode", Dynamic::from_int(200)),
                ("headers", map(&[("x-n", Dynamic::from_int(1))]))
            ]))
            .starts_with("response headers.x-n must be a string")
        );
        assert!(
            message(map(&[
                ("statusCode", Dynamic::from_int(200)),
                ("headers", map(&[("x-n", "a\r\nb".into())]))
            ]))
            .contains("not allowed")
        );
        assert!(
            message(map(&[
                ("statusCode", Dynamic::from_int(200)),
                ("headers", map(&[("bad name", "v".into())]))
            ]))
            .contains("not a valid HTTP header name")
        );
        assert!(message(Dynamic::from_float(f64::NAN)).starts_with("response body cannot be sent"));
    }
}
