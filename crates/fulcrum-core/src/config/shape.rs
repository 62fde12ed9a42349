//! Reads the file's TOML into the [`raw`](super::raw) structs, reporting every unknown key and
//! every value of the wrong type with its path, instead of stopping at the first one.
//!
//! serde stops at its first error. So the text is parsed once into a TOML tree, deserialized
//! with `serde_path_to_error` (which says exactly where the error is), and the offending entry
//! is taken out of the tree (or, inside a list, replaced by an empty value of the expected type
//! so later positions keep their index) before trying again. The messages are rewritten in the
//! file's terms (key, table, list, integer), never serde's (field, map, sequence, i64).
//! Only a syntax error stops everything: past it there is no tree to go on with.

use serde_path_to_error::Segment;
use toml::Value;

use super::error::{ConfigError, ConfigErrors};
use super::raw::RawConfig;

/// More shape errors than this in one file means it is not a fulcrum configuration at all;
/// the first ones are enough to say so.
const MAX_SHAPE_ERRORS: usize = 100;

/// What reading the file's shape found: the raw structs (with every bad entry left out) and one
/// error per bad entry.
#[derive(Debug)]
pub(super) struct Shape {
    pub raw: RawConfig,
    pub errors: Vec<ConfigError>,
}

/// True when what validation says at `path` is a consequence of an entry refused for its
/// shape being left out: `path` is that entry or below it (`addr` is missing because the
/// backend was not a table), or a table above it (`liveness` "needs a probe" because its `tcp`
/// was not a boolean). Such errors are not news, and would send the reader the wrong way.
pub(super) fn covered(shape_errors: &[ConfigError], path: &str) -> bool {
    let nested = |outer: &str, inner: &str| {
        inner
            .strip_prefix(outer)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
    };
    shape_errors
        .iter()
        .any(|shape| nested(&shape.path, path) || (!path.is_empty() && nested(path, &shape.path)))
}

/// Reads `text`; `Err` only for a syntax error (or a file so far from a configuration that
/// [`MAX_SHAPE_ERRORS`] were found).
pub(super) fn read(text: &str) -> Result<Shape, ConfigErrors> {
    let mut tree = match toml::from_str::<toml::Table>(text) {
        Ok(table) => Value::Table(table),
        Err(e) => {
            return Err(ConfigErrors(vec![ConfigError {
                path: String::new(),
                message: describe_syntax_error(text, &e),
            }]))
        }
    };
    let mut errors = Vec::new();
    while errors.len() < MAX_SHAPE_ERRORS {
        let error = match serde_path_to_error::deserialize::<_, RawConfig>(tree.clone()) {
            Ok(raw) => return Ok(Shape { raw, errors }),
            Err(error) => error,
        };
        let segments: Vec<&Segment> = error.path().iter().collect();
        let serde_message = error.inner().message();
        let expected = expected_kind(serde_message);
        errors.push(ConfigError {
            path: render_path(&segments),
            message: describe(serde_message, expected, lookup(&tree, &segments)),
        });
        if !leave_out(&mut tree, &segments, expected) {
            break;
        }
    }
    Err(ConfigErrors(errors))
}

/// `pools.app.backends[0].weight`, the same form validation uses.
fn render_path(segments: &[&Segment]) -> String {
    let mut path = String::new();
    for segment in segments {
        match segment {
            Segment::Seq { index } => path.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Segment::Unknown => path.push_str(".?"),
        }
    }
    path
}

fn lookup<'a>(tree: &'a Value, segments: &[&Segment]) -> Option<&'a Value> {
    segments
        .iter()
        .try_fold(tree, |value, segment| match segment {
            Segment::Seq { index } => value.as_array()?.get(*index),
            Segment::Map { key } => value.as_table()?.get(key),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
}

fn lookup_mut<'a>(tree: &'a mut Value, segments: &[&Segment]) -> Option<&'a mut Value> {
    segments
        .iter()
        .try_fold(tree, |value, segment| match segment {
            Segment::Seq { index } => value.as_array_mut()?.get_mut(*index),
            Segment::Map { key } => value.as_table_mut()?.get_mut(key),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
}

/// Takes the entry at `segments` out of the tree so the next attempt gets past it. A value is
/// removed from its table (it takes its default), except where a table was expected: that
/// becomes an empty table, so a pool refused for its shape still exists by name and listeners
/// naming it do not get a second, misleading error. A list element is replaced by an empty value
/// of the expected kind (removing it would shift the index of every later element, and so the
/// paths of their errors); when the kind is unknown, the whole list goes. False when nothing
/// could be left out (the same error would come back forever).
fn leave_out(tree: &mut Value, segments: &[&Segment], expected: Option<Kind>) -> bool {
    let Some((last, parent)) = segments.split_last() else {
        return false;
    };
    let Some(slot) = lookup_mut(tree, segments) else {
        // The error is about a key that is not there (unknown keys are found, not missing).
        return false;
    };
    match (last, expected) {
        (Segment::Seq { .. }, Some(kind)) | (Segment::Map { .. }, Some(kind @ Kind::Table)) => {
            let placeholder = kind.placeholder();
            if *slot == placeholder {
                return false;
            }
            *slot = placeholder;
            true
        }
        (Segment::Map { key }, _) => lookup_mut(tree, parent)
            .and_then(Value::as_table_mut)
            .and_then(|table| table.remove(key.as_str()))
            .is_some(),
        (Segment::Seq { .. }, None) => leave_out(tree, parent, None),
        (Segment::Enum { .. } | Segment::Unknown, _) => false,
    }
}

/// The kinds of value a configuration file holds, in its own words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Integer,
    Number,
    String,
    Boolean,
    List,
    Table,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Integer => "an integer",
            Kind::Number => "a number",
            Kind::String => "a string",
            Kind::Boolean => "true or false",
            Kind::List => "a list",
            Kind::Table => "a table",
        }
    }

    fn placeholder(self) -> Value {
        match self {
            Kind::Integer => Value::Integer(0),
            Kind::Number => Value::Float(0.0),
            Kind::String => Value::String(String::new()),
            Kind::Boolean => Value::Boolean(false),
            Kind::List => Value::Array(Vec::new()),
            Kind::Table => Value::Table(toml::Table::new()),
        }
    }
}

/// What serde expected, from the end of its "invalid type: …, expected X" message.
fn expected_kind(serde_message: &str) -> Option<Kind> {
    let (_, expected) = serde_message.rsplit_once(", expected ")?;
    Some(match expected.trim() {
        "i64" | "u64" | "i32" | "u32" | "u16" | "u8" | "an integer" => Kind::Integer,
        "f64" | "f32" | "a float" => Kind::Number,
        "a string" | "a character" => Kind::String,
        "a boolean" => Kind::Boolean,
        "a sequence" => Kind::List,
        other if other == "a map" || other.starts_with("struct ") => Kind::Table,
        _ => return None,
    })
}

fn describe_value(value: &Value) -> String {
    match value {
        Value::String(s) => format!("the string {s:?}"),
        Value::Integer(i) => format!("the integer {i}"),
        Value::Float(f) => format!("the number {f}"),
        Value::Boolean(b) => b.to_string(),
        Value::Datetime(d) => format!("the date-time {d}"),
        Value::Array(_) => "a list".to_string(),
        Value::Table(_) => "a table".to_string(),
    }
}

fn describe(serde_message: &str, expected: Option<Kind>, found: Option<&Value>) -> String {
    if let Some(rest) = serde_message.strip_prefix("unknown field `") {
        let key = rest.split('`').next().unwrap_or_default();
        return describe_unknown_key(key, &known_keys(rest));
    }
    match (expected, found) {
        (Some(expected), Some(found)) => {
            format!(
                "expected {}, got {}",
                expected.name(),
                describe_value(found)
            )
        }
        // Not a type error (serde says something this module has no words for): its own
        // message, on one line, is still better than nothing.
        _ => serde_message
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// The keys serde listed after "expected": every word between backticks but the first (the
/// unknown key itself).
fn known_keys(rest: &str) -> Vec<&str> {
    rest.split('`').skip(2).step_by(2).collect()
}

fn describe_unknown_key(key: &str, known: &[&str]) -> String {
    let closest = known
        .iter()
        .map(|candidate| (edit_distance(key, candidate), *candidate))
        .min();
    match closest {
        Some((distance, candidate)) if distance <= key.len().max(3) / 3 => {
            format!("unknown key; did you mean `{candidate}`?")
        }
        _ if known.is_empty() => "unknown key; this table takes no keys".to_string(),
        _ => format!("unknown key; this table takes: {}", known.join(", ")),
    }
}

/// Edit distance counting a swap of two neighbours as one edit (`nmae` is one typo away from
/// `name`), for "did you mean". Keys are short, so the plain table is all that is needed (and
/// not worth a dependency).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let substitution = d[i - 1][j - 1] + usize::from(a[i - 1] != b[j - 1]);
            let mut best = substitution.min(d[i - 1][j] + 1).min(d[i][j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// toml's syntax messages are good but multi-line; fold them to one line with a line:column
/// prefix.
fn describe_syntax_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().to_string();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_character_edits() {
        assert_eq!(edit_distance("colour", "color"), 1);
        assert_eq!(edit_distance("algoritm", "algorithm"), 1);
        assert_eq!(edit_distance("nmae", "name"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("weight", "weight"), 0);
    }
}
