//! The `ctx` constant every run sees.

use picloud_shared::{Caller, ExecutionRequest, HttpRequestData};
use rhai::{Dynamic, Map};

use crate::json::{SizeLimits, json_to_dynamic};

/// Builds `ctx`: the run's ids and, for HTTP runs, the request; for triggered runs, the
/// event (`ctx.event`, `()` otherwise); for a script that requires a token, who called
/// (`ctx.caller`, `()` otherwise).
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
    put(
        "event",
        request
            .trigger
            .as_ref()
            .map_or(Dynamic::UNIT, |trigger| event(&trigger.event, limits)),
    );
    put(
        "caller",
        request.caller.as_ref().map_or(Dynamic::UNIT, caller),
    );
    Dynamic::from_map(ctx)
}

/// The caller's identity and what their token may do; never the token's secret.
fn caller(caller: &Caller) -> Dynamic {
    let mut map = Map::new();
    map.insert("user_id".into(), caller.user_id.to_string().into());
    map.insert("username".into(), caller.username.as_str().into());
    map.insert("credential".into(), caller.credential.as_str().into());
    map.insert("token_id".into(), caller.token_id.to_string().into());
    map.insert("token_name".into(), caller.token_name.as_str().into());
    let scopes = caller
        .scopes
        .iter()
        .map(|scope| Dynamic::from(scope.as_str()))
        .collect();
    map.insert("scopes".into(), Dynamic::from_array(scopes));
    Dynamic::from_map(map)
}

/// The event payload of a triggered run. Like `ctx.request.json`, a payload past the run's
/// size limits is `()` rather than a failed run: the handler can still log and act on
/// everything else in `ctx`.
fn event(payload: &serde_json::Value, limits: &SizeLimits) -> Dynamic {
    json_to_dynamic(payload, limits).unwrap_or(Dynamic::UNIT)
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::Utc;
    use picloud_shared::{
        AppId, ExecutionId, ExecutorClient, InvocationType, RequestId, Script, ScriptId,
        ScriptLimits, ScriptName, TriggerId, TriggeredBy,
    };
    use serde_json::json;

    use super::*;
    use crate::{ExecutorConfig, LocalExecutorClient};

    fn request(source: &str, trigger: Option<TriggeredBy>) -> ExecutionRequest {
        let now = Utc::now();
        ExecutionRequest {
            execution_id: ExecutionId::new(),
            script: Arc::new(Script {
                id: ScriptId::new(),
                app_id: AppId::new(),
                name: ScriptName::parse("on-change").unwrap(),
                source: source.to_owned(),
                limits: ScriptLimits::default(),
                version: 1,
                require_token: false,
                created_at: now,
                updated_at: now,
            }),
            invocation_type: if trigger.is_some() {
                InvocationType::Trigger
            } else {
                InvocationType::Http
            },
            request_id: RequestId::generate(),
            http: None,
            trigger,
            depth: 2,
            run_as: None,
            caller: None,
        }
    }

    async fn body(request: ExecutionRequest) -> String {
        let report = LocalExecutorClient::new(ExecutorConfig::default())
            .execute(request)
            .await;
        let response = report.outcome.unwrap();
        String::from_utf8(response.body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_triggered_run_sees_its_event_and_invocation_type() {
        let trigger = TriggeredBy {
            trigger_id: TriggerId::new(),
            event: json!({
                "kind": "kv", "collection": "users", "key": "ada", "op": "set",
                "value": { "age": 36 }, "depth": 2,
            }),
        };
        let source = r#"`${ctx.invocation_type} ${ctx.event.collection}/${ctx.event.key} ${ctx.event.op} ${ctx.event.value.age} ${ctx.event.depth} ${ctx.request == ()}`"#;
        assert_eq!(
            body(request(source, Some(trigger))).await,
            "trigger users/ada set 36 2 true"
        );
    }

    #[tokio::test]
    async fn a_caller_is_named_and_a_public_run_has_none() {
        let source = r#"if ctx.caller == () { "nobody" } else {
            `${ctx.caller.username} ${ctx.caller.credential} ${ctx.caller.token_name} ${ctx.caller.scopes}`
        }"#;
        assert_eq!(body(request(source, None)).await, "nobody");

        let mut with_caller = request(source, None);
        with_caller.caller = Some(Caller {
            user_id: picloud_shared::UserId::new(),
            username: picloud_shared::Username::parse("grace").unwrap(),
            credential: picloud_shared::CredentialKind::ApiToken,
            token_id: picloud_shared::TokenId::new(),
            token_name: "deploy".to_owned(),
            scopes: [
                picloud_shared::Scope::ScriptExecute,
                picloud_shared::Scope::DataRead,
            ]
            .into_iter()
            .collect(),
        });
        assert_eq!(
            body(with_caller).await,
            r#"grace api_token deploy ["script:execute", "data:read"]"#
        );
    }

    #[tokio::test]
    async fn an_http_run_has_no_event() {
        assert_eq!(
            body(request(
                r#"`${ctx.event == ()} ${ctx.invocation_type}`"#,
                None
            ))
            .await,
            "true http"
        );
    }
}
