//! Track properties → Intercom data event metadata, as data: each file in `tests/metadata/`
//! holds `properties` (what Segment sent), `metadata` (what Intercom must get) and `why`.
//! Add a case by adding a file.

use junction_flow::event_metadata;
use serde_json::{Map, Value};

#[test]
fn every_metadata_case_maps_as_written() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/metadata");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 5, "cases are missing from {}", dir.display());
    let mut failures = Vec::new();
    for path in &paths {
        let case: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let properties: Map<String, Value> = case["properties"].as_object().unwrap().clone();
        let got = Value::Object(event_metadata(properties));
        if got != case["metadata"] {
            failures.push(format!(
                "{} ({}):\n  expected {}\n  got      {}",
                path.file_name().unwrap().to_string_lossy(),
                case["why"].as_str().unwrap_or(""),
                case["metadata"],
                got
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
