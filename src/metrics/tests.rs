//! Tests of the counters' Prometheus text: the rendered families follow the exposition format
//! and the naming rules, every label value is there from the start at 0, ages count from the
//! oldest waiting, and docs/metrics.md lists every family once and nothing else.
//!
//! Owns: the metrics module's unit tests. Must not touch: anything outside the `Metrics` and
//! the text each test makes.

use super::*;

/// What the web handler adds to `Metrics::render`; tests/suite/web_api.rs checks the real
/// endpoint, these included, against docs/metrics.md.
const WEB_FAMILIES: [&str; 3] = [
    "parkguard_alarms",
    "parkguard_web_event_clients",
    "parkguard_web_sessions",
];

const NOW: i64 = 1_700_000_000_000;

/// A gateway's metrics with one of each kind of connection, a sink and a route, some of
/// them with awkward names, and the web handler's families as it writes them.
fn sample_text() -> String {
    let metrics = Metrics::new();
    metrics.sink("influx \"main\"");
    metrics.mqtt("park\\broker");
    metrics.modbus("bus\n1");
    metrics.route("operators");
    let mut text = PrometheusText::new();
    metrics.render_at(&mut text, NOW);
    text.family("alarms", "gauge", "Alarms that are not normal.");
    text.sample(
        "alarms",
        &[("state", "unacknowledged"), ("severity", "critical")],
        2.0,
    );
    text.single("web_event_clients", "gauge", "Clients.", 0.0);
    text.single("web_sessions", "gauge", "Sessions.", 0.0);
    text.finish()
}

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn the_rendered_text_follows_the_exposition_format_and_conventions() {
    let text = sample_text();
    assert_eq!(check_exposition(&text), Vec::<String>::new(), "{text}");
    assert!(text.contains(r#"sink="influx \"main\"""#), "{text}");
    assert!(text.contains(r#"connection="park\\broker""#), "{text}");
    assert!(text.contains(r#"connection="bus\n1""#), "{text}");
}

#[test]
fn every_label_value_is_there_from_the_start_at_zero() {
    let text = sample_text();
    for kind in DecodeErrorKind::ALL {
        let series = format!(
            "parkguard_decode_errors_total{{reason=\"{}\"}}",
            kind.as_str()
        );
        assert_eq!(value(&text, &series), Some(0.0), "{series}");
    }
    let alarms = text
        .lines()
        .filter(|l| l.starts_with("parkguard_alarms{"))
        .count();
    assert_eq!(alarms, 6 * 5, "every state × severity: {text}");
    assert_eq!(
        value(
            &text,
            r#"parkguard_alarms{state="unacknowledged",severity="critical"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &text,
            r#"parkguard_alarms{state="shelved",severity="none"}"#
        ),
        Some(0.0)
    );
    for result in ["ok", "exception", "timeout", "transport"] {
        let series = format!(
            "parkguard_modbus_requests_total{{connection=\"bus\\n1\",result=\"{result}\"}}"
        );
        assert_eq!(value(&text, &series), Some(0.0), "{series}");
    }
    for series in [
        r#"parkguard_alerts_finished_total{result="delivered"}"#,
        r#"parkguard_alerts_finished_total{result="given_up"}"#,
        r#"parkguard_alerts_oldest_critical_age_seconds{route="operators"}"#,
        r#"parkguard_outbox_commits_total{result="failed"}"#,
        r#"parkguard_sink_write_requests_total{sink="influx \"main\"",result="failed"}"#,
        r#"parkguard_outbox_oldest_age_seconds{sink="influx \"main\""}"#,
        r#"parkguard_store_failing{store="journal"}"#,
        r#"parkguard_mqtt_connected{connection="park\\broker"}"#,
    ] {
        assert_eq!(value(&text, series), Some(0.0), "{series}: {text}");
    }
}

#[test]
fn ages_count_from_the_oldest_waiting_and_are_zero_when_none_waits() {
    let metrics = Metrics::new();
    let sink = metrics.sink("s");
    metrics.route("quiet");
    let render = || {
        let mut text = PrometheusText::new();
        metrics.render_at(&mut text, NOW);
        text.finish()
    };
    let age = r#"parkguard_outbox_oldest_age_seconds{sink="s"}"#;
    assert_eq!(value(&render(), age), Some(0.0));
    sink.oldest_created_ms
        .store((NOW - 90_500) as u64, Ordering::Relaxed);
    assert_eq!(value(&render(), age), Some(90.5));
    // A batch stamped by a clock ahead of this one: no negative age.
    sink.oldest_created_ms
        .store((NOW + 5_000) as u64, Ordering::Relaxed);
    assert_eq!(value(&render(), age), Some(0.0));

    metrics
        .alerts_oldest_critical
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert("loud".into(), NOW - 400_000);
    let text = render();
    let route = |name: &str| {
        value(
            &text,
            &format!("parkguard_alerts_oldest_critical_age_seconds{{route=\"{name}\"}}"),
        )
    };
    assert_eq!(route("loud"), Some(400.0));
    assert_eq!(route("quiet"), Some(0.0));
}

#[test]
fn outcomes_are_one_family_with_a_result_label() {
    let metrics = Metrics::new();
    let link = metrics.modbus("bus");
    let ok: Result<Result<Result<(), ()>, ()>, ()> = Ok(Ok(Ok(())));
    link.count_answer(&ok);
    link.count_answer(&ok);
    link.count_answer(&Ok::<Result<Result<(), ()>, ()>, ()>(Ok(Err(()))));
    link.count_answer(&Ok::<Result<Result<(), ()>, ()>, ()>(Err(())));
    link.count_answer(&Err::<Result<Result<(), ()>, ()>, ()>(()));
    metrics.alerts_delivered.store(3, Ordering::Relaxed);
    let mut text = PrometheusText::new();
    metrics.render_at(&mut text, NOW);
    let text = text.finish();
    for (result, n) in [
        ("ok", 2.0),
        ("exception", 1.0),
        ("transport", 1.0),
        ("timeout", 1.0),
    ] {
        let series =
            format!("parkguard_modbus_requests_total{{connection=\"bus\",result=\"{result}\"}}");
        assert_eq!(value(&text, &series), Some(n), "{series}");
    }
    assert_eq!(
        value(
            &text,
            r#"parkguard_alerts_finished_total{result="delivered"}"#
        ),
        Some(3.0)
    );
    let build = text
        .lines()
        .find(|l| l.starts_with("parkguard_build_info{"))
        .unwrap_or_default();
    assert!(
        build.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))
            && build.ends_with(" 1"),
        "{build}"
    );
}

#[test]
fn a_family_declared_twice_is_written_once_with_all_its_samples() {
    let mut text = PrometheusText::new();
    text.family("x_total", "counter", "X.");
    text.sample("x_total", &[("a", "1")], 1.0);
    text.single("y", "gauge", "Y.", 2.0);
    text.family("x_total", "counter", "X.");
    text.sample("x_total", &[("a", "2")], 3.0);
    let text = text.finish();
    assert_eq!(check_exposition(&text), Vec::<String>::new(), "{text}");
    assert_eq!(text.matches("# TYPE parkguard_x_total").count(), 1);
    assert_eq!(value(&text, r#"parkguard_x_total{a="2"}"#), Some(3.0));
}

#[test]
fn the_check_finds_convention_breaks() {
    let broken = [
        ("parkguard_a_total 1\n", "no TYPE"),
        ("# TYPE parkguard_a_total counter\nparkguard_a_total 1\n", "TYPE of"),
        (
            "# HELP parkguard_a A.\n# TYPE parkguard_a counter\nparkguard_a 1\n",
            "does not end in _total",
        ),
        (
            "# HELP parkguard_a A.\n# TYPE parkguard_a gauge\n# HELP parkguard_a A.\nparkguard_a 1\n",
            "second HELP",
        ),
        (
            "# HELP parkguard_a A.\n# TYPE parkguard_a gauge\nparkguard_a{l=\"x\\y\"} 1\n",
            "bad escape",
        ),
        (
            "# HELP parkguard_a A.\n# TYPE parkguard_a gauge\nparkguard_a{l=\"x\"\"} 1\n",
            "not separated",
        ),
        (
            "# HELP parkguard_a A.\n# TYPE parkguard_a gauge\n# HELP parkguard_b B.\n# TYPE parkguard_b gauge\nparkguard_a 1\n",
            "away from its family",
        ),
        (
            "# HELP parkguard_a A.\n# TYPE parkguard_a gauge\nparkguard_a 1\nparkguard_a 2\n",
            "twice",
        ),
        (
            "# HELP parkguard_a_ms A.\n# TYPE parkguard_a_ms gauge\nparkguard_a_ms 1\n",
            "base units",
        ),
        (
            "# HELP parkguard_a A.\n# TYPE parkguard_a untyped\nparkguard_a 1\n",
            "type",
        ),
        (
            "# HELP parkguard_aB A.\n# TYPE parkguard_aB gauge\nparkguard_aB 1\n",
            "snake case",
        ),
        (
            "# HELP parkguard_a A.\n# TYPE parkguard_a gauge\nparkguard_a inf\n",
            "bad value",
        ),
    ];
    for (text, why) in broken {
        let problems = check_exposition(text);
        assert!(
            problems.iter().any(|p| p.contains(why)),
            "{text:?} should fail with {why:?}: {problems:?}"
        );
    }
    let mut undeclared = PrometheusText::new();
    undeclared.sample("z", &[], 1.0);
    assert!(!check_exposition(&undeclared.finish()).is_empty());
}

#[test]
fn docs_metrics_md_lists_every_family_once_and_nothing_else() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md");
    let docs = std::fs::read_to_string(path).unwrap_or_default();
    let documented = documented_families(&docs);
    assert!(
        !documented.is_empty(),
        "no `### parkguard_...` headings in {path}"
    );
    let mut once = BTreeSet::new();
    for name in &documented {
        assert!(
            once.insert(name.clone()),
            "{name} listed twice in docs/metrics.md"
        );
    }
    let exposed: BTreeSet<String> = exposed_families(&sample_text()).into_iter().collect();
    let missing: Vec<&String> = exposed.difference(&once).collect();
    assert!(missing.is_empty(), "not in docs/metrics.md: {missing:?}");
    let stale: Vec<&String> = once.difference(&exposed).collect();
    assert!(
        stale.is_empty(),
        "in docs/metrics.md but not exported: {stale:?}"
    );
    assert!(WEB_FAMILIES.iter().all(|f| exposed.contains(*f)));
    // Every name the reference mentions (rules and examples included) is a family or a
    // summary's _sum/_count.
    for word in docs.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if !word.starts_with(PREFIX) || word == "parkguard_" {
            continue;
        }
        let known = exposed.contains(word)
            || ["_sum", "_count"].iter().any(|s| {
                word.strip_suffix(s)
                    .is_some_and(|base| exposed.contains(base))
            });
        assert!(
            known,
            "docs/metrics.md mentions {word}, which is not exported"
        );
    }
}
