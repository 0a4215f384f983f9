//! Conversion between JSON and Rhai values, in both directions.
//!
//! JSON → Rhai mirrors how Rhai itself measures data (sizes are totals over the whole
//! nested value: every array element, every map entry, every string byte), so a value
//! accepted here is one the sandbox would also accept. Rhai → JSON follows the SPEC rule
//! that blobs are base64 wherever they sit inside JSON.

use std::borrow::Cow;

use rhai::{Array, Blob, Dynamic, FLOAT, INT, ImmutableString, Map};
use serde_json::Value;

use crate::base64;

/// Deepest nesting converted in either direction. serde_json refuses to parse deeper than
/// 128 levels anyway; the same bound on the way out keeps recursion shallow however the
/// script built its value.
pub const MAX_JSON_DEPTH: usize = 128;

/// Why a value could not cross the JSON boundary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// A float that JSON cannot represent.
    #[error("{value} cannot be represented in JSON")]
    NonFiniteFloat {
        /// The float, as text.
        value: String,
    },
    /// A Rhai value with no JSON form (a function pointer, a timestamp, a custom type).
    #[error("a value of type '{type_name}' cannot be converted to JSON")]
    Unsupported {
        /// Rhai's name for the type.
        type_name: String,
    },
    /// The value nests deeper than [`MAX_JSON_DEPTH`].
    #[error("value nests deeper than {MAX_JSON_DEPTH} levels")]
    TooDeep,
    /// The value is larger than the sandbox allows.
    #[error("{what} exceeds the limit of {limit}")]
    TooLarge {
        /// Which measure was exceeded.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
}

/// Size limits a converted value must stay within (Rhai's structural limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeLimits {
    /// Total array elements over the whole value.
    pub max_array_size: usize,
    /// Total map entries over the whole value.
    pub max_map_size: usize,
    /// Total string bytes over the whole value.
    pub max_string_size: usize,
}

#[derive(Debug, Default)]
struct Totals {
    array: usize,
    map: usize,
    string: usize,
}

/// Converts a JSON value into a Rhai value: objects become maps, arrays arrays, integers
/// `INT` (integers beyond `INT`'s range become floats), other numbers floats and `null` `()`.
pub fn json_to_dynamic(value: &Value, limits: &SizeLimits) -> Result<Dynamic, JsonError> {
    let mut totals = Totals::default();
    to_dynamic(value, limits, &mut totals, 0)
}

fn to_dynamic(
    value: &Value,
    limits: &SizeLimits,
    totals: &mut Totals,
    depth: usize,
) -> Result<Dynamic, JsonError> {
    if depth > MAX_JSON_DEPTH {
        return Err(JsonError::TooDeep);
    }
    Ok(match value {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Dynamic::from_int(INT::from(i)),
            None => Dynamic::from_float(n.as_f64().unwrap_or(FLOAT::NAN)),
        },
        Value::String(s) => {
            add(
                &mut totals.string,
                s.len(),
                "total string length",
                limits.max_string_size,
            )?;
            Dynamic::from(s.clone())
        }
        Value::Array(items) => {
            add(
                &mut totals.array,
                items.len(),
                "total array size",
                limits.max_array_size,
            )?;
            let array = items
                .iter()
                .map(|item| to_dynamic(item, limits, totals, depth + 1))
                .collect::<Result<Array, _>>()?;
            Dynamic::from_array(array)
        }
        Value::Object(entries) => {
            add(
                &mut totals.map,
                entries.len(),
                "total object map size",
                limits.max_map_size,
            )?;
            let mut map = Map::new();
            for (key, item) in entries {
                map.insert(
                    key.as_str().into(),
                    to_dynamic(item, limits, totals, depth + 1)?,
                );
            }
            Dynamic::from_map(map)
        }
    })
}

fn add(total: &mut usize, n: usize, what: &'static str, limit: usize) -> Result<(), JsonError> {
    *total = total.saturating_add(n);
    if *total > limit {
        return Err(JsonError::TooLarge { what, limit });
    }
    Ok(())
}

/// Converts a Rhai value into JSON. Blobs become base64 strings, characters one-character
/// strings, `()` `null`; a non-finite float or a value with no JSON form is an error.
pub fn dynamic_to_json(value: &Dynamic) -> Result<Value, JsonError> {
    to_json(value, 0)
}

fn to_json(value: &Dynamic, depth: usize) -> Result<Value, JsonError> {
    if depth > MAX_JSON_DEPTH {
        return Err(JsonError::TooDeep);
    }
    // A value captured by a closure is shared; reading through a copy avoids holding its
    // lock while the rest of the tree is converted.
    let value: Cow<'_, Dynamic> = if value.is_shared() {
        Cow::Owned(value.flatten_clone())
    } else {
        Cow::Borrowed(value)
    };
    if value.is_unit() {
        return Ok(Value::Null);
    }
    if let Ok(b) = value.as_bool() {
        return Ok(Value::Bool(b));
    }
    if let Ok(i) = value.as_int() {
        return Ok(Value::from(i));
    }
    if let Ok(f) = value.as_float() {
        return serde_json::Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| JsonError::NonFiniteFloat {
                value: f.to_string(),
            });
    }
    if let Ok(c) = value.as_char() {
        return Ok(Value::String(c.to_string()));
    }
    if let Some(s) = value.read_lock::<ImmutableString>() {
        return Ok(Value::String(s.as_str().to_owned()));
    }
    if let Some(blob) = value.read_lock::<Blob>() {
        return Ok(Value::String(base64::encode(&blob)));
    }
    if let Some(array) = value.read_lock::<Array>() {
        return array
            .iter()
            .map(|item| to_json(item, depth + 1))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array);
    }
    if let Some(map) = value.read_lock::<Map>() {
        let mut object = serde_json::Map::with_capacity(map.len());
        for (key, item) in map.iter() {
            object.insert(key.to_string(), to_json(item, depth + 1)?);
        }
        return Ok(Value::Object(object));
    }
    Err(JsonError::Unsupported {
        type_name: value.type_name().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const ROOMY: SizeLimits = SizeLimits {
        max_array_size: 1000,
        max_map_size: 1000,
        max_string_size: 1000,
    };

    #[test]
    fn json_round_trips_through_rhai_values() {
        let original = json!({
            "name": "pi",
            "count": 3,
            "ratio": 0.5,
            "ok": true,
            "nothing": null,
            "list": [1, "two", [3.5, false], {"deep": {"deeper": []}}],
        });
        let value = json_to_dynamic(&original, &ROOMY).unwrap();
        assert!(value.is_map());
        assert_eq!(dynamic_to_json(&value).unwrap(), original);
    }

    #[test]
    fn numbers_keep_their_kind() {
        let value = json_to_dynamic(&json!([1, -2, 2.5, u64::MAX]), &ROOMY).unwrap();
        let array = value.into_array().unwrap();
        assert_eq!(array[0].as_int(), Ok(1));
        assert_eq!(array[1].as_int(), Ok(-2));
        assert_eq!(array[2].as_float(), Ok(2.5));
        assert!(array[3].is_float(), "an integer beyond INT becomes a float");
    }

    #[test]
    fn blobs_become_base64_and_chars_strings() {
        let blob = Dynamic::from_blob(vec![0, 1, 2, 253, 254, 255]);
        assert_eq!(dynamic_to_json(&blob).unwrap(), json!("AAEC/f7/"));
        assert_eq!(dynamic_to_json(&Dynamic::from('x')).unwrap(), json!("x"));
    }

    #[test]
    fn non_finite_floats_are_refused() {
        let err = dynamic_to_json(&Dynamic::from_float(FLOAT::INFINITY)).unwrap_err();
        assert_eq!(err.to_string(), "inf cannot be represented in JSON");
        let nested = Dynamic::from_array(vec![Dynamic::from_float(FLOAT::NAN)]);
        assert!(matches!(
            dynamic_to_json(&nested),
            Err(JsonError::NonFiniteFloat { .. })
        ));
    }

    #[test]
    fn values_without_a_json_form_name_their_type() {
        let err = dynamic_to_json(&Dynamic::from(std::time::Instant::now())).unwrap_err();
        assert!(matches!(err, JsonError::Unsupported { .. }), "{err}");
    }

    #[test]
    fn limits_count_totals_over_the_whole_value() {
        let tight = SizeLimits {
            max_array_size: 3,
            max_map_size: 2,
            max_string_size: 5,
        };
        assert!(json_to_dynamic(&json!([[1], [2]]), &tight).is_err());
        assert!(json_to_dynamic(&json!([1, [2]]), &tight).is_ok());
        let err = json_to_dynamic(&json!({"a": {"b": 1, "c": 2}}), &tight).unwrap_err();
        assert_eq!(
            err.to_string(),
            "total object map size exceeds the limit of 2"
        );
        assert!(json_to_dynamic(&json!(["abc", "def"]), &tight).is_err());
    }

    #[test]
    fn deep_values_are_refused_not_overflowed() {
        let mut value = Dynamic::UNIT;
        for _ in 0..(MAX_JSON_DEPTH + 10) {
            value = Dynamic::from_array(vec![value]);
        }
        assert_eq!(dynamic_to_json(&value), Err(JsonError::TooDeep));

        let mut json = json!(null);
        for _ in 0..(MAX_JSON_DEPTH + 10) {
            json = json!([json]);
        }
        let roomy = SizeLimits {
            max_array_size: 10_000,
            ..ROOMY
        };
        assert!(matches!(
            json_to_dynamic(&json, &roomy),
            Err(JsonError::TooDeep)
        ));
    }
}
