//! Synthetic traffic: steady traffic with noise never fires; a known spike does, in the right
//! group and with the right kind.

use uuid::Uuid;

use super::*;

fn rule(extra: &str) -> AnomalyRule {
    toml::from_str(&format!(
        "name = \"r\"\ngroup_by = [\"k8s_workload\"]\n{extra}"
    ))
    .unwrap()
}

/// One exchange of `workload` ending at `at` seconds.
fn row(workload: &str, at: f64, tokens: u64, cost: f64, status: u16, ms: f64) -> TraceRow {
    #[allow(clippy::cast_possible_truncation)]
    let end = (at * 1e6) as i64;
    let mut r = TraceRow::new(Uuid::new_v4(), end - 1000, end);
    r.k8s_workload = workload.into();
    r.input_tokens = Some(tokens / 2);
    r.output_tokens = Some(tokens - tokens / 2);
    r.cost_usd = Some(cost);
    r.status = Some(status);
    r.duration_ms = ms;
    r
}

struct Traffic {
    rng: fastrand::Rng,
    t: f64,
}

impl Traffic {
    fn new(seed: u64) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(seed),
            t: 1_800_000_000.0,
        }
    }

    /// Steady traffic of `workload` for `minutes`: about 10 calls a minute, ~500 tokens,
    /// ~$0.002 each, 2% errors, ~800 ms; returns every finding kind raised.
    fn steady(&mut self, a: &mut Anomalies, workload: &str, minutes: u32) -> Vec<String> {
        self.steady_at(a, workload, minutes, 10)
    }

    /// The same at about `per_minute` calls a minute (±30%).
    fn steady_at(
        &mut self,
        a: &mut Anomalies,
        workload: &str,
        minutes: u32,
        per_minute: u32,
    ) -> Vec<String> {
        let mut kinds = Vec::new();
        for _ in 0..minutes {
            let calls = self.rng.u32(per_minute * 7 / 10..=per_minute * 13 / 10);
            for i in 0..calls {
                let at = self.t + 60.0 * f64::from(i) / f64::from(calls);
                let tokens = self.rng.u64(400..=600);
                let status = if self.rng.u32(0..50) == 0 { 500 } else { 200 };
                let ms = 600.0 + 400.0 * self.rng.f64();
                #[allow(clippy::cast_precision_loss)]
                let mut r = row(workload, at, tokens, tokens as f64 * 4e-6, status, ms);
                a.observe(&mut r);
                kinds.extend(r.findings.into_iter().map(|f| f.kind));
            }
            self.t += 60.0;
        }
        kinds
    }
}

#[test]
fn steady_traffic_never_fires() {
    for seed in 0..20 {
        for per_minute in [10, 40] {
            let mut a = Anomalies::new(&[rule("")], AnomalyMetrics::default());
            let mut t = Traffic::new(seed);
            let kinds = t.steady_at(&mut a, "chat", 300, per_minute);
            assert!(kinds.is_empty(), "seed {seed}, {per_minute}/min: {kinds:?}");
        }
    }
}

#[test]
fn a_request_burst_is_a_request_rate_and_cost_spike_once_per_bucket() {
    let mut a = Anomalies::new(&[rule("")], AnomalyMetrics::default());
    let mut t = Traffic::new(1);
    assert!(t.steady(&mut a, "chat", 60).is_empty());
    let mut found = Vec::new();
    // 200 calls in one minute, each as costly as usual.
    for i in 0..200 {
        let mut r = row("chat", t.t + f64::from(i) * 0.25, 500, 0.002, 200, 800.0);
        a.observe(&mut r);
        found.extend(r.findings);
    }
    let mut kinds: Vec<&str> = found.iter().map(|f| f.kind.as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        ["anomaly.cost_spike", "anomaly.request_rate"],
        "{found:?}"
    );
    let f = found
        .iter()
        .find(|f| f.kind == "anomaly.request_rate")
        .unwrap();
    let counted = |kind| a.metrics.findings.get_or_create(&KindLabel { kind }).get();
    assert_eq!(counted("anomaly.request_rate"), 1);
    assert_eq!(counted("anomaly.latency"), 0);
    assert_eq!(
        (f.severity.as_str(), f.location.as_str()),
        ("medium", "exchange")
    );
    assert!(
        f.excerpt.contains("requests_per_minute") && f.excerpt.contains("k8s_workload=chat"),
        "{}",
        f.excerpt
    );
    assert!(f.confidence > 0.9);
}

#[test]
fn a_token_spike_error_burst_and_slow_call_fire_their_kinds() {
    let mut a = Anomalies::new(
        &[rule(
            "metrics = [\"tokens_per_request\", \"error_rate\", \"latency\"]",
        )],
        AnomalyMetrics::default(),
    );
    let mut t = Traffic::new(2);
    assert!(t.steady(&mut a, "chat", 60).is_empty());
    let mut r = row("chat", t.t + 1.0, 50_000, 0.2, 200, 800.0);
    a.observe(&mut r);
    assert_eq!(r.findings.len(), 1);
    assert_eq!(r.findings[0].kind, "anomaly.token_spike");
    let mut r = row("chat", t.t + 2.0, 500, 0.002, 200, 30_000.0);
    a.observe(&mut r);
    assert_eq!(r.findings[0].kind, "anomaly.latency");
    // Error rates are judged per bucket, when it closes: 40 calls a minute, then a minute
    // with half of them failing; the first call of the next minute carries the finding.
    let mut t = Traffic::new(5);
    let mut a = Anomalies::new(
        &[rule("metrics = [\"error_rate\"]")],
        AnomalyMetrics::default(),
    );
    assert!(t.steady_at(&mut a, "chat", 60, 40).is_empty());
    let mut kinds = Vec::new();
    for i in 0..40 {
        let status = if i % 2 == 0 { 503 } else { 200 };
        let mut r = row("chat", t.t + 1.0 + f64::from(i), 500, 0.002, status, 800.0);
        a.observe(&mut r);
        kinds.extend(r.findings.into_iter().map(|f| f.kind));
    }
    assert!(kinds.is_empty(), "{kinds:?}");
    let mut r = row("chat", t.t + 61.0, 500, 0.002, 200, 800.0);
    a.observe(&mut r);
    let kinds: Vec<_> = r.findings.into_iter().map(|f| f.kind).collect();
    assert_eq!(kinds, ["anomaly.error_rate"]);
}

#[test]
fn groups_have_their_own_baselines_and_need_min_samples() {
    let mut a = Anomalies::new(
        &[rule("metrics = [\"tokens_per_request\"]\nmin_samples = 50")],
        AnomalyMetrics::default(),
    );
    let mut t = Traffic::new(3);
    t.steady(&mut a, "chat", 60);
    // A new workload: too few samples to judge, even for a huge value.
    let mut r = row("batch", t.t, 50_000, 0.2, 200, 800.0);
    a.observe(&mut r);
    assert!(r.findings.is_empty());
    // The same value in the established group fires.
    let mut r = row("chat", t.t, 50_000, 0.2, 200, 800.0);
    a.observe(&mut r);
    assert_eq!(r.findings.len(), 1);
    // A selector keeps other workloads out entirely.
    let mut only = Anomalies::new(
        &[rule("match = { k8s_workload = \"other\" }")],
        AnomalyMetrics::default(),
    );
    let mut t = Traffic::new(4);
    t.steady(&mut only, "chat", 60);
    assert!(only.rules[0].1.is_empty());
}

#[test]
fn a_reload_keeps_baselines_only_where_the_grouping_is_unchanged() {
    let tokens = "metrics = [\"tokens_per_request\"]";
    let mut a = Anomalies::new(&[rule(tokens)], AnomalyMetrics::default());
    let mut t = Traffic::new(6);
    assert!(t.steady(&mut a, "chat", 60).is_empty());
    // Another threshold, same grouping: the baseline stays, and the spike is judged at once.
    a.reload(&[rule(&format!("{tokens}\nz_score = 5.0"))]);
    assert_eq!(a.rules[0].1.len(), 1);
    let mut r = row("chat", t.t + 1.0, 50_000, 0.2, 200, 800.0);
    a.observe(&mut r);
    assert_eq!(r.findings.len(), 1, "the baseline survived the reload");
    assert!(r.findings[0].excerpt.contains("z "), "{:?}", r.findings);
    // Grouped by executable instead: the old per-workload baselines mean nothing now.
    let by_exe: AnomalyRule =
        toml::from_str(&format!("name = \"r\"\ngroup_by = [\"exe\"]\n{tokens}")).unwrap();
    a.reload(&[by_exe]);
    assert!(a.rules[0].1.is_empty());
    let mut r = row("chat", t.t + 2.0, 50_000, 0.2, 200, 800.0);
    a.observe(&mut r);
    assert!(r.findings.is_empty(), "a new baseline has too few samples");
    // A renamed rule is another rule.
    a.reload(&[toml::from_str(&format!("name = \"s\"\n{tokens}")).unwrap()]);
    assert!(a.rules[0].1.is_empty());
}

#[test]
fn groups_are_bounded() {
    let mut a = Anomalies::new(&[rule("max_groups = 3")], AnomalyMetrics::default());
    for i in 0..10 {
        let mut r = row(
            &format!("w{i}"),
            1_800_000_000.0 + f64::from(i),
            10,
            0.0,
            200,
            1.0,
        );
        a.observe(&mut r);
    }
    assert_eq!(a.rules[0].1.len(), 3);
    assert!(a.rules[0].1.contains_key("k8s_workload=w9"));
}

#[test]
fn validation_names_the_key() {
    let bad = rule("z_score = 0.0");
    assert_eq!(
        bad.validate("anomalies[0]").unwrap_err().0,
        "anomalies[0].z_score"
    );
    let e = toml::from_str::<AnomalyRule>("name = \"r\"\nmetrics = [\"bogus\"]").unwrap_err();
    assert!(e.to_string().contains("bogus"));
}
