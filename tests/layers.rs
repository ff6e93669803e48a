//! The layering of the data path, checked over the source: the stages import one another
//! in one direction only (no cycle among accept, session, intake, spool, queue, qmgr,
//! deliver and outcome), nothing but `runtime/` touches the shard wiring, and a stage
//! takes from `runtime` only its leaf helpers. A `use crate::…` (or any `crate::` path)
//! that breaks this fails here, naming the file and line. And no file under `src/` grows
//! past 700 lines before its tests: past that it holds more than one concern.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The stages of the data path, each a folder under `src/`.
const STAGES: &[&str] = &[
    "accept", "session", "intake", "spool", "queue", "qmgr", "deliver", "outcome",
];

/// Modules under the stages, which every stage may use: they import no stage.
const BASE: &[&str] = &["clock", "task", "smtp", "dkim", "auth", "config"];

/// What a stage may use of `runtime`: helpers that import no stage.
const RUNTIME_LEAVES: &[&str] = &["memory", "shutdown", "conn"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `crate::a::b` path in the code of `source` (comments left out), with its line;
/// a grouped import (`use crate::{a::x, b::{y, z}};`, over one line or several) gives one
/// path per group member.
fn crate_paths(source: &str) -> Vec<(usize, String, String)> {
    let code: Vec<&str> = source
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect();
    let joined = code.join("\n");
    let line_of = |at: usize| joined[..at].matches('\n').count() + 1;
    let name = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    // `a::b…` → [(a, b)]; `a::{b, c::d}` → [(a, b), (a, c)].
    let split = |path: &str| -> Vec<(String, String)> {
        let path = path.trim_start();
        let first = name(path);
        let rest = path[first.len()..].strip_prefix("::").unwrap_or("");
        let seconds: Vec<String> = match rest.trim_start().strip_prefix('{') {
            Some(group) => group.split(',').map(name).collect(),
            None => vec![name(rest)],
        };
        seconds.into_iter().map(|b| (first.clone(), b)).collect()
    };
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(found) = joined[from..].find("crate::") {
        let at = from + found;
        let after = &joined[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            // The group's members, split at the commas outside nested braces.
            let (mut depth, mut start) = (0, 0);
            for (k, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        out.push((line_of(at), group[start..k].to_owned()));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push((line_of(at), group[start..k].to_owned()));
                        start = k + 1;
                    }
                    _ => {}
                }
            }
        } else {
            out.push((line_of(at), after.to_owned()));
        }
        from = at + "crate::".len();
    }
    out.into_iter()
        .flat_map(|(line, path)| split(&path).into_iter().map(move |(a, b)| (line, a, b)))
        .filter(|(_, a, _)| !a.is_empty())
        .collect()
}

/// The top-level module a file under `src/` belongs to.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

struct Use {
    from: String,
    file: PathBuf,
    line: usize,
    to: String,
    item: String,
}

fn uses() -> Vec<Use> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut out = Vec::new();
    for file in files {
        let source = std::fs::read_to_string(&file).unwrap();
        let from = module_of(&src, &file);
        for (line, to, item) in crate_paths(&source) {
            out.push(Use {
                from: from.clone(),
                file: file.clone(),
                line,
                to,
                item,
            });
        }
    }
    out
}

#[test]
fn nothing_outside_runtime_reaches_into_the_shard_wiring() {
    // A plain text search, not `uses()`: `main.rs` is a crate of its own and names the
    // library as `pigeon::`, not `crate::`.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut offenders = Vec::new();
    for file in files {
        if module_of(&src, &file) == "runtime" {
            continue;
        }
        let source = std::fs::read_to_string(&file).unwrap();
        for (n, line) in source.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if code.contains("runtime::shard") {
                offenders.push(format!("{}:{}", file.display(), n + 1));
            }
        }
    }
    assert!(offenders.is_empty(), "runtime::shard used at {offenders:?}");
}

#[test]
fn stages_use_only_the_leaf_helpers_of_runtime() {
    let bad: Vec<String> = uses()
        .into_iter()
        .filter(|u| STAGES.contains(&u.from.as_str()) && u.to == "runtime")
        .filter(|u| !RUNTIME_LEAVES.contains(&u.item.as_str()))
        .map(|u| format!("{}:{} uses runtime::{}", u.file.display(), u.line, u.item))
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
}

#[test]
fn the_base_modules_import_no_stage_and_no_runtime() {
    let bad: Vec<String> = uses()
        .into_iter()
        .filter(|u| BASE.contains(&u.from.as_str()))
        .filter(|u| STAGES.contains(&u.to.as_str()) || u.to == "runtime")
        .map(|u| format!("{}:{} uses {}::{}", u.file.display(), u.line, u.to, u.item))
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
}

#[test]
fn the_stages_import_one_another_without_a_cycle() {
    // Edge from → to, with one place that makes it, for the message.
    let mut edges = Edges::new();
    for u in uses() {
        if u.from != u.to && STAGES.contains(&u.from.as_str()) && STAGES.contains(&u.to.as_str()) {
            edges
                .entry(u.from.clone())
                .or_default()
                .entry(u.to.clone())
                .or_insert_with(|| format!("{}:{}", u.file.display(), u.line));
        }
    }
    if let Some(cycle) = find_cycle(&edges) {
        {
            let hops: Vec<String> = cycle
                .windows(2)
                .map(|w| format!("{} → {} ({})", w[0], w[1], edges[&w[0]][&w[1]]))
                .collect();
            panic!("import cycle among the stages:\n{}", hops.join("\n"));
        }
    }
}

type Edges = BTreeMap<String, BTreeMap<String, String>>;

/// A cycle in `edges` (its nodes, the first repeated at the end), if there is one.
fn find_cycle(edges: &Edges) -> Option<Vec<String>> {
    // Depth-first search for a back edge; the path found is the cycle.
    fn visit(
        node: &str,
        edges: &Edges,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in edges.get(node).into_iter().flat_map(|m| m.keys()) {
            if let Some(c) = visit(next, edges, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|n| visit(n, edges, &mut Vec::new(), &mut done))
}

#[test]
fn the_checker_finds_a_cycle_of_three_and_none_in_a_chain() {
    let graph = |pairs: &[(&str, &str)]| -> Edges {
        let mut e = Edges::new();
        for (a, b) in pairs {
            e.entry(a.to_string())
                .or_default()
                .insert(b.to_string(), String::new());
        }
        e
    };
    let chain = graph(&[
        ("session", "intake"),
        ("intake", "spool"),
        ("queue", "spool"),
    ]);
    assert_eq!(find_cycle(&chain), None);
    let cycle = graph(&[
        ("spool", "queue"),
        ("queue", "outcome"),
        ("outcome", "spool"),
    ]);
    assert_eq!(
        find_cycle(&cycle).unwrap(),
        ["outcome", "spool", "queue", "outcome"]
    );
}

#[test]
fn the_checker_reads_paths_and_groups_in_code_but_not_in_comments() {
    let paths = crate_paths(
        "use crate::queue::message::Job;\n// crate::outcome::settle in a comment\nlet x = crate::spool::read::f(); // crate::qmgr\nuse crate::{\n    deliver::report,\n    qmgr::{dispatch, compact},\n};\n",
    );
    let found: Vec<(String, String)> = paths.into_iter().map(|(_, a, b)| (a, b)).collect();
    assert_eq!(
        found,
        vec![
            ("queue".to_owned(), "message".to_owned()),
            ("spool".to_owned(), "read".to_owned()),
            ("deliver".to_owned(), "report".to_owned()),
            ("qmgr".to_owned(), "dispatch".to_owned()),
            ("qmgr".to_owned(), "compact".to_owned()),
        ]
    );
}

/// Most lines a file under `src/` may have before its `#[cfg(test)]` module: a file
/// longer than that holds more than one concern, and should be split by them.
const MAX_LINES: usize = 700;

#[test]
fn no_source_file_is_over_seven_hundred_lines_tests_aside() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|file| {
            let source = std::fs::read_to_string(file).unwrap();
            // Up to the inline test module: a `#[cfg(test)]` followed by `mod … {`. A
            // `#[cfg(test)] mod fixtures;` line earlier in the file ends nothing.
            let lines: Vec<&str> = source.lines().collect();
            let code = (0..lines.len())
                .find(|&k| {
                    lines[k].starts_with("#[cfg(test)]")
                        && lines.get(k + 1).is_some_and(|next| {
                            next.contains("mod ") && next.trim_end().ends_with('{')
                        })
                })
                .unwrap_or(lines.len());
            (code > MAX_LINES).then(|| format!("{}: {code} lines", file.display()))
        })
        .collect();
    assert!(long.is_empty(), "split by concern: {long:#?}");
}
