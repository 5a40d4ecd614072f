//! The import layering between the modules that carry messages, checked on
//! the sources: `payload` (what shards, owners and the cluster bus hand each
//! other) imports nothing else from the engine, and `shard::mesh`,
//! `channel::owner` and `cluster` import one way only (`cluster` →
//! `shard::mesh`), so no cycle ties them; and no two engine modules import
//! each other, directly or through others (the import graph, computed from
//! every source file's `crate::` paths, has no cycle). Between folders one
//! known cycle remains (see `folders_import_no_new_cycle`).

use std::collections::{BTreeMap, BTreeSet};

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

/// The import graph: each module (or, with `folders`, each top-level folder
/// or file of `src/`) and the ones it names, itself left out.
fn graph(folders: bool) -> BTreeMap<String, BTreeSet<String>> {
    let node = |m: &str| {
        if folders {
            m.split("::").next().unwrap().to_string()
        } else {
            m.to_string()
        }
    };
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files_under("") {
        if matches!(file.as_str(), "lib.rs" | "main.rs" | "alloc_count.rs") {
            continue;
        }
        let from = node(&module_of(&file));
        let to: BTreeSet<String> = imports(&file)
            .iter()
            .map(|m| node(m))
            .filter(|m| *m != from)
            .collect();
        g.entry(from).or_default().extend(to);
    }
    g
}

/// The graph's cycles: its strongly connected components of more than one
/// node (Tarjan's algorithm), each sorted, in sorted order.
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(w: &mut Walk<'a>, v: &'a str) {
        let i = w.index.len();
        w.index.insert(v, i);
        w.low.insert(v, i);
        w.stack.push(v);
        for u in w.g.get(v).into_iter().flatten() {
            let u = u.as_str();
            if !w.index.contains_key(u) {
                visit(w, u);
                let low = w.low[v].min(w.low[u]);
                w.low.insert(v, low);
            } else if w.stack.contains(&u) {
                let low = w.low[v].min(w.index[u]);
                w.low.insert(v, low);
            }
        }
        if w.low[v] == w.index[v] {
            let at = w.stack.iter().rposition(|&x| x == v).unwrap();
            let mut scc: Vec<String> = w.stack.drain(at..).map(String::from).collect();
            if scc.len() > 1 {
                scc.sort();
                w.found.push(scc);
            }
        }
    }
    let mut w = Walk {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in g.keys() {
        if !w.index.contains_key(v.as_str()) {
            visit(&mut w, v);
        }
    }
    w.found.sort();
    w.found
}

#[test]
fn no_import_cycle_between_modules() {
    let g = graph(false);
    assert!(g.len() >= 40, "modules found: {:?}", g.keys());
    assert!(
        g["shard"].contains("conn"),
        "shard imports {:?}",
        g["shard"]
    );
    assert_eq!(cycles(&g), Vec::<Vec<String>>::new());
}

/// Between folders one cycle remains, through `shard/`: the shard's loop
/// holds the parts of `conn/`, `channel/` and `policy/`; the handlers in
/// `conn/` and `channel/` name `shard::Core`, and `conn/`, `channel/` and
/// `cluster/` send `shard::mesh` messages through `shard::router`;
/// `policy/heartbeat.rs` reads `conn/`'s slab; `config` reads `policy/`
/// (auth, timer) and every handler reads `config`. It may shrink, never
/// grow: no other folder joins.
#[test]
fn folders_import_no_new_cycle() {
    let known = ["channel", "cluster", "config", "conn", "policy", "shard"];
    for scc in cycles(&graph(true)) {
        let new: Vec<&String> = scc
            .iter()
            .filter(|f| !known.contains(&f.as_str()))
            .collect();
        assert!(new.is_empty(), "{new:?} joined the folders' cycle {scc:?}");
    }
}

/// The files whose handlers still take the whole shard (`impl Core`, or
/// naming `shard::Core`): each can close a connection or subscribe it, which
/// touches most of `Core` (docs/ARCHITECTURE.md, "Who owns what"). The list
/// may shrink, never grow: a part's own code takes the parts it needs (the
/// owner's side, `OwnerSide`; the heartbeat's rules; the trim; the relay to
/// Redis).
#[test]
fn only_the_known_handlers_take_the_whole_shard() {
    let known = [
        "channel/recovery.rs",
        "conn/commands.rs",
        "conn/lifecycle.rs",
        "conn/sse.rs",
        "http/api.rs",
        "shard/inbox.rs",
        "shard/mod.rs",
        "shard/stop.rs",
    ];
    let names_core = |text: &str| {
        ["impl Core", "shard::Core"].iter().any(|p| {
            text.match_indices(p).any(|(i, _)| {
                let next = text[i + p.len()..].chars().next();
                !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            })
        })
    };
    let files = files_under("");
    assert!(
        files.iter().any(|f| f == "shard/mod.rs"),
        "sources found: {files:?}"
    );
    let new: Vec<&String> = files
        .iter()
        .filter(|f| names_core(&source(f)) && !known.contains(&f.as_str()))
        .collect();
    assert!(new.is_empty(), "{new:?} take the whole shard (Core)");
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (a, b) in [
        ("a", "b"),
        ("b", "c"),
        ("c", "a"),
        ("c", "d"),
        ("d", "e"),
        ("e", "d"),
    ] {
        g.entry(a.into()).or_default().insert(b.into());
        g.entry(b.into()).or_default();
    }
    assert_eq!(
        cycles(&g),
        vec![vec!["a", "b", "c"], vec!["d", "e"]]
            .into_iter()
            .map(|c| c.into_iter().map(String::from).collect::<Vec<_>>())
            .collect::<Vec<_>>()
    );
}
