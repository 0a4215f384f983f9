use rhai::{Dynamic, Engine, Scope};

#[test]
fn scratch2() {
    let stack: usize = std::env::var("STACK_MB").unwrap().parse().unwrap();
    let depth: usize = std::env::var("DEPTH").unwrap().parse().unwrap();
    let src = std::env::var("SRC").unwrap();
    std::thread::Builder::new().stack_size(stack << 20).spawn(move || {
        let mut engine = Engine::new();
        engine.set_max_array_size(200_000).set_max_map_size(20_000).set_max_string_size(1<<20);
        let mut v = Dynamic::from_array(vec![]);
        for _ in 0..depth { v = Dynamic::from_array(vec![v]); }
        let mut scope = Scope::new();
        scope.push("a", v);
        let t = std::time::Instant::now();
        let r = engine.eval_with_scope::<Dynamic>(&mut scope, &src);
        println!("{:?} {:?}", r.map(|d| d.type_name()), t.elapsed());
        drop(scope);
        println!("dropped");
    }).unwrap().join().unwrap();
}
