//! The JSON Schemas in `proto-schemas/schemas/` are generated from the Rust
//! types; this test fails when they drift apart. Regenerate them with
//! `cargo xtask schemas`.

use std::{collections::BTreeSet, path::PathBuf};

use herald_shared::{envelope::parse_event, frames::ServerFrame};

const UPDATE_ENV: &str = "HERALD_UPDATE_SCHEMAS";

fn proto_schemas() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proto-schemas")
}

#[test]
fn schemas_match_the_rust_types() {
    let dir = proto_schemas().join("schemas");
    let update = std::env::var_os(UPDATE_ENV).is_some();
    let mut stale = Vec::new();
    let mut expected = BTreeSet::new();
    for (path, schema) in herald_shared::schema::all() {
        let file = dir.join(&path);
        let content = serde_json::to_string_pretty(&schema).unwrap() + "\n";
        expected.insert(path.clone());
        if update {
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, content).unwrap();
        } else if std::fs::read_to_string(&file).ok().as_deref() != Some(content.as_str()) {
            stale.push(path);
        }
    }
    let on_disk = list_json(&dir);
    let extra: Vec<_> = on_disk.difference(&expected).collect();
    assert!(
        stale.is_empty() && extra.is_empty(),
        "proto-schemas drifted from the Rust types (out of date: {stale:?}; no longer generated: {extra:?}); \
         run `cargo xtask schemas`"
    );
}

#[test]
fn the_examples_are_what_the_types_accept() {
    let examples = proto_schemas().join("examples");
    for name in list_json(&examples.join("envelopes")) {
        let bytes = std::fs::read(examples.join("envelopes").join(&name)).unwrap();
        assert!(
            parse_event(&bytes).is_ok(),
            "envelopes/{name}: {:?}",
            parse_event(&bytes).err()
        );
    }
    for name in list_json(&examples.join("server-frames")) {
        let text = std::fs::read_to_string(examples.join("server-frames").join(&name)).unwrap();
        let frame: ServerFrame =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("server-frames/{name}: {e}"));
        let again: serde_json::Value = serde_json::from_str(&frame.to_json()).unwrap();
        let original: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(again, original, "server-frames/{name} does not round-trip");
    }
}

fn list_json(dir: &std::path::Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                found.insert(
                    path.strip_prefix(dir)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    found
}
