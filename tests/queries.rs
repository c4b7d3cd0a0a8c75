//! The saved fleet questions (`deploy/clickhouse/queries/`) through `llmtrace report`, against a
//! real ClickHouse 18.16 holding seeded rows whose answers are known; and the same questions on
//! the modern engine (chdb) over the production DDL, which must answer the same. Every row is
//! inserted twice (a replayed batch): the answers count it once. Some rows come from pods of
//! Kubernetes workloads (one workload spans two nodes), the others from host processes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use llmtrace_agent::cli::queries::{GRAFANA_SINCE, QUERIES, SavedQuery, Since, Target};
use llmtrace_agent::cli::report::{Format, format_answer};
use llmtrace_agent::sink::{SinkConfig, migrate};
use testkit::clickhouse::ClickHouseServer;

const MINUTE: i64 = 60;
const HOUR: i64 = 3_600;
const DAY: i64 = 86_400;

/// One seeded trace; `ago` is seconds before the seeding moment.
struct Seed {
    host: &'static str,
    exe: &'static str,
    comm: &'static str,
    provider: &'static str,
    model: &'static str,
    sni: &'static str,
    tokens: Option<(u64, u64)>,
    cost: Option<f64>,
    bytes: (u64, u64),
    findings: &'static [(&'static str, &'static str)],
    action: &'static str,
    intercepted: bool,
    reason: &'static str,
    ago: i64,
    /// Kubernetes namespace, workload kind and name; empty for a host process.
    pod: (&'static str, &'static str, &'static str),
    /// Response status (`None`: no response) and the agent's error text.
    status: Option<u16>,
    error: &'static str,
    /// Total and time-to-first-token milliseconds.
    duration_ms: f64,
    ttft_ms: Option<f64>,
}

const R: i64 = 10 * MINUTE;
const S: i64 = 5 * HOUR;
const O: i64 = 3 * DAY;
const A: i64 = 30 * DAY;

const PY: (&str, &str) = ("/usr/bin/python3", "python3");
const NODE: (&str, &str) = ("/usr/bin/node", "node");
const APP: (&str, &str) = ("/opt/app/agent", "agent");
const CURL: (&str, &str) = ("/usr/bin/curl", "curl");
const WGET: (&str, &str) = ("/usr/bin/wget", "wget");

#[allow(clippy::too_many_arguments)]
const fn seed(
    host: &'static str,
    (exe, comm): (&'static str, &'static str),
    provider: &'static str,
    model: &'static str,
    tokens: Option<(u64, u64)>,
    cost: Option<f64>,
    bytes: (u64, u64),
    findings: &'static [(&'static str, &'static str)],
    action: &'static str,
    ago: i64,
) -> Seed {
    Seed {
        host,
        exe,
        comm,
        provider,
        model,
        sni: "api.openai.com",
        tokens,
        cost,
        bytes,
        findings,
        action,
        intercepted: true,
        reason: "",
        ago,
        pod: ("", "", ""),
        status: Some(200),
        error: "",
        duration_ms: 1000.0,
        ttft_ms: None,
    }
}

/// The checkout Deployment of the payments namespace.
const CHECKOUT: (&str, &str, &str) = ("payments", "Deployment", "checkout");
/// The crawler StatefulSet of the research namespace.
const CRAWLER: (&str, &str, &str) = ("research", "StatefulSet", "crawler");

/// The seeded traces.
const SEEDS: &[Seed] = &[
    // 1: a secret sent (flagged), from a pod.
    Seed {
        pod: CHECKOUT,
        duration_ms: 800.0,
        ttft_ms: Some(200.0),
        ..seed(
            "h1",
            PY,
            "openai",
            "gpt-4o",
            Some((100, 20)),
            Some(0.25),
            (1000, 500),
            &[("secret.aws_access_key", "request")],
            "flag",
            R,
        )
    },
    // 2: PII sent masked; the secret is in the response, not sent.
    Seed {
        pod: CHECKOUT,
        duration_ms: 1200.0,
        ttft_ms: Some(300.0),
        ..seed(
            "h1",
            PY,
            "openai",
            "gpt-4o",
            Some((200, 40)),
            Some(0.5),
            (2000, 1000),
            &[
                ("pii.email", "request"),
                ("secret.github_token", "response"),
            ],
            "redact",
            R + MINUTE,
        )
    },
    // 3: blocked: never sent (the app got a 403 from the agent).
    Seed {
        pod: CHECKOUT,
        status: Some(403),
        duration_ms: 50.0,
        ..seed(
            "h1",
            PY,
            "openai",
            "gpt-4o",
            Some((10, 5)),
            Some(0.125),
            (100, 50),
            &[("secret.aws_access_key", "request")],
            "block",
            R,
        )
    },
    // 4: an approved provider, first time for this host process.
    Seed {
        duration_ms: 2000.0,
        ttft_ms: Some(400.0),
        ..seed(
            "h1",
            NODE,
            "anthropic",
            "claude-sonnet-4-5",
            Some((300, 60)),
            Some(1.0),
            (3000, 1500),
            &[],
            "allow",
            R,
        )
    },
    // 5: an unapproved provider (shadow AI), first time for this workload; rate limited.
    Seed {
        pod: CRAWLER,
        status: Some(429),
        duration_ms: 600.0,
        ..seed(
            "h2",
            APP,
            "mistral",
            "mistral-large",
            Some((50, 10)),
            Some(0.0625),
            (500, 250),
            &[],
            "allow",
            R,
        )
    },
    // 6: an approved provider with an unapproved model, three days ago.
    Seed {
        pod: CRAWLER,
        duration_ms: 500.0,
        ttft_ms: Some(100.0),
        ..seed(
            "h2",
            APP,
            "openai",
            "gpt-3.5-turbo",
            Some((5, 5)),
            Some(0.015_625),
            (100, 100),
            &[],
            "allow",
            O,
        )
    },
    // 7: relayed uninspected: the app rejected the llmtrace certificate.
    Seed {
        model: "",
        tokens: None,
        cost: None,
        intercepted: false,
        reason: "client_rejected_certificate",
        action: "",
        status: None,
        pod: CHECKOUT,
        ..seed("h1", PY, "openai", "", None, None, (700, 900), &[], "", R)
    },
    // 8: relayed uninspected: no server name, from a host process.
    Seed {
        sni: "",
        intercepted: false,
        reason: "no_sni",
        status: None,
        ..seed("h2", CURL, "", "", None, None, (300, 400), &[], "", R)
    },
    // 9: the last trace of a host that went quiet five hours ago: the provider reset it.
    Seed {
        status: None,
        error: "upstream connection reset",
        duration_ms: 900.0,
        ..seed(
            "h3",
            PY,
            "openai",
            "gpt-4o",
            Some((1, 1)),
            Some(0.031_25),
            (10, 10),
            &[],
            "allow",
            S,
        )
    },
    // 10, 11: long before the period: these pairs are not new. The workload ran on another
    // node then: a workload's pairs span its nodes.
    seed(
        "h1",
        NODE,
        "openai",
        "gpt-4o",
        Some((1, 1)),
        Some(0.5),
        (1, 1),
        &[],
        "allow",
        A,
    ),
    Seed {
        pod: CHECKOUT,
        ..seed(
            "h2",
            PY,
            "openai",
            "gpt-4o",
            Some((1, 1)),
            Some(0.5),
            (1, 1),
            &[],
            "allow",
            A,
        )
    },
    // 12: relayed untouched because its server name is not configured for interception; the
    // name looks like an LLM API, so the agent added its shadow-AI finding.
    Seed {
        sni: "api.mistral.ai",
        intercepted: false,
        reason: "not_intercepted_name",
        status: None,
        ..seed(
            "h1",
            WGET,
            "",
            "",
            None,
            None,
            (200, 300),
            &[("shadow_ai.llm_api", "connection")],
            "",
            R,
        )
    },
];

fn sql_list(items: impl Iterator<Item = String>) -> String {
    format!("[{}]", items.collect::<Vec<_>>().join(", "))
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "NULL".to_owned(), |v| v.to_string())
}

/// One INSERT of every seed; `time` renders a start in µs for the schema at hand.
fn seed_sql(now: i64, time: impl Fn(i64) -> String) -> String {
    let rows: Vec<String> = SEEDS
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let t = time((now - s.ago) * 1_000_000);
            let q = |v: &str| format!("'{v}'");
            format!(
                "(toUUID('00000000-0000-0000-0000-{i:012}'), {t}, {t}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, 'prod', {}, {}, {}, {})",
                q(s.host), q(s.comm), q(s.exe), q(s.provider), q(s.model), q(s.sni),
                opt(s.tokens.map(|t| t.0)), opt(s.tokens.map(|t| t.1)), opt(s.cost),
                s.bytes.0, s.bytes.1,
                sql_list(s.findings.iter().map(|f| q(f.0))),
                sql_list(s.findings.iter().map(|_| q("high"))),
                sql_list(s.findings.iter().map(|_| "1".to_owned())),
                sql_list(s.findings.iter().map(|f| q(f.1))),
                sql_list(s.findings.iter().map(|_| q(""))),
                q(s.action), u8::from(s.intercepted), q(s.reason),
                q(s.pod.0), q(s.pod.1), q(s.pod.2),
                // The agent's node: the host here (pods run on it).
                q(s.host),
                opt(s.status), q(s.error), s.duration_ms, opt(s.ttft_ms),
            )
        })
        .collect();
    format!(
        "INSERT INTO llmtrace.traces (trace_id, start_time, end_time, host, comm, exe, provider, model, sni, \
         input_tokens, output_tokens, cost_usd, request_bytes, response_bytes, findings.kind, findings.severity, \
         findings.confidence, findings.location, findings.excerpt, action, intercepted, not_intercepted_reason, \
         k8s_namespace, k8s_workload_kind, k8s_workload, node, cluster, status, error, duration_ms, ttft_ms) VALUES {}",
        rows.join(", ")
    )
}

/// Inserts every seed twice (a replayed batch) into the 18.16 server (`Int64` µs times).
fn insert(ch: &ClickHouseServer, now: i64) {
    let sql = seed_sql(now, |us| us.to_string());
    ch.query(&sql);
    ch.query(&sql);
    assert_eq!(
        ch.query_u64("SELECT count() FROM llmtrace.traces"),
        2 * SEEDS.len() as u64
    );
}

struct World {
    ch: ClickHouseServer,
    config: tempfile::TempDir,
    now: i64,
}

impl World {
    fn new() -> Self {
        let ch = ClickHouseServer::start();
        // The hourly series put the seeds 10 and 11 minutes old in one hour: when an hour
        // starts between them (one minute in sixty), wait that minute out.
        let same_hour = |now: i64| {
            ch.query_text(&format!(
                "SELECT toStartOfHour(toDateTime({})) = toStartOfHour(toDateTime({}))",
                now - R,
                now - R - MINUTE
            )) == "1"
        };
        while !same_hour(unix_now()) {
            std::thread::sleep(std::time::Duration::from_secs(5));
        }
        let config = tempfile::tempdir().unwrap();
        std::fs::write(
            config.path().join("config.toml"),
            format!("[sink.clickhouse]\nurl = \"{}\"\n", ch.url()),
        )
        .unwrap();
        let w = Self {
            ch,
            config,
            now: unix_now(),
        };
        let out = w.llmtrace(&["clickhouse", "migrate"]);
        assert!(out.contains("applied migrations"), "{out}");
        insert(&w.ch, w.now);
        w
    }

    fn config_path(&self) -> std::path::PathBuf {
        self.config.path().join("config.toml")
    }

    /// Runs the CLI; panics with its stderr when it fails.
    fn llmtrace(&self, args: &[&str]) -> String {
        let out = run(&self.config_path(), args);
        assert!(
            out.status.success(),
            "llmtrace {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn csv(&self, name: &str, extra: &[&str]) -> String {
        let mut args = vec!["report", name, "--format", "csv"];
        args.extend_from_slice(extra);
        self.llmtrace(&args)
    }

    /// The server's rendering of a seed's start (its own time zone).
    fn at(&self, ago: i64) -> String {
        self.ch
            .query_text(&format!("SELECT toString(toDateTime({}))", self.now - ago))
    }

    /// The server's start of the hour of a seed's start.
    fn hour(&self, ago: i64) -> String {
        self.ch.query_text(&format!(
            "SELECT toString(toStartOfHour(toDateTime({})))",
            self.now - ago
        ))
    }

    fn day(&self, ago: i64) -> String {
        self.ch.query_text(&format!(
            "SELECT toString(toDate(toDateTime({})))",
            self.now - ago
        ))
    }
}

fn unix_now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

fn run(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(testkit::workspace_bin("llmtrace"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run llmtrace")
}

fn lines(header: &str, rows: &[String]) -> String {
    let mut out = format!("{header}\n");
    for r in rows {
        out.push_str(r);
        out.push('\n');
    }
    out
}

#[test]
fn every_saved_query_answers_exactly_on_seeded_rows() {
    let w = World::new();
    exposure(&w);
    spending(&w);
    inventory(&w);
    series(&w);
}

/// The columns that say who: namespace, workload (or executable), host of a host process.
const WHO: &str = "namespace,workload,process_host";
/// The checkout Deployment and the crawler StatefulSet, as the queries name them.
const CHECKOUT_WHO: &str = "payments,Deployment/checkout,";
const CRAWLER_WHO: &str = "research,StatefulSet/crawler,";

/// Secrets and PII sent, shadow AI, blocked and redacted exchanges.
fn exposure(w: &World) {
    let (r, r1, o) = (w.at(R), w.at(R + MINUTE), w.at(O));
    assert_eq!(
        w.csv("secrets-pii-sent", &[]),
        lines(
            &format!("{WHO},provider,secret_exchanges,pii_exchanges,redacted,first_seen,last_seen"),
            &[format!("{CHECKOUT_WHO},openai,1,1,1,{r1},{r}")]
        )
    );

    let header =
        format!("{WHO},provider,model,server_name,not_approved,exchanges,first_seen,last_seen");
    let unconfigured = format!(",/usr/bin/wget,h1,,,api.mistral.ai,unconfigured_name,1,{r},{r}");
    assert_eq!(
        w.csv("shadow-ai", &[]),
        lines(
            &header,
            &[
                unconfigured.clone(),
                format!("{CRAWLER_WHO},mistral,mistral-large,,provider,1,{r},{r}"),
            ]
        )
    );
    assert_eq!(
        w.csv(
            "shadow-ai",
            &["--param", "approved_models=gpt-4o,claude-sonnet-4-5"]
        ),
        lines(
            &header,
            &[
                unconfigured,
                format!("{CRAWLER_WHO},mistral,mistral-large,,provider,1,{r},{r}"),
                format!("{CRAWLER_WHO},openai,gpt-3.5-turbo,,model,1,{o},{o}"),
            ]
        )
    );

    assert_eq!(
        w.csv("blocked-redacted", &[]),
        lines(
            &format!("{WHO},provider,action,exchanges,finding_kinds,last_seen"),
            &[
                format!("{CHECKOUT_WHO},openai,block,1,secret.aws_access_key,{r}"),
                format!("{CHECKOUT_WHO},openai,redact,1,\"pii.email,secret.github_token\",{r1}"),
            ]
        )
    );
}

/// Cost per day and top talkers: a workload's pods add up, host processes stay per host.
fn spending(w: &World) {
    // Cost per day: the day of each group comes from the server's clock and zone.
    let mut cost: Vec<(String, String, f64)> = vec![
        (w.day(R), ",/usr/bin/node,h1,1,300,60,1".to_owned(), 1.0),
        (w.day(R), format!("{CHECKOUT_WHO},3,310,65,0.875"), 0.875),
        (w.day(R), format!("{CRAWLER_WHO},1,50,10,0.0625"), 0.0625),
        (
            w.day(S),
            ",/usr/bin/python3,h3,1,1,1,0.03125".to_owned(),
            0.031_25,
        ),
        (w.day(O), format!("{CRAWLER_WHO},1,5,5,0.015625"), 0.015_625),
    ];
    cost.sort_by(|a, b| a.0.cmp(&b.0).then(b.2.total_cmp(&a.2)));
    let header = format!("day,{WHO},exchanges,input_tokens,output_tokens,cost_usd");
    let expected: Vec<String> = cost
        .iter()
        .map(|(d, rest, _)| format!("{d},{rest}"))
        .collect();
    assert_eq!(w.csv("cost-per-day", &[]), lines(&header, &expected));
    // A shorter period leaves the three-day-old row out.
    let recent: Vec<String> = expected
        .iter()
        .filter(|l| !l.ends_with(",0.015625"))
        .cloned()
        .collect();
    assert_eq!(
        w.csv("cost-per-day", &["--since", "1d"]),
        lines(&header, &recent)
    );

    let top = [
        format!("{CHECKOUT_WHO},4,375,0.875,6250"),
        format!("{CRAWLER_WHO},2,70,0.078125,950"),
        ",/usr/bin/node,h1,1,360,1,4500".to_owned(),
        ",/usr/bin/python3,h3,1,2,0.03125,20".to_owned(),
        ",/usr/bin/curl,h2,1,0,0,700".to_owned(),
        ",/usr/bin/wget,h1,1,0,0,500".to_owned(),
    ];
    let header = format!("{WHO},exchanges,tokens,cost_usd,bytes");
    assert_eq!(w.csv("top-talkers", &[]), lines(&header, &top));
    assert_eq!(
        w.csv("top-talkers", &["--param", "limit=3"]),
        lines(&header, &top[..3])
    );
}

/// New pairs, uninspected connections, silent agents.
fn inventory(w: &World) {
    let (r, s, o) = (w.at(R), w.at(S), w.at(O));
    // checkout → openai is not new: the workload called it a month ago from another node.
    assert_eq!(
        w.csv("new-pairs", &[]),
        lines(
            &format!("{WHO},provider,first_seen,exchanges"),
            &[
                format!(",/usr/bin/node,h1,anthropic,{r},1"),
                format!("{CRAWLER_WHO},mistral,{r},1"),
                format!(",/usr/bin/python3,h3,openai,{s},1"),
                format!("{CRAWLER_WHO},openai,{o},1"),
            ]
        )
    );

    assert_eq!(
        w.csv("uninspected", &[]),
        lines(
            &format!("{WHO},sni,reason,connections,bytes,last_seen"),
            &[
                format!(",/usr/bin/curl,h2,,no_sni,1,700,{r}"),
                format!(",/usr/bin/wget,h1,api.mistral.ai,not_intercepted_name,1,500,{r}"),
                format!("{CHECKOUT_WHO},api.openai.com,client_rejected_certificate,1,1600,{r}"),
            ]
        )
    );

    // The quiet node: minutes_silent grows with the clock, so only its floor is known.
    let header = "cluster,node,host,last_seen,minutes_silent,exchanges";
    let silent = w.csv("silent-agents", &[]);
    let mut it = silent.lines();
    assert_eq!(it.next(), Some(header));
    let row: Vec<&str> = it.next().expect("one silent node").split(',').collect();
    assert_eq!(
        (row[0], row[1], row[2], row[3], row[5]),
        ("prod", "h3", "h3", s.as_str(), "1"),
        "{silent}"
    );
    assert!(row[4].parse::<u64>().unwrap() >= 300, "{silent}");
    assert_eq!(it.next(), None, "{silent}");
    assert_eq!(
        w.csv("silent-agents", &["--param", "quiet_minutes=600"]),
        format!("{header}\n")
    );
}

/// The hourly series of the overview and security dashboards.
fn series(w: &World) {
    let (r, s, o) = (w.hour(R), w.hour(S), w.hour(O));
    assert_eq!(
        w.csv("traffic-over-time", &[]),
        lines(
            "time,node,namespace,workload,model,exchanges,input_tokens,output_tokens,cost_usd",
            &[
                format!("{o},h2,research,StatefulSet/crawler,gpt-3.5-turbo,1,5,5,0.015625"),
                format!("{s},h3,,/usr/bin/python3,gpt-4o,1,1,1,0.03125"),
                format!("{r},h1,,/usr/bin/node,claude-sonnet-4-5,1,300,60,1"),
                format!("{r},h1,payments,Deployment/checkout,gpt-4o,3,310,65,0.875"),
                format!("{r},h2,research,StatefulSet/crawler,mistral-large,1,50,10,0.0625"),
            ]
        )
    );

    // The blocked exchange is left out; with two values the median is the upper one; an
    // hour without a first token has no ttft.
    assert_eq!(
        w.csv("latency-over-time", &[]),
        lines(
            "time,provider,model,exchanges,ttft_p50_ms,ttft_p95_ms,latency_p50_ms,latency_p95_ms,latency_p99_ms",
            &[
                format!("{o},openai,gpt-3.5-turbo,1,100,100,500,500,500"),
                format!("{s},openai,gpt-4o,1,NULL,NULL,900,900,900"),
                format!("{r},anthropic,claude-sonnet-4-5,1,400,400,2000,2000,2000"),
                format!("{r},mistral,mistral-large,1,NULL,NULL,600,600,600"),
                format!("{r},openai,gpt-4o,2,300,300,1200,1200,1200"),
            ]
        )
    );

    // A 429 and a reset without a response fail; the policy's 403 is not counted.
    assert_eq!(
        w.csv("errors-over-time", &[]),
        lines(
            "time,provider,exchanges,errors,error_rate",
            &[
                format!("{o},openai,1,0,0"),
                format!("{s},openai,1,1,1"),
                format!("{r},anthropic,1,0,0"),
                format!("{r},mistral,1,1,1"),
                format!("{r},openai,2,0,0"),
            ]
        )
    );

    assert_eq!(
        w.csv("findings-over-time", &[]),
        lines(
            "time,kind,severity,occurrences,exchanges",
            &[
                format!("{r},pii.email,high,1,1"),
                format!("{r},secret.aws_access_key,high,2,2"),
                format!("{r},secret.github_token,high,1,1"),
                format!("{r},shadow_ai.llm_api,high,1,1"),
            ]
        )
    );

    let actions = lines(
        "time,action,exchanges",
        &[
            format!("{r},block,1"),
            format!("{r},flag,1"),
            format!("{r},redact,1"),
        ],
    );
    assert_eq!(w.csv("actions-over-time", &[]), actions);
    // Only the three-day-old exchange is outside a one-day period.
    assert_eq!(
        w.csv("traffic-over-time", &["--since", "1d"])
            .lines()
            .count(),
        5
    );
}

#[test]
fn report_lists_prints_json_and_tables_and_refuses_bad_input() {
    let w = World::new();
    let list = w.llmtrace(&["report", "--list"]);
    for name in [
        "secrets-pii-sent",
        "shadow-ai",
        "silent-agents",
        "uninspected",
    ] {
        assert!(list.contains(name), "{list}");
    }
    assert!(list.contains("--param approved_providers="), "{list}");

    let json: serde_json::Value =
        serde_json::from_str(&w.llmtrace(&["report", "top-talkers", "--format", "json"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 6, "{json}");
    assert_eq!(json[0]["namespace"], "payments");
    assert_eq!(json[0]["workload"], "Deployment/checkout");
    assert_eq!(json[2]["process_host"], "h1");
    assert_eq!(json[0]["exchanges"], 4);
    assert_eq!(json[0]["bytes"], 6250);
    assert_eq!(json[1]["cost_usd"], 0.078_125);

    let table = w.llmtrace(&["report", "uninspected"]);
    let mut rows = table.lines();
    assert!(
        rows.next()
            .unwrap()
            .starts_with("namespace  workload             process_host  sni"),
        "{table}"
    );
    // A host process: no namespace, its executable padded to the widest workload.
    assert!(
        rows.next()
            .unwrap()
            .starts_with(&format!("{:<9}  {:<19}  h2 ", "", "/usr/bin/curl")),
        "{table}"
    );
    assert!(table.ends_with("(3 rows)\n"), "{table}");

    for (args, needle) in [
        (&["report", "nope"][..], "no saved query \"nope\""),
        (&["report", "top-talkers", "--since", "7y"], "--since"),
        (
            &["report", "top-talkers", "--param", "limit=1; DROP TABLE x"],
            "limit",
        ),
        (
            &["report", "shadow-ai", "--param", "approved_providers=a'b"],
            "not a plain name",
        ),
        (
            &["report", "shadow-ai", "--param", "nope=1"],
            "no parameter \"nope\"",
        ),
    ] {
        let out = run(&w.config_path(), args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(needle),
            "{args:?}: {err}"
        );
    }
    // Nothing was dropped by the refused parameters.
    assert_eq!(w.ch.query_u64("SELECT count() FROM llmtrace.traces"), 24);
}

/// A saved query, its parameters and its period.
type Case = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

#[test]
fn the_modern_engine_answers_the_same_over_the_production_ddl() {
    let w = World::new();
    let cases: &[Case] = &[
        ("secrets-pii-sent", &[], "7d"),
        ("shadow-ai", &[], "7d"),
        (
            "shadow-ai",
            &[("approved_models", "gpt-4o,claude-sonnet-4-5")],
            "7d",
        ),
        ("cost-per-day", &[], "7d"),
        ("cost-per-day", &[], "1d"),
        ("top-talkers", &[("limit", "3")], "7d"),
        ("new-pairs", &[], "7d"),
        ("blocked-redacted", &[], "7d"),
        ("uninspected", &[], "7d"),
        ("silent-agents", &[], "7d"),
        ("traffic-over-time", &[], "7d"),
        ("traffic-over-time", &[], "1d"),
        ("latency-over-time", &[], "7d"),
        ("errors-over-time", &[], "7d"),
        ("findings-over-time", &[], "7d"),
        ("actions-over-time", &[], "7d"),
    ];
    let work = tempfile::tempdir().unwrap();
    let cfg = SinkConfig::default();
    let ddl: String = std::iter::once(&migrate::BOOTSTRAP)
        .chain(migrate::MIGRATIONS)
        .map(|m| migrate::render(m.sql(migrate::Flavor::Modern), &cfg.clickhouse) + "\n")
        .collect();
    std::fs::write(work.path().join("ddl.sql"), ddl).unwrap();
    let modern_time = |us: i64| format!("fromUnixTimestamp64Micro(toInt64({us}), 'UTC')");
    std::fs::write(work.path().join("seed.sql"), seed_sql(w.now, modern_time)).unwrap();
    for (i, (name, params, since)) in cases.iter().enumerate() {
        let values: BTreeMap<String, String> = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let target = Target {
            database: "llmtrace",
            table: "traces",
            legacy: false,
            since: Since::Seconds(if *since == "1d" { 86_400 } else { 604_800 }),
        };
        let sql = SavedQuery::find(name)
            .unwrap()
            .render(&target, &values)
            .unwrap();
        std::fs::write(work.path().join(format!("query-{i:02}.sql")), sql).unwrap();
    }
    // Every dashboard panel, with the time picker's macro filled in for the last 7 days.
    let panels = dashboard_panels();
    for (i, (_, sql)) in panels.iter().enumerate() {
        let filled = sql.replace("$__fromTime", "toDateTime(toUInt32(now()) - 604800)");
        std::fs::write(work.path().join(format!("query-panel-{i:02}.sql")), filled).unwrap();
    }
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/clickhouse/roles-modern.sql"),
        work.path().join("roles.sql"),
    )
    .unwrap();
    // Same zone as the 18.16 server, so times print alike.
    let zone = w.ch.query_text("SELECT timezone()");
    let out = Command::new(testkit::python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("chdb_queries.py"))
        .arg(work.path())
        .env("TZ", &zone)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chdb_queries.py failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("roles_statements 7"), "{stdout}");
    for (i, (name, params, since)) in cases.iter().enumerate() {
        let json = std::fs::read(work.path().join(format!("query-{i:02}.json"))).unwrap();
        let modern = format_answer(&json, Format::Csv).unwrap();
        let mut extra = vec!["--since", since];
        let assignments: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for a in &assignments {
            extra.extend(["--param", a.as_str()]);
        }
        let legacy = w.csv(name, &extra);
        assert_same_answer(name, &modern, &legacy);
    }
    for (i, (title, sql)) in panels.iter().enumerate() {
        let json = std::fs::read(work.path().join(format!("query-panel-{i:02}.json"))).unwrap();
        let panel = format_answer(&json, Format::Csv).unwrap();
        let name = QUERIES
            .iter()
            .find(|q| grafana_sql(q) == *sql)
            .expect("every panel runs a saved query")
            .name;
        assert_same_answer(
            &format!("panel {title:?} ({name})"),
            &panel,
            &w.csv(name, &[]),
        );
    }
}

fn assert_same_answer(what: &str, modern: &str, legacy: &str) {
    if what.contains("silent-agents") {
        // minutes_silent follows the clock between the two runs: compare the agents.
        let hosts = |csv: &str| -> Vec<String> {
            csv.lines()
                .map(|l| l.split(',').take(3).collect::<Vec<_>>().join(","))
                .collect()
        };
        assert_eq!(hosts(modern), hosts(legacy), "{what}");
    } else {
        assert_eq!(modern, legacy, "{what}");
    }
}

/// A saved query as a Grafana panel runs it: modern schema, default parameters, the period
/// from the dashboard's time picker.
fn grafana_sql(q: &SavedQuery) -> String {
    let target = Target {
        database: "llmtrace",
        table: "traces",
        legacy: false,
        since: Since::Sql(GRAFANA_SINCE),
    };
    q.render(&target, &BTreeMap::new()).unwrap()
}

/// The dashboards on the ClickHouse data source: every panel runs a saved query.
const CLICKHOUSE_DASHBOARDS: &[&str] = &[
    "llmtrace-fleet.json",
    "llmtrace-overview.json",
    "llmtrace-security.json",
];
/// The dashboard on the Prometheus data source (the agents' own metrics).
const HEALTH_DASHBOARD: &str = "llmtrace-health.json";

fn grafana_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana")
}

fn dashboard(file: &str) -> serde_json::Value {
    let path = grafana_dir().join("dashboards").join(file);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// (title, SQL) of every panel of the ClickHouse dashboards, each distinct SQL once.
fn dashboard_panels() -> Vec<(String, String)> {
    let mut panels = all_panel_queries();
    let mut seen = std::collections::BTreeSet::new();
    panels.retain(|(_, sql)| seen.insert(sql.clone()));
    panels
}

/// (title, SQL) of every target of every panel of the ClickHouse dashboards.
fn all_panel_queries() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for file in CLICKHOUSE_DASHBOARDS {
        let dash = dashboard(file);
        for p in dash["panels"].as_array().expect("panels") {
            let title = format!("{file}: {}", p["title"].as_str().unwrap_or(""));
            assert_eq!(p["datasource"]["uid"], "llmtrace-clickhouse", "{title}");
            for t in p["targets"].as_array().expect("targets") {
                assert_eq!(t["datasource"]["uid"], "llmtrace-clickhouse", "{title}");
                out.push((
                    title.clone(),
                    t["rawSql"].as_str().expect("rawSql").to_owned(),
                ));
            }
        }
    }
    out
}

#[test]
fn every_grafana_panel_is_a_tested_saved_query() {
    let mut used: Vec<&str> = all_panel_queries()
        .iter()
        .map(|(title, sql)| {
            QUERIES
                .iter()
                .find(|q| grafana_sql(q) == *sql)
                .unwrap_or_else(|| {
                    panic!("panel {title:?} runs SQL that is not a saved query with its macros filled in")
                })
                .name
        })
        .collect();
    used.sort_unstable();
    used.dedup();
    let all: Vec<&str> = QUERIES.iter().map(|q| q.name).collect();
    assert_eq!(used, all, "every saved query is on a dashboard");
    // The fleet audit dashboard keeps one table per question it shows.
    let fleet = dashboard("llmtrace-fleet.json");
    let fleet_sql: Vec<&str> = fleet["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["targets"][0]["rawSql"].as_str().unwrap())
        .collect();
    let mut distinct = fleet_sql.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), fleet_sql.len());

    // No dashboard escapes the checks, and none reads bodies.
    let mut files: Vec<String> = std::fs::read_dir(grafana_dir().join("dashboards"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut known: Vec<String> = CLICKHOUSE_DASHBOARDS
        .iter()
        .chain([&HEALTH_DASHBOARD])
        .map(|f| (*f).to_owned())
        .collect();
    known.sort();
    assert_eq!(files, known);
    let mut uids = std::collections::BTreeSet::new();
    for file in &files {
        let text = std::fs::read_to_string(grafana_dir().join("dashboards").join(file)).unwrap();
        assert!(
            !text.contains("request_body") && !text.contains("response_body"),
            "{file}"
        );
        let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(
            uids.insert(dash["uid"].as_str().unwrap().to_owned()),
            "{file}"
        );
    }
    for (file, uid) in [
        ("llmtrace-clickhouse.yaml", "uid: llmtrace-clickhouse"),
        ("llmtrace-prometheus.yaml", "uid: llmtrace-prometheus"),
    ] {
        let provisioning =
            std::fs::read_to_string(grafana_dir().join("provisioning/datasources").join(file))
                .unwrap();
        assert!(provisioning.contains(uid), "{file}");
    }
}

/// Every dashboard type-checks against Grafana's own dashboard schema (the TypeScript types
/// `@grafana/schema` generates from it, as Grafana's front end uses them): required fields,
/// value types and no unknown keys on the objects it describes. A copy with a misspelled panel
/// key must fail, so the check is known to bite.
#[test]
fn every_dashboard_matches_grafanas_schema() {
    let modules = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/node/node_modules");
    let schema = modules.join("@grafana/schema/dist/types/index.d.ts");
    let tsc = modules.join("typescript/bin/tsc");
    assert!(
        schema.exists() && tsc.exists(),
        "@grafana/schema or typescript missing: run `cargo xtask setup`"
    );
    let work = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let mut write = |name: &str, dash: &serde_json::Value| {
        let ts = format!(
            "import type {{ Dashboard }} from '@grafana/schema';\nexport const dashboard: Dashboard = {};\n",
            serde_json::to_string_pretty(dash).unwrap()
        );
        std::fs::write(work.path().join(name), ts).unwrap();
        files.push(name.to_owned());
    };
    for file in CLICKHOUSE_DASHBOARDS.iter().chain([&HEALTH_DASHBOARD]) {
        write(&file.replace(".json", ".ts"), &dashboard(file));
    }
    let mut broken = dashboard(HEALTH_DASHBOARD);
    let panel = broken["panels"][0].as_object_mut().unwrap();
    let field_config = panel.remove("fieldConfig").unwrap_or(serde_json::json!({}));
    panel.insert("fieldconfig".into(), field_config);
    write("broken.ts", &broken);
    let tsconfig = serde_json::json!({
        "compilerOptions": {
            "strict": true, "noEmit": true, "target": "es2022", "module": "esnext",
            "moduleResolution": "bundler", "types": [],
            "paths": { "@grafana/schema": [schema] }
        },
        "files": files,
    });
    std::fs::write(work.path().join("tsconfig.json"), tsconfig.to_string()).unwrap();
    let out = Command::new("node")
        .arg(&tsc)
        .arg("-p")
        .arg("tsconfig.json")
        .current_dir(work.path())
        .output()
        .expect("run node");
    let text = String::from_utf8_lossy(&out.stdout);
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("error TS")).collect();
    assert!(!out.status.success(), "the misspelled key passed: {text}");
    assert!(
        errors.len() == 1
            && errors[0].starts_with("broken.ts(")
            && errors[0].contains("'\"fieldconfig\"' does not exist in type 'Panel"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every metric name the agent exports, from its registrations in `agent/src`: the root registry
/// has the prefix `llmtrace` (app.rs) and a sub-registry's prefix extends it; counters get
/// `_total`, histograms `_bucket`, `_sum` and `_count` in the text exposition.
fn exported_metrics() -> std::collections::BTreeSet<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|x| x == "rs") {
                out.push(path);
            }
        }
    }
    fn literal_after<'a>(text: &'a str, call: &str) -> Vec<&'a str> {
        text.match_indices(call)
            .filter_map(|(i, _)| {
                let rest = text[i + call.len()..].trim_start().strip_prefix('"')?;
                rest.split('"').next()
            })
            .collect()
    }
    let mut files = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/src"),
        &mut files,
    );
    let app =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/src/app.rs"))
            .unwrap();
    assert!(app.contains("Registry::with_prefix(\"llmtrace\")"));
    let mut names = std::collections::BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let prefix = match literal_after(&text, "sub_registry_with_prefix(").first() {
            Some(sub) => format!("llmtrace_{sub}_"),
            None => "llmtrace_".to_owned(),
        };
        for base in literal_after(&text, ".register(")
            .into_iter()
            .chain(literal_after(&text, "encode_descriptor("))
        {
            for suffix in ["", "_total", "_bucket", "_sum", "_count"] {
                names.insert(format!("{prefix}{base}{suffix}"));
            }
        }
    }
    names
}

/// The `llmtrace_*` metric names a PromQL expression reads (not label values: quoted text is
/// skipped).
fn promql_metrics(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in expr.chars().chain([' ']) {
        if c == '"' {
            quoted = !quoted;
        }
        if !quoted && (c.is_ascii_alphanumeric() || c == '_') {
            word.push(c);
        } else {
            if word.starts_with("llmtrace_") {
                out.push(std::mem::take(&mut word));
            }
            word.clear();
        }
    }
    out
}

#[test]
fn every_health_panel_reads_only_metrics_the_agent_exports() {
    let exported = exported_metrics();
    // The parse finds the registrations (one of each kind of registration site).
    for known in [
        "llmtrace_ebpf_events_total",
        "llmtrace_sink_spool_bytes",
        "llmtrace_proxy_tls_handshake_failures_total",
        "llmtrace_redirected_connections_total",
    ] {
        assert!(
            exported.contains(known),
            "{known} not found in {exported:?}"
        );
    }
    assert!(!exported.contains("llmtrace_spool_bytes"));
    assert_eq!(
        promql_metrics("sum(rate(llmtrace_a_total{x=\"llmtrace_b\"}[5m])) / llmtrace_c"),
        ["llmtrace_a_total", "llmtrace_c"]
    );

    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let metrics_table = &readme[readme.find("## Metrics").expect("README metrics table")..];
    let dash = dashboard(HEALTH_DASHBOARD);
    let mut used = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        let title = p["title"].as_str().unwrap_or("");
        assert_eq!(p["datasource"]["uid"], "llmtrace-prometheus", "{title}");
        for t in p["targets"].as_array().expect("targets") {
            assert_eq!(t["datasource"]["uid"], "llmtrace-prometheus", "{title}");
            let expr = t["expr"].as_str().expect("expr");
            let names = promql_metrics(expr);
            assert!(!names.is_empty(), "{title}: {expr}");
            for name in names {
                assert!(
                    exported.contains(&name),
                    "panel {title:?} reads {name}, which the agent does not export"
                );
                assert!(
                    metrics_table.contains(&format!("`{name}`"))
                        || metrics_table.contains(&format!("`{name}{{")),
                    "{name} is not in README's metrics table"
                );
                used.push(name);
            }
        }
    }
    // What the dashboard is for: fail-open, backlog, drops, handshake failures.
    for needed in [
        "llmtrace_ebpf_events_total{event=\"fail_open\"}",
        "llmtrace_sink_oldest_unshipped_age_seconds",
        "llmtrace_sink_rows_dropped_total",
        "llmtrace_proxy_tls_handshake_failures_total",
    ] {
        assert!(
            dash.to_string().contains(&needed.replace('"', "\\\"")),
            "{needed}"
        );
    }
    // Label values the panels select are ones the agent emits.
    let stats = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/src/ebpf/stats.rs"),
    )
    .unwrap();
    for event in [
        "fail_open",
        "fail_closed",
        "netns_not_ready",
        "netns_event_lost",
    ] {
        assert!(stats.contains(&format!("=> \"{event}\"")), "{event}");
    }
    assert!(!used.is_empty());
}
