//! The metrics, their documentation and their users agree: every family a running gateway exposes is in the
//! README's metrics table, and the Grafana dashboard and the Prometheus rules use only documented metrics (and
//! recording rules that `alerts.yml` defines).

mod common;

use std::collections::BTreeSet;

use common::*;

/// Names made of `prefix` and `[a-z0-9_:]` characters found in `text`.
fn names(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().last();
        let tail = &rest[i..];
        let len = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            out.insert(tail[..len].to_string());
        }
        rest = &tail[len.max(1)..];
    }
    out
}

/// A histogram's series names map back to the family.
fn family(name: &str) -> &str {
    ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name)
}

/// The metric names in the README's metrics table (backticked names in a row's first cell).
fn documented() -> BTreeSet<String> {
    let readme = std::fs::read_to_string(workspace().join("README.md")).expect("README");
    let table = &readme[readme.find("## Metrics").expect("metrics section")..];
    let table = &table[..table[3..].find("\n## ").map_or(table.len(), |i| i + 3)];
    table
        .lines()
        .filter(|l| l.starts_with("| `"))
        .flat_map(|l| {
            let cell = l.split('|').nth(1).unwrap_or_default();
            cell.split('`').skip(1).step_by(2).map(str::to_owned).collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn every_exposed_metric_is_documented_and_the_dashboard_and_rules_use_documented_ones() {
    let docs = documented();
    assert!(docs.len() > 30, "{docs:?}");

    let mut cfg = config(&bundled_models());
    cfg.models.watch_interval_ms = 0;
    let gw = start(cfg).await;
    let c = client();
    for _ in 0..5 {
        post(&c, &url(&gw, "/v2/models/breast-cancer/infer"), breast_cancer_rows(1).to_string()).await;
    }
    post(&c, &url(&gw, "/v2/models/nope/infer"), "{}").await;
    let text = scrape(&gw).await;
    gw.shutdown().await;
    let exposed: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect();
    assert!(exposed.iter().any(|n| n.starts_with("process_")), "process metrics: {exposed:?}");
    let undocumented: Vec<&String> = exposed.iter().filter(|n| !docs.contains(*n)).collect();
    assert!(undocumented.is_empty(), "exposed but not in the README's metrics table: {undocumented:?}");

    let rules = std::fs::read_to_string(workspace().join("deploy/prometheus/alerts.yml")).expect("rules");
    let recorded: BTreeSet<String> =
        rules.lines().filter_map(|l| l.trim().strip_prefix("- record: ")).map(|s| s.trim().to_owned()).collect();
    assert_eq!(recorded.len(), 5, "{recorded:?}");
    let dashboard = std::fs::read_to_string(workspace().join("deploy/grafana/gateway.json")).expect("dashboard");
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let exprs: Vec<&str> = parsed["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str())
        .collect();
    assert!(exprs.len() >= 20, "{exprs:?}");
    for (what, text) in [("dashboard", exprs.join("\n")), ("alerts.yml", rules.clone())] {
        for prefix in ["gateway_", "process_"] {
            for n in names(&text, prefix) {
                assert!(docs.contains(family(&n)), "{what} uses {n}, which the README does not document");
            }
        }
        for n in names(&text, "model:") {
            assert!(recorded.contains(&n), "{what} uses recording rule {n}, which alerts.yml does not define");
        }
    }
}
