//! Reloads as a spec: a file before, a file after, the changes fulcrum makes.

use super::*;

const BEFORE: &str = r#"
[[listeners]]
name = "web"
bind = "127.0.0.1:8080"
protocol = "http"
pool = "app"

[[listeners]]
name = "pg"
bind = "127.0.0.1:6432"
protocol = "tcp"
pool = "db"

[pools.app]
algorithm = "round_robin"
backends = [{ addr = "127.0.0.1:9001" }, { addr = "127.0.0.1:9002", weight = 2 }]

[pools.db]
backends = [{ addr = "127.0.0.1:5432" }]
"#;

fn config(text: &str) -> Config {
    Config::from_toml(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// `BEFORE` with each `(from, to)` replacement made.
fn edited(edits: &[(&str, &str)]) -> String {
    edits.iter().fold(BEFORE.to_string(), |text, (from, to)| {
        assert!(text.contains(from), "{from:?} is not in the file");
        text.replacen(from, to, 1)
    })
}

fn changes(after: &str) -> Vec<String> {
    diff(&config(BEFORE), &config(after))
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// A name, the edits made to `BEFORE`, and the changes expected.
type Case = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static [&'static str],
);

#[test]
fn each_edit_of_the_file_gives_exactly_its_changes() {
    let cases: &[Case] = &[
        ("nothing", &[], &[]),
        (
            "entries reordered",
            &[(
                r#"{ addr = "127.0.0.1:9001" }, { addr = "127.0.0.1:9002", weight = 2 }"#,
                r#"{ addr = "127.0.0.1:9002", weight = 2 }, { addr = "127.0.0.1:9001" }"#,
            )],
            &[],
        ),
        (
            "a backend added and one removed",
            &[(r#"{ addr = "127.0.0.1:9001" }"#, r#"{ addr = "127.0.0.1:9003", weight = 5 }"#)],
            &[
                "pool app: backend 127.0.0.1:9003 added (weight 5)",
                "pool app: backend 127.0.0.1:9001 removed (drained)",
            ],
        ),
        (
            "a weight changed",
            &[(r#"weight = 2"#, r#"weight = 7"#)],
            &["pool app: backend 127.0.0.1:9002 weight 2 -> 7"],
        ),
        (
            "the algorithm swapped",
            &[(r#"algorithm = "round_robin""#, r#"algorithm = "least_conn""#)],
            &["pool app: algorithm round_robin -> least_conn"],
        ),
        (
            "a pool setting",
            &[("[pools.db]\n", "[pools.db]\nconnect_timeout = \"3s\"\n")],
            &["pool db: settings changed"],
        ),
        (
            "health checks added",
            &[("[pools.db]\n", "[pools.db.health]\ninterval = \"1s\"\n\n[pools.db]\n")],
            &["pool db: health checks changed"],
        ),
        (
            "a listener's timeout: socket kept",
            &[("pool = \"db\"\n", "pool = \"db\"\nidle_timeout = \"30s\"\n")],
            &["listener pg settings changed"],
        ),
        (
            "a listener's port",
            &[("127.0.0.1:6432", "127.0.0.1:6433")],
            &["listener pg rebound (address or protocol changed)"],
        ),
        (
            "a listener renamed: one removed, one added",
            &[(r#"name = "pg""#, r#"name = "postgres""#)],
            &["listener postgres added", "listener pg removed"],
        ),
        (
            "a pool and its listener added",
            &[(
                "[pools.db]\n",
                "[[listeners]]\nname = \"api\"\nbind = \"127.0.0.1:8081\"\nprotocol = \"http\"\n\
                 pool = \"api\"\n\n[pools.api]\nbackends = [{ addr = \"127.0.0.1:9100\" }]\n\n[pools.db]\n",
            )],
            &["pool api added", "listener api added"],
        ),
        (
            "the worker count",
            &[("[[listeners]]\nname = \"web\"", "[runtime]\nworkers = 3\n\n[[listeners]]\nname = \"web\"")],
            &["runtime.workers 0 -> 3 (needs a restart or a binary upgrade)"],
        ),
    ];
    for (name, edits, want) in cases {
        assert_eq!(changes(&edited(edits)), *want, "{name}");
    }
}

#[test]
fn a_removed_pool_comes_after_the_listener_that_used_it_moved_away() {
    let after = edited(&[
        ("pool = \"db\"", "pool = \"app\""),
        (
            "[pools.db]\nbackends = [{ addr = \"127.0.0.1:5432\" }]\n",
            "",
        ),
    ]);
    assert_eq!(
        changes(&after),
        ["listener pg settings changed", "pool db removed"]
    );
}

#[test]
fn only_the_worker_count_needs_a_restart() {
    let before = config(BEFORE);
    let after = config(&edited(&[
        (
            "[[listeners]]\nname = \"web\"",
            "[runtime]\nworkers = 3\nshutdown_grace = \"9s\"\n\n[[listeners]]\nname = \"web\"",
        ),
        ("127.0.0.1:6432", "127.0.0.1:6433"),
    ]));
    let all = diff(&before, &after);
    let restart: Vec<String> = all
        .iter()
        .filter(|c| !c.in_place())
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        restart,
        ["runtime.workers 0 -> 3 (needs a restart or a binary upgrade)"]
    );
    assert_eq!(all.len(), 3, "{all:?}");
}

#[test]
fn the_way_back_undoes_each_change() {
    let before = config(BEFORE);
    let after = config(&edited(&[
        (
            r#"{ addr = "127.0.0.1:9001" }"#,
            r#"{ addr = "127.0.0.1:9003" }"#,
        ),
        (
            r#"algorithm = "round_robin""#,
            "algorithm = \"maglev\"\nhash_key = \"client_ip\"",
        ),
    ]));
    let text =
        |changes: Vec<Change>| -> Vec<String> { changes.iter().map(ToString::to_string).collect() };
    assert_eq!(
        text(diff(&before, &after)),
        [
            "pool app: algorithm round_robin -> maglev",
            "pool app: settings changed",
            "pool app: backend 127.0.0.1:9003 added (weight 1)",
            "pool app: backend 127.0.0.1:9001 removed (drained)",
        ]
    );
    assert_eq!(
        text(diff(&after, &before)),
        [
            "pool app: algorithm maglev -> round_robin",
            "pool app: settings changed",
            "pool app: backend 127.0.0.1:9001 added (weight 1)",
            "pool app: backend 127.0.0.1:9003 removed (drained)",
        ]
    );
    assert!(diff(&after, &after).is_empty());
}
