//! The import layering between the modules that carry messages, checked on
//! the sources: `payload` (what shards, owners and the cluster bus hand each
//! other) imports nothing else from the engine, and `shard::mesh`,
//! `channel::owner` and `cluster` import one way only (`cluster` →
//! `shard::mesh`), so no cycle ties them.

use std::collections::BTreeSet;

/// A module's source without its unit tests (which may name anything).
fn source(path: &str) -> String {
    let full = format!("{}/src/{path}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"));
    match text.find("#[cfg(test)]") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// Every source file of the library under `src/{dir}`, relative to `src/`.
fn files_under(dir: &str) -> Vec<String> {
    let src = format!("{}/src/", env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![format!("{src}{dir}")];
    let mut files = Vec::new();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path.to_string_lossy().into_owned());
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path.to_string_lossy()[src.len()..].to_string());
            }
        }
    }
    files.sort();
    files
}

/// The module a source file defines: `shard/mesh.rs` is `shard::mesh`,
/// `shard/mod.rs` is `shard`.
fn module_of(file: &str) -> String {
    let path = file.trim_end_matches(".rs").trim_end_matches("/mod");
    path.replace('/', "::")
}

/// Every module of the library (not the binary's `main` and `alloc_count`).
fn modules() -> BTreeSet<String> {
    files_under("")
        .iter()
        .filter(|f| !matches!(f.as_str(), "lib.rs" | "main.rs" | "alloc_count.rs"))
        .map(|f| module_of(f))
        .collect()
}

/// The engine modules `path` names (`crate::x::y`), each resolved to the
/// longest module path it starts with, sorted, without repeats.
fn imports(path: &str) -> Vec<String> {
    let src = source(path);
    let known = modules();
    let mut out: Vec<String> = src
        .match_indices("crate::")
        .filter_map(|(i, m)| {
            let named: String = src[i + m.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let segments: Vec<&str> = named.split("::").filter(|s| !s.is_empty()).collect();
            (1..=segments.len())
                .rev()
                .map(|n| segments[..n].join("::"))
                .find(|m| known.contains(m))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[test]
fn payload_imports_nothing_from_the_engine() {
    assert_eq!(imports("payload.rs"), Vec::<String>::new());
}

#[test]
fn mesh_owner_and_cluster_import_one_way() {
    let mesh = imports("shard/mesh.rs");
    assert!(
        !mesh
            .iter()
            .any(|m| m == "channel::owner" || m.starts_with("cluster")),
        "shard::mesh imports {mesh:?}"
    );
    let owner = imports("channel/owner.rs");
    assert!(
        !owner
            .iter()
            .any(|m| m == "shard::mesh" || m.starts_with("cluster")),
        "channel::owner imports {owner:?}"
    );
    let cluster = imports("cluster/mod.rs");
    assert!(
        !cluster.iter().any(|m| m == "channel::owner"),
        "cluster imports {cluster:?}"
    );
    // What mesh may import must not lead back to it either.
    assert!(
        mesh.iter().all(|m| m == "driver" || m == "payload"),
        "shard::mesh imports {mesh:?}"
    );
    let driver_files = files_under("driver");
    assert!(
        driver_files.len() >= 3,
        "driver sources found: {driver_files:?}"
    );
    for file in driver_files {
        let driver = imports(&file);
        assert!(
            driver.iter().all(|m| m == "driver"
                || m.starts_with("driver::")
                || m == "payload"
                || m == "alloc_trim"),
            "{file} imports {driver:?}"
        );
    }
}
