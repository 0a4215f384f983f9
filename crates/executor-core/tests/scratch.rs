use std::sync::Arc;
use picloud_executor_core::ScriptEngine;
use picloud_shared::*;

fn req(src: &str) -> ExecutionRequest {
    let now = chrono::Utc::now();
    ExecutionRequest {
        execution_id: ExecutionId::new(),
        script: Arc::new(Script { id: ScriptId::new(), app_id: AppId::new(), name: ScriptName::parse("t").unwrap(), source: src.into(), limits: ScriptLimits::default(), version: 1, created_at: now, updated_at: now }),
        invocation_type: InvocationType::Http,
        request_id: RequestId::generate(),
        http: None,
    }
}

fn go(src: &str) {
    let mut l = SandboxLimits::default();
    l.max_operations = u64::MAX; l.timeout = std::time::Duration::from_secs(300);
    let engine = ScriptEngine::new(SandboxCeiling::new(l));
    let r = req(src);
    let limits = engine.effective_limits(&ScriptLimits::default());
    match engine.compile(src, limits) {
        Err(e) => println!("{src:?} => compile error {e:?}"),
        Ok(c) => { let t = std::time::Instant::now(); let out = c.run(&r); println!("{src:?} => {:?} in {:?}", out.outcome.map(|r| (r.status, String::from_utf8_lossy(&r.body).chars().take(100).collect::<String>())), t.elapsed()); }
    }
}

#[test]
fn scratch() {
    let stack: usize = std::env::var("STACK_MB").unwrap().parse().unwrap();
    let cases = std::env::var("CASES").unwrap();
    std::thread::Builder::new().stack_size(stack << 20).spawn(move || {
    for c in cases.split("|||") { go(c); }
    }).unwrap().join().unwrap();
}
