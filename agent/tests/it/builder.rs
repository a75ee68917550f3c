//! The function builder (issue 6, item 4): `edgefn new` + `edgefn build` make a module from each
//! template that this agent loads and runs, and `edgefn build` refuses what the agent would.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::{agent, wat, TempDir};
use crate::sync::cloud_bin;

fn edgefn(args: &[&str], dir: &Path) -> Output {
    Command::new(cloud_bin("edgefn"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run edgefn")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// new → build --json → the module's facts are right → `exec` runs it twice with its kv kept.
fn new_build_run(lang: &str, want: [&str; 2]) {
    let tmp = TempDir::new(&format!("builder-{lang}"));
    let name = format!("my-{lang}-fn");
    ok(&edgefn(&["new", &name, "--lang", lang], tmp.path()));
    let project = tmp.path().join(&name);
    assert!(project.join("function.toml").is_file());
    let built: Value =
        serde_json::from_str(&ok(&edgefn(&["build", "--json"], &project))).expect("--json");
    let module = Path::new(built["module"].as_str().unwrap()).to_path_buf();
    let wasm = std::fs::read(&module).unwrap();
    assert_eq!(built["size"], wasm.len(), "{built}");
    assert_eq!(built["abi"], 1);
    assert!(built["sha256"].as_str().unwrap().len() == 64, "{built}");
    // The small stack: one 64 KiB page of memory (a default Rust stack would be 16 more).
    assert!(
        built["initial_memory"].as_u64().unwrap() <= 2 * 65536,
        "{built}"
    );
    let kv = tmp.path().join("kv.json");
    for expected in want {
        let o = agent()
            .arg("exec")
            .arg(&module)
            .args(["--data", "world", "--subject", "sensors/1", "--kv"])
            .arg(&kv)
            .output()
            .unwrap();
        let out = ok(&o);
        assert_eq!(
            out.trim_end(),
            expected,
            "stderr: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // Building again is a no-op that gives the same module.
    let again: Value = serde_json::from_str(&ok(&edgefn(&["build", "--json"], &project))).unwrap();
    assert_eq!(again["sha256"], built["sha256"]);
}

#[test]
fn rust_template_builds_and_runs() {
    new_build_run("rust", ["hello world (#1)", "hello world (#2)"]);
}

#[test]
fn c_template_builds_and_runs() {
    new_build_run(
        "c",
        ["hello sensors/1 #1: world", "hello sensors/1 #2: world"],
    );
}

#[test]
fn build_refuses_what_the_agent_refuses() {
    let tmp = TempDir::new("builder-bad");
    // Valid Wasm, but no `edgefn_handle`: the agent's own check names the export.
    let bad = tmp.path().join("bad.wasm");
    std::fs::write(
        &bad,
        wat(r#"(module (memory (export "memory") 1)
            (func (export "edgefn_alloc") (param i32) (result i32) (i32.const 0)))"#),
    )
    .unwrap();
    let o = edgefn(&["build", "bad.wasm"], tmp.path());
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("missing export `edgefn_handle`"), "{err}");

    // Not Wasm at all.
    std::fs::write(tmp.path().join("junk.wasm"), b"not wasm").unwrap();
    let o = edgefn(&["build", "junk.wasm"], tmp.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a WebAssembly binary"));

    // A C project that does not compile: the compiler's error, then a failed build.
    std::fs::create_dir(tmp.path().join("broken")).unwrap();
    std::fs::write(tmp.path().join("broken/broken.c"), "int edgefn_handle( {").unwrap();
    let o = edgefn(&["build", "broken"], tmp.path());
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("failed") && err.contains("broken.c"), "{err}");

    // A directory that is no project, and a refused name.
    let o = edgefn(&["build", "."], tmp.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no Cargo.toml and no .c file"));
    let o = edgefn(&["new", "bad name"], tmp.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("bad name"));
}
