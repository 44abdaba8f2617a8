//! Checks of `deploy/` against the code: the Grafana dashboard and the Prometheus alert rules
//! may only use metric names that genq exports (`genq::metrics::ALL`), the dashboard must be
//! well formed, and the stop timeouts of Kubernetes and systemd must exceed the daemon's
//! shutdown grace. Syntax and PromQL are checked by `scripts/check-deploy.sh` (promtool).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

/// `worker.shutdown_grace` default (config/genq.toml).
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(relative: &str) -> String {
    let path = repo_file(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn dashboard() -> Value {
    serde_json::from_str(&read("deploy/grafana/genq-dashboard.json"))
        .expect("deploy/grafana/genq-dashboard.json is not valid JSON")
}

/// Every panel, including those nested in (collapsed) rows.
fn all_panels(panels: &[Value]) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in panels {
        out.push(p);
        if let Some(nested) = p.get("panels").and_then(Value::as_array) {
            out.extend(all_panels(nested));
        }
    }
    out
}

fn is_row(panel: &Value) -> bool {
    panel.get("type").and_then(Value::as_str) == Some("row")
}

fn exprs(dashboard: &Value) -> Vec<String> {
    let panels = dashboard["panels"].as_array().expect("panels is an array");
    all_panels(panels)
        .into_iter()
        .flat_map(|p| {
            p.get("targets")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|t| t.get("expr").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// Every `genq_[a-z_]+` word in `text` (not preceded by an identifier character).
fn genq_names(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while let Some(found) = text[i..].find("genq_") {
        let start = i + found;
        let preceded = start > 0 && {
            let c = bytes[start - 1];
            c.is_ascii_alphanumeric() || c == b'_'
        };
        let mut end = start + "genq_".len();
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        if !preceded && end > start + "genq_".len() {
            names.insert(text[start..end].trim_end_matches('_').to_owned());
        }
        i = end;
    }
    names
}

/// The exported metric a series name belongs to: itself, or the histogram whose `_bucket`,
/// `_sum` or `_count` series it is.
fn exported_metric(series: &str) -> Option<&'static str> {
    let exported = genq::metrics::ALL;
    if let Some((name, _, _)) = exported.iter().find(|(name, _, _)| *name == series) {
        return Some(name);
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = series.strip_suffix(suffix)?;
        exported
            .iter()
            .find(|(name, kind, _)| *name == base && *kind == "histogram")
            .map(|(name, _, _)| *name)
    })
}

fn assert_all_exported(source: &str, names: &BTreeSet<String>) {
    let unknown: Vec<&String> = names
        .iter()
        .filter(|n| exported_metric(n).is_none())
        .collect();
    let known: Vec<&str> = genq::metrics::ALL.iter().map(|(n, _, _)| *n).collect();
    assert!(
        unknown.is_empty(),
        "{source} uses metrics that genq does not export: {unknown:?}\nexported (src/metrics.rs): {known:?}"
    );
}

#[test]
fn dashboard_uses_only_exported_metrics() {
    let names: BTreeSet<String> = exprs(&dashboard())
        .iter()
        .flat_map(|e| genq_names(e))
        .collect();
    for expected in [
        "genq_jobs_finished_total",
        "genq_queue_jobs",
        "genq_job_duration_seconds_bucket",
    ] {
        assert!(
            names.contains(expected),
            "dashboard should query {expected}; found {names:?}"
        );
    }
    assert_all_exported("deploy/grafana/genq-dashboard.json", &names);
}

#[test]
fn alert_rules_and_their_tests_use_only_exported_metrics() {
    for file in [
        "deploy/prometheus/alerts.yml",
        "deploy/prometheus/alerts.test.yml",
    ] {
        let names = genq_names(&read(file));
        assert!(
            names.contains("genq_queue_oldest_available_age_seconds"),
            "{file} should use genq_queue_oldest_available_age_seconds; found {names:?}"
        );
        assert_all_exported(file, &names);
    }
}

#[test]
fn dashboard_is_well_formed() {
    let d = dashboard();
    assert_eq!(d["schemaVersion"], 39, "schemaVersion");
    assert!(
        d["uid"].as_str().is_some_and(|u| !u.is_empty()),
        "dashboard uid"
    );
    assert!(
        d["title"].as_str().is_some_and(|t| !t.is_empty()),
        "dashboard title"
    );

    let vars = d["templating"]["list"]
        .as_array()
        .expect("templating.list is an array");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("templating variable {name} missing"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    let queue = var("queue");
    assert_eq!(queue["type"], "query");
    assert!(
        queue["definition"]
            .as_str()
            .is_some_and(|q| q.contains("label_values(genq_queue_jobs, queue)")),
        "queue variable should come from label_values(genq_queue_jobs, queue)"
    );

    let panels = d["panels"].as_array().expect("panels is an array");
    assert!(!panels.is_empty(), "dashboard has no panels");
    let mut ids = BTreeSet::new();
    let mut queries = 0;
    for p in all_panels(panels) {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(!title.trim().is_empty(), "panel without a title: {p}");
        let id = p["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("panel {title:?} has no numeric id"));
        assert!(ids.insert(id), "panel id {id} used twice");
        if is_row(p) {
            continue; // Rows only group panels; they have no queries.
        }
        let targets = p["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        assert!(!targets.is_empty(), "panel {title:?} has no targets");
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(
                !expr.trim().is_empty(),
                "panel {title:?} has a target without expr"
            );
            assert!(
                t["refId"].as_str().is_some_and(|r| !r.is_empty()),
                "panel {title:?}: target without refId"
            );
            queries += 1;
        }
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "panel {title:?} should use the ${{datasource}} variable"
        );
    }
    assert!(
        queries >= 10,
        "expected at least 10 queries, found {queries}"
    );
}

/// The first number after `key` in `text` (`key: 60`, `key=60`, `key = "60s"`).
fn number_after(text: &str, key: &str) -> u64 {
    let at = text.find(key).unwrap_or_else(|| panic!("{key} not found"));
    let rest = &text[at + key.len()..];
    let digits: String = rest
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number after {key}"))
}

/// `worker.shutdown_grace` set by the genq.toml embedded in the ConfigMap (humantime
/// seconds or minutes), else the default.
fn configmap_shutdown_grace() -> Duration {
    let text = read("deploy/kubernetes/configmap.yaml");
    let Some(line) = text
        .lines()
        .find(|l| l.trim_start().starts_with("shutdown_grace"))
    else {
        return DEFAULT_SHUTDOWN_GRACE;
    };
    let value = line
        .split('=')
        .nth(1)
        .expect("shutdown_grace = \"...\"")
        .trim()
        .trim_matches('"');
    let (n, unit) = value.split_at(
        value
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(value.len()),
    );
    let n: u64 = n
        .parse()
        .unwrap_or_else(|_| panic!("unparsable shutdown_grace {value:?}"));
    match unit {
        "s" => Duration::from_secs(n),
        "m" | "min" => Duration::from_secs(n * 60),
        other => panic!("shutdown_grace unit {other:?}: extend this test"),
    }
}

#[test]
fn stop_timeouts_exceed_the_shutdown_grace() {
    let grace = configmap_shutdown_grace().max(DEFAULT_SHUTDOWN_GRACE);

    let k8s = number_after(
        &read("deploy/kubernetes/deployment.yaml"),
        "terminationGracePeriodSeconds:",
    );
    assert!(
        Duration::from_secs(k8s) > grace,
        "terminationGracePeriodSeconds ({k8s}) must exceed worker.shutdown_grace ({grace:?})"
    );

    let systemd = number_after(&read("deploy/systemd/genq.service"), "\nTimeoutStopSec=");
    assert!(
        Duration::from_secs(systemd) > grace,
        "TimeoutStopSec ({systemd}) must exceed worker.shutdown_grace ({grace:?})"
    );
}

#[test]
fn name_scanner_finds_series_names() {
    let names = genq_names(
        "histogram_quantile(0.9, sum by(le) (rate(genq_job_duration_seconds_bucket[5m]))) / x_genq_no genq_ genq.toml",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["genq_job_duration_seconds_bucket"]
    );
    assert_eq!(
        exported_metric("genq_job_duration_seconds_count"),
        Some("genq_job_duration_seconds")
    );
    assert_eq!(
        exported_metric("genq_jobs_running_bucket"),
        None,
        "gauges have no buckets"
    );
    assert_eq!(exported_metric("genq_no_such_metric"), None);
}
