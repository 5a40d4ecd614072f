//! The import layering between the modules that carry messages, checked on
//! the sources: `payload` (what shards, owners and the cluster bus hand each
//! other) imports nothing else from the engine, and `mesh`, `fanout` and
//! `cluster` import one way only (`cluster` → `mesh`), so no cycle ties them.

/// A module's source without its unit tests (which may name anything).
fn source(path: &str) -> String {
    let full = format!("{}/src/{path}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"));
    match text.find("#[cfg(test)]") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// The engine modules `path` names (`crate::x`), sorted, without repeats.
fn imports(path: &str) -> Vec<String> {
    let src = source(path);
    let mut out: Vec<String> = src
        .match_indices("crate::")
        .map(|(i, m)| {
            src[i + m.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
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
fn mesh_fanout_and_cluster_import_one_way() {
    let mesh = imports("mesh.rs");
    assert!(
        !mesh.iter().any(|m| m == "fanout" || m == "cluster"),
        "mesh imports {mesh:?}"
    );
    let fanout = imports("fanout.rs");
    assert!(
        !fanout.iter().any(|m| m == "mesh" || m == "cluster"),
        "fanout imports {fanout:?}"
    );
    let cluster = imports("cluster/mod.rs");
    assert!(
        !cluster.iter().any(|m| m == "fanout"),
        "cluster imports {cluster:?}"
    );
    // What mesh may import must not lead back to it either.
    assert!(
        mesh.iter().all(|m| m == "driver" || m == "payload"),
        "mesh imports {mesh:?}"
    );
    for file in driver_files() {
        let driver = imports(&file);
        assert!(
            driver
                .iter()
                .all(|m| m == "driver" || m == "payload" || m == "alloc_trim"),
            "{file} imports {driver:?}"
        );
    }
}

/// Every source file of the drivers, relative to `src/`.
fn driver_files() -> Vec<String> {
    let src = format!("{}/src/", env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![format!("{src}driver")];
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
    assert!(files.len() >= 3, "driver sources found: {files:?}");
    files
}
