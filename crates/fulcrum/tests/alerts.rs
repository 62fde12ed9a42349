//! The alert rules and their runbook, checked the way an operator's CI would: `promtool check
//! rules` accepts `examples/prometheus/alerts.yml`, `promtool test rules` runs its unit tests
//! (a drain failure fires the drain alert, panic fires the panic alert, a healthy fleet fires
//! nothing), every alert links to a runbook section that exists, and every metric the rules
//! use is one fulcrum exports (documented in the README, present in a real scrape). The
//! Grafana dashboard (`examples/grafana/fulcrum.json`) is held to the same: valid PromQL (by
//! promtool), documented metrics only, and every metric an alert watches on a panel.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use fulcrum::RunningApp;
use fulcrum_core::config::Config;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn promtool(args: &[&str]) -> (bool, String) {
    let promtool = installed(&["/usr/bin/promtool"], "prometheus");
    let out = Command::new(promtool)
        .args(args)
        .current_dir(repo().join("examples/prometheus"))
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// The `fulcrum_…` names in `text`, without histogram suffixes.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("fulcrum_") {
        let start = i + at;
        let preceded =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = start
            + text[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(text.len() - start);
        if !preceded {
            let name = &text[start..end];
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            names.insert(base.to_string());
        }
        i = end;
    }
    names
}

/// The metrics the README's Metrics section documents.
fn documented_metrics() -> BTreeSet<String> {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = readme
        .split("\n## Metrics\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .unwrap();
    metric_names(section)
}

#[test]
fn promtool_accepts_the_rules_and_their_unit_tests_pass() {
    let (ok, said) = promtool(&["check", "rules", "alerts.yml"]);
    assert!(ok, "promtool check rules:\n{said}");
    assert!(said.contains("SUCCESS"), "{said}");
    let (ok, said) = promtool(&["test", "rules", "alerts.test.yml"]);
    assert!(ok, "promtool test rules:\n{said}");
}

#[test]
fn every_alert_links_to_its_runbook_section_and_every_section_is_an_alert() {
    let rules = std::fs::read_to_string(repo().join("examples/prometheus/alerts.yml")).unwrap();
    let runbook = std::fs::read_to_string(repo().join("docs/runbook.md")).unwrap();
    let sections: BTreeSet<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(str::to_string)
        .collect();
    let alerts: BTreeSet<String> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(str::to_string)
        .collect();
    assert!(alerts.len() >= 10, "{alerts:?}");
    assert_eq!(alerts, sections, "alerts and runbook sections differ");
    for alert in &alerts {
        let link = format!("docs/runbook.md#{}", alert.to_lowercase());
        let block = rules
            .split("- alert: ")
            .find(|b| b.starts_with(&format!("{alert}\n")))
            .unwrap();
        assert!(block.contains(&link), "{alert} does not link to {link}");
        let section = runbook
            .split("\n## ")
            .find(|s| s.starts_with(&format!("{alert}\n")))
            .unwrap();
        for part in ["**Means**", "**Check first**", "**Do**", "**Escalate**"] {
            assert!(section.contains(part), "runbook {alert}: no {part}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rules_use_only_metrics_fulcrum_exports() {
    let rules = std::fs::read_to_string(repo().join("examples/prometheus/alerts.yml")).unwrap();
    let documented = documented_metrics();
    let used = metric_names(&rules);
    let undocumented: Vec<_> = used.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "rules use undocumented metrics: {undocumented:?}"
    );

    // A running fulcrum (HA in active-active mode, TCP and HTTP listeners) exports them all,
    // but discovery's, which need a store (tests/discovery.rs checks those), and the
    // WebSocket registry's, which need Redis (tests/ws_registry.rs checks those).
    let echo = echo_backend().await;
    let text = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n[ha]\nmode = \"active_active\"\nnode = \"a\"\n\
         [[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\npool = \"app\"\n\
         [[listeners]]\nname = \"raw\"\nbind = \"127.0.0.1:0\"\nprotocol = \"tcp\"\npool = \"app\"\n\
         [pools.app]\nbackends = [{{ addr = \"{echo}\" }}]\n"
    );
    let app = RunningApp::start(&Config::from_toml(&text).unwrap()).unwrap();
    let (status, scrape) = Client::connect(app.admin_addr().unwrap())
        .await
        .get("/metrics")
        .await;
    assert_eq!(status, 200);
    app.shutdown();
    let exported = metric_names(&scrape);
    let missing: Vec<_> = documented
        .iter()
        .filter(|name| !name.starts_with("fulcrum_discovery_"))
        .filter(|name| !name.starts_with("fulcrum_ws_registry_"))
        .filter(|name| !exported.contains(*name))
        .collect();
    assert!(
        missing.is_empty(),
        "documented but not exported: {missing:?}\n{scrape}"
    );
    let extra: Vec<_> = exported.difference(&documented).collect();
    assert!(extra.is_empty(), "exported but not documented: {extra:?}");
}

#[test]
fn the_grafana_dashboard_asks_valid_promql_of_documented_metrics_and_shows_every_alerted_one() {
    let path = repo().join("examples/grafana/fulcrum.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(dashboard["uid"], "fulcrum-overview");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            assert_eq!(
                target["datasource"]["uid"], "${datasource}",
                "{}: a fixed data source does not import",
                panel["title"]
            );
            queries.push((
                panel["title"].as_str().unwrap().to_string(),
                target["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    assert!(queries.len() >= 30, "{} queries", queries.len());
    let all: String = queries
        .iter()
        .map(|(_, e)| e.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let used = metric_names(&all);
    let documented = documented_metrics();
    let undocumented: Vec<_> = used.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "the dashboard uses undocumented metrics: {undocumented:?}"
    );
    let rules = std::fs::read_to_string(repo().join("examples/prometheus/alerts.yml")).unwrap();
    let unshown: Vec<_> = metric_names(&rules).difference(&used).cloned().collect();
    assert!(
        unshown.is_empty(),
        "alerted on but on no panel: {unshown:?}"
    );
    // Panels name the alerts (and so the runbook sections) that watch them: real ones.
    let alerts: BTreeSet<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    for panel in dashboard["panels"].as_array().unwrap() {
        let description = panel["description"].as_str().unwrap_or("");
        for named in description
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| w.starts_with("Fulcrum"))
        {
            assert!(
                alerts.contains(named),
                "{}: names {named}, which is no alert",
                panel["title"]
            );
        }
    }

    // Every query, with Grafana's variables as "all" and a rate window, as a recording rule:
    // promtool parses each as Prometheus would.
    let rules: Vec<serde_json::Value> = queries
        .iter()
        .enumerate()
        .map(|(i, (title, expr))| {
            let expr = expr
                .replace("$__rate_interval", "5m")
                .replace("$listener", ".*")
                .replace("$pool", ".*");
            assert!(
                !expr.contains('$'),
                "{title}: an unknown variable in {expr}"
            );
            serde_json::json!({ "record": format!("grafana_query_{i}"), "expr": expr })
        })
        .collect();
    let file = std::env::temp_dir().join(format!("fulcrum-grafana-{}.yml", std::process::id()));
    let groups = serde_json::json!({ "groups": [{ "name": "grafana", "rules": rules }] });
    std::fs::write(&file, groups.to_string()).unwrap();
    let (ok, said) = promtool(&["check", "rules", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    assert!(ok, "promtool rejects a dashboard query:\n{said}");
}
