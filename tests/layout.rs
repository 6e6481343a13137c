//! The shape of the code, checked: no file over 500 lines; the facility side (`tailer`) and
//! the central side (`receiver`) never import from each other; the shared modules import
//! from neither; and no two modules import each other in a circle (sibling modules, and a
//! folder module reaching back into its parent's own items).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 500;
/// The two processes' folders, and the simulator that stands apart.
const SIDES: [&str; 3] = ["tailer", "receiver", "simulate"];

/// A source file and the module path it defines.
struct SourceFile {
    path: PathBuf,
    module: Vec<String>,
    /// Whether it is a folder's `mod.rs`.
    folder: bool,
    text: String,
}

fn source_files(dir: &Path, out: &mut Vec<SourceFile>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel: Vec<String> = path
                .strip_prefix("src")
                .unwrap()
                .with_extension("")
                .iter()
                .map(|c| c.to_string_lossy().into_owned())
                .collect();
            let folder = rel.last().is_some_and(|l| l == "mod");
            let module: Vec<String> = match rel.last().map(String::as_str) {
                Some("mod") => rel[..rel.len() - 1].to_vec(),
                Some("lib") | Some("main") => Vec::new(),
                _ => rel,
            };
            let text = std::fs::read_to_string(&path).unwrap();
            out.push(SourceFile {
                path,
                module,
                folder,
                text,
            });
        }
    }
}

/// The module paths each file refers to (`crate::a::b`, `super::x`, `use child::...`),
/// resolved to the longest known module.
fn references(file: &SourceFile, modules: &BTreeSet<Vec<String>>) -> BTreeSet<Vec<String>> {
    // unit tests (last in each file) may use anything; `super` there is the file itself
    let text = file.text.split("#[cfg(test)]").next().unwrap_or("");
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let resolve = |mut path: Vec<String>| -> Option<Vec<String>> {
        while !path.is_empty() {
            if modules.contains(&path) {
                return Some(path);
            }
            path.pop();
        }
        None
    };
    let mut found = BTreeSet::new();
    let bytes = code.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        if !is_ident(bytes[i]) || (i > 0 && (is_ident(bytes[i - 1]) || bytes[i - 1] == b':')) {
            i += 1;
            continue;
        }
        // a path starting here: ident(::ident)* or ident::{a, b}
        let mut segments = Vec::new();
        let mut j = i;
        loop {
            let start = j;
            while j < bytes.len() && is_ident(bytes[j]) {
                j += 1;
            }
            segments.push(code[start..j].to_owned());
            if code[j..].starts_with("::") && j + 2 < bytes.len() && is_ident(bytes[j + 2]) {
                j += 2;
            } else {
                break;
            }
        }
        let mut groups = vec![Vec::new()];
        if code[j..].starts_with("::{") {
            let end = code[j..].find('}').map_or(bytes.len(), |e| j + e);
            groups = code[j + 3..end]
                .split(',')
                .map(|g| {
                    g.trim()
                        .split("::")
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty() && s != "self")
                        .collect()
                })
                .collect();
        }
        i = j.max(i + 1);
        let base: Option<Vec<String>> = match segments[0].as_str() {
            "crate" | "emr_stream" if segments.len() > 1 || !groups[0].is_empty() => {
                Some(segments[1..].to_vec())
            }
            // `pub(super)` is a visibility, not a path
            "super" if segments.len() > 1 || !groups[0].is_empty() => {
                let mut m = file.module.clone();
                let mut rest = &segments[..];
                while rest.first().is_some_and(|s| s == "super") {
                    m.pop();
                    rest = &rest[1..];
                }
                m.extend(rest.iter().cloned());
                Some(m)
            }
            // a child module named without crate:: (`use receive::auth`)
            first if segments.len() > 1 => {
                let mut child = file.module.clone();
                child.push(first.to_owned());
                modules.contains(&child).then(|| {
                    child.extend(segments[1..].iter().cloned());
                    child
                })
            }
            _ => None,
        };
        if let Some(base) = base {
            for g in groups {
                let mut path = base.clone();
                path.extend(g);
                if let Some(m) = resolve(path) {
                    found.insert(m);
                }
            }
        }
    }
    found
}

fn is_prefix(a: &[String], b: &[String]) -> bool {
    b.len() >= a.len() && b[..a.len()] == *a
}

/// A cycle in `graph`, if any.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|s| s == node) {
            let mut c = stack[at..].to_vec();
            c.push(node.to_owned());
            return Some(c);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(c) = visit(node, graph, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn the_code_has_the_shape_of_the_system() {
    let mut files = Vec::new();
    source_files(Path::new("src"), &mut files);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| f.module.clone()).collect();
    let mut problems = Vec::new();

    for f in &files {
        let lines = f.text.lines().count();
        if lines > MAX_LINES {
            problems.push(format!(
                "{} has {lines} lines (at most {MAX_LINES}: split it)",
                f.path.display()
            ));
        }
    }

    // sibling graphs: parent module → (child → children it uses)
    let mut graphs: BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for f in files.iter().filter(|f| !f.module.is_empty()) {
        let side = f.module[0].as_str();
        for target in references(f, &modules) {
            let target_side = target.first().map(String::as_str).unwrap_or("");
            let crosses = SIDES.contains(&target_side) && target_side != side;
            if crosses {
                problems.push(format!(
                    "{} ({}) imports crate::{}: {}",
                    f.path.display(),
                    if SIDES.contains(&side) {
                        side
                    } else {
                        "shared"
                    },
                    target.join("::"),
                    "the tailer, the receiver and the simulator import only shared modules"
                ));
            }
            if is_prefix(&target, &f.module) {
                // a reference up the tree: fine from a file that is part of its parent
                // (`impl Parent` split over files), a circle from a folder module
                if f.folder && target.len() < f.module.len() {
                    problems.push(format!(
                        "{} (folder module {}) uses items of its ancestor {}: a circle; move them into a module of their own",
                        f.path.display(),
                        f.module.join("::"),
                        if target.is_empty() { "crate".into() } else { target.join("::") }
                    ));
                }
                continue;
            }
            let common = f
                .module
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            if common < f.module.len() && common < target.len() {
                graphs
                    .entry(f.module[..common].to_vec())
                    .or_default()
                    .entry(f.module[common].clone())
                    .or_default()
                    .insert(target[common].clone());
            }
        }
    }
    for (parent, graph) in &graphs {
        if let Some(c) = cycle(graph) {
            problems.push(format!(
                "modules of {} import each other in a circle: {}",
                if parent.is_empty() {
                    "crate".into()
                } else {
                    parent.join("::")
                },
                c.join(" → ")
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "the layout has problems:\n- {}",
        problems.join("\n- ")
    );
    // the check saw the code (a walk that found nothing would pass)
    assert!(modules.contains(&vec!["tailer".to_owned(), "sweep".to_owned()]));
    assert!(
        graphs.contains_key(&vec!["tailer".to_owned()]),
        "{graphs:?}"
    );
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    assert!(cycle(&graph).is_some());
    let acyclic: BTreeMap<String, BTreeSet<String>> = [("a", vec!["b"]), ("b", vec![])]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
        .collect();
    assert!(cycle(&acyclic).is_none());
}
