//! When one route always wins over a later one: every request the later route matches, the
//! earlier matches too, so the later is dead configuration — almost always a mistake in the
//! order (a catch-all written first). The test is condition by condition, so it is sound
//! (it never calls a reachable route unreachable) but not complete: a route covered only by
//! several earlier ones together is not found.

use super::{FieldMatch, PathMatch, RouteMatch, ValueMatch};

/// True when every request `later` matches, `earlier` matches too.
pub fn covers(earlier: &RouteMatch, later: &RouteMatch) -> bool {
    let host = match (&earlier.host, &later.host) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(e), Some(l)) => e.covers(l),
    };
    let path = match (&earlier.path, &later.path) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(PathMatch::Prefix(e)), Some(PathMatch::Prefix(l) | PathMatch::Exact(l))) => {
            l.starts_with(e.as_str())
        }
        (Some(PathMatch::Exact(e)), Some(PathMatch::Exact(l))) => e == l,
        (Some(PathMatch::Exact(_)), Some(PathMatch::Prefix(_))) => false,
    };
    let methods = earlier.methods.is_empty()
        || (!later.methods.is_empty() && later.methods.iter().all(|m| earlier.methods.contains(m)));
    host && path
        && methods
        && fields_cover(&earlier.headers, &later.headers)
        && fields_cover(&earlier.query, &later.query)
}

/// Every condition of `earlier` is implied by one of `later` on the same name.
fn fields_cover(earlier: &[FieldMatch], later: &[FieldMatch]) -> bool {
    earlier.iter().all(|e| {
        later
            .iter()
            .filter(|l| l.name == e.name)
            .any(|l| value_covers(&e.value, &l.value))
    })
}

fn value_covers(earlier: &ValueMatch, later: &ValueMatch) -> bool {
    match (earlier, later) {
        (ValueMatch::Present, _) => true,
        (ValueMatch::Equals(e), ValueMatch::Equals(l)) => e == l,
        (ValueMatch::Regex(e), ValueMatch::Equals(l)) => e.is_match(l.as_bytes()),
        (ValueMatch::Regex(e), ValueMatch::Regex(l)) => e.pattern == l.pattern,
        _ => false,
    }
}
