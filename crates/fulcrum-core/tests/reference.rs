//! `examples/everything.toml`, the README's configuration reference and fulcrum itself agree
//! on the set of configuration keys, so none of the three can drift from the others.
//!
//! Keys are compared as normalised paths: pool names become `NAME` and list positions are
//! dropped (`pools.NAME.backends.weight`, `listeners.bind`), with every table on the way
//! included (`pools.NAME.health`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use fulcrum_core::config::Config;
use toml::Value;

fn repo_file(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The example as written, then once per `# or: KEY = VALUE` line with that alternative in
/// place of the line above it (or added, when the line above sets another key).
fn everything_variants() -> Vec<(String, String)> {
    let text = repo_file("examples/everything.toml");
    let lines: Vec<&str> = text.lines().collect();
    let mut variants = vec![("as written".to_string(), text.clone())];
    let key_of = |line: &str| line.split('=').next().map(|k| k.trim().to_string());
    for (i, line) in lines.iter().enumerate() {
        let Some(alternative) = line.strip_prefix("# or: ") else {
            continue;
        };
        let alternative = alternative.split("   #").next().unwrap_or(alternative);
        let replaced = lines[..i]
            .iter()
            .rposition(|l| !l.starts_with("# or: "))
            .filter(|&above| key_of(lines[above]) == key_of(alternative));
        let mut variant: Vec<&str> = lines.clone();
        variant[i] = alternative;
        if let Some(above) = replaced {
            variant[above] = "";
        }
        variants.push((alternative.to_string(), variant.join("\n")));
    }
    assert!(variants.len() > 1, "no `# or:` lines in everything.toml");
    variants
}

fn normalised(path: &[String]) -> String {
    let mut parts: Vec<&str> = path.iter().map(String::as_str).collect();
    if parts.first() == Some(&"pools") && parts.len() > 1 {
        parts[1] = "NAME";
    }
    parts.join(".")
}

/// Every key path in a TOML tree, tables on the way included.
fn key_paths(value: &Value, path: &mut Vec<String>, into: &mut BTreeSet<String>) {
    match value {
        Value::Table(table) => {
            for (key, child) in table {
                path.push(key.clone());
                into.insert(normalised(path));
                key_paths(child, path, into);
                path.pop();
            }
        }
        Value::Array(items) => {
            for item in items {
                key_paths(item, path, into);
            }
        }
        _ => {}
    }
}

fn keys_of_everything() -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for (what, text) in everything_variants() {
        if let Err(e) = Config::from_toml(&text) {
            panic!("everything.toml with `{what}` is refused:\n{e}");
        }
        let tree: Value = toml::from_str(&text).unwrap_or_else(|e| panic!("{what}: {e}"));
        key_paths(&tree, &mut Vec::new(), &mut keys);
    }
    keys
}

/// The README's reference: `### \`[section]\`` headings, then tables whose first cell names
/// keys (`| \`on_promote\`, \`on_demote\` | …`). Each key is `section.key`; each section's
/// own path and the tables above it are included too.
fn keys_of_readme() -> BTreeSet<String> {
    let readme = repo_file("README.md");
    let reference = readme
        .split("## Configuration reference")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .unwrap_or_else(|| panic!("README has no `## Configuration reference` section"));
    let mut keys = BTreeSet::new();
    let mut sections: Vec<String> = Vec::new();
    let add = |path: &str, keys: &mut BTreeSet<String>| {
        let parts: Vec<&str> = path.split('.').collect();
        for end in 1..=parts.len() {
            keys.insert(parts[..end].join("."));
        }
    };
    for line in reference.lines() {
        if line.starts_with('#') {
            sections = backticked(line)
                .iter()
                .filter(|s| s.starts_with('['))
                .map(|s| s.trim_matches(['[', ']']).to_string())
                .collect();
            for section in &sections {
                add(section, &mut keys);
            }
            continue;
        }
        let Some(first_cell) = line.strip_prefix("| ").and_then(|l| l.split(" |").next()) else {
            continue;
        };
        for key in backticked(first_cell) {
            for section in &sections {
                add(&format!("{section}.{key}"), &mut keys);
            }
        }
    }
    keys
}

fn backticked(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// What fulcrum itself accepts, asked of fulcrum: a key that cannot exist, added to each table
/// of the example, is refused with the list of keys that table takes.
fn keys_fulcrum_accepts() -> BTreeSet<String> {
    let mut accepted = BTreeSet::new();
    for (what, text) in everything_variants() {
        let tree: Value = toml::from_str(&text).unwrap_or_else(|e| panic!("{what}: {e}"));
        let mut tables = Vec::new();
        table_paths(&tree, &mut Vec::new(), &mut tables);
        for table in tables {
            for key in keys_taken_by(&tree, &table) {
                let mut path: Vec<String> = table.iter().map(|(k, _)| k.clone()).collect();
                path.push(key);
                // With the tables on the way (`pools.NAME` is a name, never a probed table).
                for end in 1..=path.len() {
                    accepted.insert(normalised(&path[..end]));
                }
            }
        }
    }
    accepted
}

/// A path to a table: each step a key, and for list elements the index.
type TablePath = Vec<(String, Option<usize>)>;

fn table_paths(value: &Value, path: &mut TablePath, into: &mut Vec<TablePath>) {
    let Value::Table(table) = value else { return };
    // `pools` is a map from names the user chooses, not a table of keys.
    let is_pool_map = path.len() == 1 && path[0].0 == "pools";
    if !is_pool_map {
        into.push(path.clone());
    }
    for (key, child) in table {
        match child {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    path.push((key.clone(), Some(i)));
                    table_paths(item, path, into);
                    path.pop();
                }
            }
            _ => {
                path.push((key.clone(), None));
                table_paths(child, path, into);
                path.pop();
            }
        }
    }
}

fn keys_taken_by(tree: &Value, table: &TablePath) -> Vec<String> {
    const NOT_A_KEY: &str = "zz_no_such_key_anywhere";
    let mut probe = tree.clone();
    let mut at = &mut probe;
    for (key, index) in table {
        at = at.get_mut(key.as_str()).unwrap_or_else(|| panic!("{key}"));
        if let Some(i) = index {
            at = at.get_mut(*i).unwrap_or_else(|| panic!("{key}[{i}]"));
        }
    }
    if let Value::Table(t) = at {
        t.insert(NOT_A_KEY.to_string(), Value::Integer(1));
    }
    let rendered = table
        .iter()
        .map(|(key, index)| match index {
            Some(i) => format!("{key}[{i}]"),
            None => key.clone(),
        })
        .collect::<Vec<_>>()
        .join(".");
    let want_path = if rendered.is_empty() {
        NOT_A_KEY.to_string()
    } else {
        format!("{rendered}.{NOT_A_KEY}")
    };
    let text = toml::to_string(&probe).unwrap_or_else(|e| panic!("{e}"));
    let errors = match Config::from_toml(&text) {
        Ok(_) => panic!("{want_path} was accepted"),
        Err(e) => e.0,
    };
    let error = errors
        .iter()
        .find(|e| e.path == want_path)
        .unwrap_or_else(|| panic!("no error at {want_path}: {errors:?}"));
    let (_, list) = error
        .message
        .split_once("this table takes: ")
        .unwrap_or_else(|| panic!("{want_path}: {}", error.message));
    list.split(", ").map(str::to_string).collect()
}

/// Keys the file's shape accepts that no valid file can set, each with why. Kept here, short
/// and explained, rather than bending the example to set them.
const SHAPE_ONLY: &[(&str, &str)] = &[(
    "pools.NAME.health.readiness.tcp",
    "liveness and readiness share one probe table; `tcp = true` is for liveness only, and \
     the README's probe table says so",
)];

fn difference(a: &BTreeSet<String>, b: &BTreeSet<String>) -> Vec<String> {
    a.difference(b)
        .filter(|key| SHAPE_ONLY.iter().all(|(only, _)| only != key))
        .cloned()
        .collect()
}

#[test]
fn everything_toml_sets_every_key_fulcrum_accepts() {
    let everything = keys_of_everything();
    let accepted = keys_fulcrum_accepts();
    assert_eq!(
        difference(&accepted, &everything),
        Vec::<String>::new(),
        "accepted by fulcrum but not set in examples/everything.toml"
    );
    assert_eq!(
        difference(&everything, &accepted),
        Vec::<String>::new(),
        "set in everything.toml but not accepted (cannot happen if it parses)"
    );
}

#[test]
fn the_readme_reference_documents_exactly_the_keys_of_everything_toml() {
    let everything = keys_of_everything();
    let readme = keys_of_readme();
    let report: BTreeMap<&str, Vec<String>> = BTreeMap::from([
        (
            "in everything.toml, missing from the README",
            difference(&everything, &readme),
        ),
        (
            "in the README, not in everything.toml",
            difference(&readme, &everything),
        ),
    ]);
    assert!(
        report.values().all(Vec::is_empty),
        "the README's configuration reference and everything.toml disagree: {report:#?}"
    );
}
