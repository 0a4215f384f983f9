//! The `ctx` constant every run sees.

use picloud_shared::{ExecutionRequest, HttpRequestData};
use rhai::{Dynamic, Map};

use crate::json::{SizeLimits, json_to_dynamic};

/// Builds `ctx`: the run's ids and, for HTTP runs, the request.
///
/// `ctx.request.json` is the parsed body when the request declares JSON and the body
/// parses within the sandbox's size limits; otherwise it is `()` (the raw body is still
/// in `ctx.request.body`).
pub(crate) fn build(request: &ExecutionRequest, limits: &SizeLimits) -> Dynamic {
    let script = &request.script;
    let mut ctx = Map::new();
    let mut put = |key: &str, value: Dynamic| {
        ctx.insert(key.into(), value);
    };
    put("execution_id", request.execution_id.to_string().into());
    put("script_id", script.id.to_string().into());
    put("script_name", script.name.as_str().into());
    put("app_id", script.app_id.to_string().into());
    put("request_id", request.request_id.as_str().into());
    put("invocation_type", request.invocation_type.as_str().into());
    put(
        "request",
        request
            .http
            .as_ref()
            .map_or(Dynamic::UNIT, |http| http_request(http, limits)),
    );
    Dynamic::from_map(ctx)
}

fn http_request(http: &HttpRequestData, limits: &SizeLimits) -> Dynamic {
    let mut query = Map::new();
    for (key, value) in &http.query {
        // The last value of a repeated key wins.
        query.insert(key.as_str().into(), value.as_str().into());
    }

    let mut headers = Map::new();
    for (name, value) in &http.headers {
        let name = name.to_ascii_lowercase();
        match headers.get_mut(name.as_str()) {
            // Repeated headers are joined the way HTTP allows them to be combined.
            Some(existing) => *existing = format!("{existing}, {value}").into(),
            None => {
                headers.insert(name.into(), value.as_str().into());
            }
        }
    }

    let body = match std::str::from_utf8(&http.body) {
        Ok(text) => Dynamic::from(text.to_owned()),
        Err(_) => Dynamic::from_blob(http.body.to_vec()),
    };

    let json = if http.is_json() {
        serde_json::from_slice(&http.body)
            .ok()
            .and_then(|value| json_to_dynamic(&value, limits).ok())
            .unwrap_or(Dynamic::UNIT)
    } else {
        Dynamic::UNIT
    };

    let mut request = Map::new();
    request.insert("method".into(), http.method.as_str().into());
    request.insert("path".into(), http.path.as_str().into());
    request.insert("query".into(), Dynamic::from_map(query));
    request.insert("headers".into(), Dynamic::from_map(headers));
    request.insert("body".into(), body);
    request.insert("json".into(), json);
    Dynamic::from_map(request)
}
