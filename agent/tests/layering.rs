//! Which modules of the agent import which: the layering the data path was reshaped into stays
//! that way. A module that imports another which imports it back (directly or around a loop)
//! can only be read, changed and tested together with it; these tests name the loop when one
//! comes back. Below the crate root no two modules of one parent do; at the root, the
//! directions the data path depends on are pinned (configuration still names every module's
//! settings, and every module reads its own, so the root's modules are not a strict layering).
//!
//! The sources are read as text: `use` trees and inline `crate::`/`super::`/`self::` paths, and
//! a parent module's bare paths into its own children. Test modules (`mod tests`, `*_tests.rs`)
//! and comments are left out: tests may reach anywhere.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

/// A module path below the crate root (`["proxy", "record"]`); the root is empty.
type ModPath = Vec<String>;

/// Every module of the crate and the modules each one refers to.
struct Crate {
    imports: BTreeMap<ModPath, BTreeSet<ModPath>>,
}

impl Crate {
    fn read() -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        walk(&root, &root, &mut files);
        let modules: BTreeSet<ModPath> = files.iter().map(|(m, _)| m.clone()).collect();
        let mut imports = BTreeMap::new();
        for (module, text) in &files {
            let text = without_tests_and_comments(text);
            let mut refs = BTreeSet::new();
            for path in paths(&text) {
                if let Some(target) = resolve(module, &path, &modules) {
                    refs.insert(target);
                }
            }
            // A parent names its children without `self::`.
            for child in modules.iter().filter(|c| is_child(module, c)) {
                if mentions_as_path(&text, child.last().expect("a child has a name")) {
                    refs.insert(child.clone());
                }
            }
            refs.remove(module);
            imports
                .entry(module.clone())
                .or_insert_with(BTreeSet::new)
                .extend(refs);
        }
        Self { imports }
    }

    /// Whether any module in `from` (or below it) refers to `to` (or below it).
    fn imports(&self, from: &str, to: &str) -> bool {
        let (from, to) = (split(from), split(to));
        self.imports.iter().any(|(m, refs)| {
            m.starts_with(&from)
                && refs
                    .iter()
                    .any(|r| r.starts_with(&to) && !r.starts_with(&from))
        })
    }

    /// The loops among the children of `parent` (each child standing for itself and what is
    /// below it; the parent itself left out).
    fn sibling_cycles(&self, parent: &str) -> Vec<Vec<String>> {
        let parent = split(parent);
        let child_of = |m: &ModPath| -> Option<String> {
            (m.len() > parent.len() && m.starts_with(&parent)).then(|| m[parent.len()].clone())
        };
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (m, refs) in &self.imports {
            let Some(a) = child_of(m) else { continue };
            for b in refs.iter().filter_map(child_of) {
                if a != b {
                    graph.entry(a.clone()).or_default().insert(b);
                }
            }
        }
        strongly_connected(&graph)
            .into_iter()
            .filter(|c| c.len() > 1)
            .collect()
    }
}

fn split(path: &str) -> ModPath {
    path.split("::").map(str::to_owned).collect()
}

fn is_child(parent: &ModPath, m: &ModPath) -> bool {
    m.len() == parent.len() + 1 && m.starts_with(parent)
}

/// Collects `(module path, source)` for every `.rs` file below `dir`.
fn walk(root: &Path, dir: &Path, out: &mut Vec<(ModPath, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read the source directory")
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(root, &path, out);
            continue;
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let is_rust = path.extension().is_some_and(|e| e == "rs");
        if !is_rust || name.ends_with("_tests.rs") || name == "tests.rs" {
            continue;
        }
        let rel = path.strip_prefix(root).expect("below the root");
        let mut module: ModPath = rel
            .with_extension("")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if matches!(
            module.last().map(String::as_str),
            Some("mod" | "lib" | "main")
        ) {
            module.pop();
        }
        let text = std::fs::read_to_string(&path).expect("read a source file");
        out.push((module, text));
    }
}

/// The source before its `mod tests`, without comments.
fn without_tests_and_comments(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod tests"))
        {
            break;
        }
        // A comment starts at `//` at the line's start or after a space (not in `https://`).
        let code = match line.find("//") {
            Some(at) if at == 0 || line[..at].ends_with(char::is_whitespace) => &line[..at],
            _ => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path that starts at `crate`, `super` or `self`, as segments, from `use` trees (their
/// braces expanded) and from code.
fn paths(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (at, _) in text.match_indices("use ") {
        if text[..at].ends_with(is_ident) {
            continue;
        }
        let Some(end) = text[at..].find(';') else {
            continue;
        };
        let tree = text[at + 4..at + end]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        expand(&tree, &mut Vec::new(), &mut out);
    }
    for start in ["crate::", "super::", "self::"] {
        for (at, _) in text.match_indices(start) {
            if text[..at].ends_with(|c: char| is_ident(c) || c == ':') {
                continue;
            }
            // Segments while each is a whole identifier; the one after which the path ends
            // (`g` of `crate::z::g();`) is its last.
            let mut segments = Vec::new();
            for part in text[at..].split("::") {
                let name: String = part.chars().take_while(|&c| is_ident(c)).collect();
                let whole = name.len() == part.len();
                if !name.is_empty() {
                    segments.push(name);
                }
                if !whole {
                    break;
                }
            }
            out.push(segments);
        }
    }
    out.retain(|p| {
        p.len() > 1
            && matches!(
                p.first().map(String::as_str),
                Some("crate" | "super" | "self")
            )
    });
    out.sort();
    out.dedup();
    out
}

/// Expands a `use` tree under `prefix` into full paths (a renamed item by its own name).
fn expand(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    let (head, group) = match tree.find('{') {
        Some(open) if tree.ends_with('}') => (&tree[..open], Some(&tree[open + 1..tree.len() - 1])),
        _ => (tree, None),
    };
    let depth = prefix.len();
    for segment in head.split("::") {
        let name: String = segment
            .trim()
            .chars()
            .take_while(|&c| is_ident(c))
            .collect();
        if !name.is_empty() {
            prefix.push(name);
        }
    }
    match group {
        None => out.push(prefix.clone()),
        Some(items) => {
            for item in split_top_level(items) {
                expand(item, prefix, out);
            }
        }
    }
    prefix.truncate(depth);
}

/// Splits a `use` group's items at the commas outside nested braces.
fn split_top_level(items: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0usize, 0);
    for (i, c) in items.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&items[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&items[start..]);
    parts.into_iter().filter(|p| !p.is_empty()).collect()
}

/// The module a path refers to: the longest of its prefixes that is a module.
fn resolve(module: &ModPath, path: &[String], modules: &BTreeSet<ModPath>) -> Option<ModPath> {
    let mut full: ModPath = Vec::new();
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => rest = &path[1..],
        Some("self") => {
            full.clone_from(module);
            rest = &path[1..];
        }
        Some("super") => {
            full.clone_from(module);
            while rest.first().map(String::as_str) == Some("super") {
                full.pop()?;
                rest = &rest[1..];
            }
        }
        _ => return None,
    }
    full.extend(rest.iter().cloned());
    (0..=full.len())
        .rev()
        .map(|n| full[..n].to_vec())
        .find(|candidate| modules.contains(candidate))
}

/// Whether `name::` appears as the start of a path (not after `::` or inside a longer name).
fn mentions_as_path(text: &str, name: &str) -> bool {
    let needle = format!("{name}::");
    text.match_indices(&needle)
        .any(|(at, _)| !text[..at].ends_with(|c: char| is_ident(c) || c == ':'))
}

/// Tarjan's strongly connected components of `graph`.
fn strongly_connected(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        components: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            component.sort();
            s.components.push(component);
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        components: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.components
}

#[test]
fn no_two_modules_with_the_same_parent_import_each_other_around_a_loop() {
    let agent = Crate::read();
    let parents: BTreeSet<String> = agent
        .imports
        .keys()
        .filter(|m| m.len() >= 2)
        .map(|m| m[..m.len() - 1].join("::"))
        .collect();
    // The data path's two halves are among them (checked so that a change in how modules are
    // found cannot make this pass by finding none).
    assert!(
        parents.contains("proxy") && parents.contains("llm"),
        "{parents:?}"
    );
    let loops: Vec<(String, Vec<Vec<String>>)> = parents
        .into_iter()
        .map(|p| {
            let cycles = agent.sibling_cycles(&p);
            (p, cycles)
        })
        .filter(|(_, cycles)| !cycles.is_empty())
        .collect();
    assert!(
        loops.is_empty(),
        "modules that import each other around a loop (by parent): {loops:?}"
    );
}

#[test]
fn the_detectors_do_not_import_the_llm_engine_and_transport_does_not_import_admin() {
    let agent = Crate::read();
    // The engine runs the detectors; refusals shaped per provider live with the engine.
    assert!(agent.imports("llm", "analysis"));
    assert!(!agent.imports("analysis", "llm"));
    // The admin surface reports on connections; the listeners own their metrics.
    assert!(agent.imports("admin", "transport"));
    assert!(!agent.imports("transport", "admin"));
}

#[test]
fn use_trees_and_paths_are_read_as_the_compiler_reads_them() {
    let text = "use super::{a::B, c::{self, d::E as F}};\nuse crate::x::y;\n\
                fn f() { crate::z::g(); super::super::w::h(); }\n";
    let found = paths(text);
    let want: Vec<Vec<String>> = [
        "crate::x::y",
        "crate::z::g",
        "super::a::B",
        "super::c::d::E",
        "super::c::self",
        "super::super::w::h",
    ]
    .iter()
    .map(|p| split(p))
    .collect();
    assert_eq!(found, want);
    let modules: BTreeSet<ModPath> = [vec![], split("a"), split("a::b"), split("w")]
        .into_iter()
        .collect();
    assert_eq!(
        resolve(&split("a::b"), &split("super::b::T"), &modules),
        Some(split("a::b"))
    );
    assert_eq!(
        resolve(&split("a::b"), &split("super::super::w::h"), &modules),
        Some(split("w"))
    );
    let code = without_tests_and_comments(
        "use a; // crate::q\nlet u = \"https://x\";\n#[cfg(test)]\nmod tests { use crate::t; }\n",
    );
    assert!(!code.contains("crate::q") && !code.contains("crate::t"));
    assert!(code.contains("https://x"));
}
