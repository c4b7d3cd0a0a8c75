//! Who may read what, enforced by a real ClickHouse 18.16 with the shipped
//! `deploy/clickhouse/readers-18.16/` files (only ports and passwords filled in): the reader
//! answers every saved question through `llmtrace_redacted.traces` exactly as the full reader
//! does through `llmtrace.traces`, but can name no body column, cannot read `llmtrace` by any
//! route, and can change nothing; the full reader reads bodies and changes nothing; the agent's
//! migration keeps the readers' table in step with the traces table's columns.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use llmtrace_agent::cli::queries::QUERIES;
use llmtrace_agent::sink::TraceRow;
use llmtrace_agent::sink::row::ColumnDef;
use sha2::{Digest, Sha256};
use testkit::clickhouse::ClickHouseServer;

const READER: (&str, &str) = ("llmtrace_reader", "reader-pw-5d1e");
const FULL: (&str, &str) = ("llmtrace_full_reader", "full-pw-93ab");
const REDACTOR: (&str, &str) = ("llmtrace_redactor", "redactor-pw-c07f");

/// Text only the body columns hold.
const PROMPT: &str = "PROMPT-7Q-zircon";
const ANSWER: &str = "ANSWER-4K-basalt";
const ARGS: &str = "ARGS-2P-gneiss";
const ARGV: &str = "ARGV-9T-schist";

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/clickhouse")
}

/// The shipped file with a user's placeholder hash replaced by its password's hash.
fn users_xml() -> String {
    let mut text =
        std::fs::read_to_string(deploy().join("readers-18.16/users.d/llmtrace-readers.xml"))
            .unwrap();
    let placeholder = format!(
        "<password_sha256_hex>{}</password_sha256_hex>",
        "0".repeat(64)
    );
    for (user, password) in [READER, FULL, REDACTOR] {
        let start = text.find(&format!("<{user}>\n")).expect(user);
        let at = start + text[start..].find(&placeholder).expect("placeholder hash");
        let hash = hex::encode(Sha256::digest(password.as_bytes()));
        text.replace_range(
            at..at + placeholder.len(),
            &format!("<password_sha256_hex>{hash}</password_sha256_hex>"),
        );
    }
    assert!(!text.contains(&placeholder));
    text
}

fn config_xml(tcp_port: u16) -> String {
    let text =
        std::fs::read_to_string(deploy().join("readers-18.16/config.d/llmtrace-readers.xml"))
            .unwrap();
    assert!(text.contains("<port>9000</port>"));
    text.replace("<port>9000</port>", &format!("<port>{tcp_port}</port>"))
        .replace("REPLACE_WITH_THE_LLMTRACE_REDACTOR_PASSWORD", REDACTOR.1)
}

/// Runs `sql` as `user` over HTTP: the body, or the server's error text.
fn query_as(
    ch: &ClickHouseServer,
    (user, password): (&str, &str),
    sql: &str,
) -> Result<String, String> {
    let req = format!(
        "POST /?user={user}&password={password} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{sql}",
        sql.len()
    );
    let mut s = TcpStream::connect(("127.0.0.1", ch.http_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let out = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = out.split_once("\r\n\r\n").expect("HTTP response");
    if head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200") {
        Ok(body.trim().to_owned())
    } else {
        Err(body.trim().to_owned())
    }
}

/// `sql` as `who` must fail with a message holding `needle`.
fn refused(ch: &ClickHouseServer, who: (&str, &str), sql: &str, needle: &str) {
    match query_as(ch, who, sql) {
        Ok(body) => panic!("{} ran {sql}: {body}", who.0),
        Err(e) => assert!(e.contains(needle), "{} {sql}: {e}", who.0),
    }
}

/// Column names of a table, in order.
fn columns(ch: &ClickHouseServer, database: &str, table: &str) -> Vec<String> {
    ch.query_text(&format!(
        "SELECT name FROM system.columns WHERE database = '{database}' AND table = '{table}'"
    ))
    .lines()
    .map(str::to_owned)
    .collect()
}

/// Column names only full readers may see, from the row declaration.
fn body_columns() -> Vec<String> {
    TraceRow::SCHEMA
        .iter()
        .flat_map(ColumnDef::stored_names)
        .filter(|(_, all)| !all)
        .map(|(n, _)| n)
        .collect()
}

/// Seeded traces: id | minutes ago | host | executable | namespace | workload kind | workload |
/// provider | model | finding | action | intercepted.
const SEEDS: &[&str] = &[
    "1|10|h1|/usr/bin/python3|payments|Deployment|checkout|openai|gpt-4o|secret.aws_access_key|flag|1",
    "2|11|h1|/usr/bin/python3|payments|Deployment|checkout|openai|gpt-4o|pii.email|redact|1",
    "3|12|h2|/usr/bin/node||||anthropic|claude-sonnet-4-5||allow|1",
    "4|13|h2|/opt/app/agent|research|StatefulSet|crawler|mistral|mistral-large|secret.github_token|block|1",
    "5|14|h2|/usr/bin/curl|||||||allow|0",
];

struct World {
    ch: ClickHouseServer,
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> Self {
        let ch = ClickHouseServer::start_with_files(&|tcp| {
            vec![
                ("users.d/llmtrace-readers.xml".into(), users_xml()),
                ("config.d/llmtrace-readers.xml".into(), config_xml(tcp)),
            ]
        });
        let dir = tempfile::tempdir().unwrap();
        let w = Self { ch, dir };
        // The agent (the server's default user) migrates and writes; the readers read.
        w.write_config("agent.toml", "redacted_cluster = \"llmtrace_redacted\"\n");
        for (name, (user, password), database) in [
            ("reader.toml", READER, "llmtrace_redacted"),
            ("full.toml", FULL, "llmtrace"),
        ] {
            let pw = w.dir.path().join(format!("{name}.password"));
            std::fs::write(&pw, format!("{password}\n")).unwrap();
            w.write_config(
                name,
                &format!(
                    "user = \"{user}\"\npassword_file = \"{}\"\ndatabase = \"{database}\"\n",
                    pw.display()
                ),
            );
        }
        let out = w.llmtrace("agent.toml", &["clickhouse", "migrate"]);
        assert!(out.contains("applied migrations"), "{out}");
        w
    }

    fn write_config(&self, name: &str, extra: &str) {
        std::fs::write(
            self.dir.path().join(name),
            format!("[sink.clickhouse]\nurl = \"{}\"\n{extra}", self.ch.url()),
        )
        .unwrap();
    }

    fn run(&self, config: &str, args: &[&str]) -> std::process::Output {
        Command::new(testkit::workspace_bin("llmtrace"))
            .arg("--config")
            .arg(self.dir.path().join(config))
            .args(args)
            .output()
            .expect("run llmtrace")
    }

    fn llmtrace(&self, config: &str, args: &[&str]) -> String {
        let out = self.run(config, args);
        assert!(
            out.status.success(),
            "llmtrace --config {config} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Seeds rows whose every body column holds a marker, and whose other columns make every
    /// saved question answer something: findings, a block and a redaction, pods and host
    /// processes, an uninspected connection.
    fn seed(&self) {
        let now_us = i64::try_from(self.ch.query_u64("SELECT toUInt64(now()) * 1000000")).unwrap();
        let values: Vec<String> = SEEDS
            .iter()
            .map(|row| {
                let f: Vec<&str> = row.split('|').collect();
                let [id, ago, host, exe, ns, kind, workload, provider, model, finding, action, intercepted] =
                    f[..]
                else {
                    panic!("seed {row}")
                };
                let t = now_us - ago.parse::<i64>().unwrap() * 60_000_000;
                let findings = if finding.is_empty() {
                    "[], [], [], [], []".to_owned()
                } else {
                    format!("['{finding}'], ['high'], [0.9], ['request'], ['AKIA****(20)']")
                };
                let reason = if intercepted == "1" { "" } else { "not_configured" };
                format!(
                    "(toUUID('00000000-0000-0000-0000-{id:0>12}'), {t}, {t}, '{host}', '{exe}', \
                     '{exe} --prompt {ARGV}', '{ns}', '{kind}', '{workload}', '{host}', 'prod', \
                     '{provider}', '{model}', 200, 1000, 10, 5, 0.5, 100, 50, \
                     'sys: {PROMPT}', 'reply: {ANSWER}', ['call_1'], ['run_shell'], ['{{\"cmd\":\"{ARGS}\"}}'], \
                     {findings}, '{action}', {intercepted}, '{reason}')"
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO llmtrace.traces (trace_id, start_time, end_time, host, exe, cmdline, \
             k8s_namespace, k8s_workload_kind, k8s_workload, node, cluster, provider, model, status, \
             duration_ms, input_tokens, output_tokens, cost_usd, request_bytes, response_bytes, \
             request_body, response_body, tool_calls.id, tool_calls.name, tool_calls.arguments, \
             findings.kind, findings.severity, findings.confidence, findings.location, \
             findings.excerpt, action, intercepted, not_intercepted_reason) VALUES {}",
            values.join(", ")
        );
        self.ch.query(&sql);
    }
}

#[test]
fn readers_see_no_bodies_and_change_nothing() {
    let w = World::new();
    w.seed();
    let ch = &w.ch;
    let total = ch.query_u64("SELECT count() FROM llmtrace.traces");
    assert_eq!(total, 5);

    // The readers' table: every trace column but the body ones (and the retired pod_uid).
    let hidden = body_columns();
    assert_eq!(
        hidden,
        [
            "cmdline",
            "request_body",
            "response_body",
            "tool_calls.arguments"
        ]
    );
    let expected: Vec<String> = columns(ch, "llmtrace", "traces")
        .into_iter()
        .filter(|c| !hidden.contains(c) && c != "pod_uid")
        .collect();
    assert_eq!(columns(ch, "llmtrace_redacted", "traces"), expected);

    same_answers(&w);
    reader_limits(&w, &hidden);
    nobody_writes(&w);
    assert_eq!(ch.query_u64("SELECT count() FROM llmtrace.traces"), total);
    assert_eq!(columns(ch, "llmtrace_redacted", "traces"), expected);
    full_reader_reads_bodies(&w);
}

/// Every saved question, as each reader: the same answer from both tables.
fn same_answers(w: &World) {
    let mut answered = 0;
    for q in QUERIES {
        let args = ["report", q.name, "--format", "csv", "--since", "7d"];
        let reader = w.llmtrace("reader.toml", &args);
        let full = w.llmtrace("full.toml", &args);
        if q.name == "silent-agents" {
            // minutes_silent follows the clock between the two runs: compare the agents.
            let agents = |csv: &str| -> Vec<String> {
                csv.lines()
                    .map(|l| l.split(',').take(3).collect::<Vec<_>>().join(","))
                    .collect()
            };
            assert_eq!(agents(&reader), agents(&full), "{}", q.name);
        } else {
            assert_eq!(reader, full, "{}", q.name);
        }
        answered += usize::from(reader.lines().count() > 1);
    }
    assert!(
        answered >= QUERIES.len() - 1,
        "only {answered} questions had rows"
    );
}

/// The reader reads every other column, nothing of the bodies, and no route leads to them.
fn reader_limits(w: &World, hidden: &[String]) {
    let ch = &w.ch;
    let all = query_as(
        ch,
        READER,
        "SELECT * FROM llmtrace_redacted.traces FINAL FORMAT TSV",
    )
    .unwrap();
    assert_eq!(all.lines().count(), 5, "{all}");
    assert!(
        all.contains("Deployment") && all.contains("run_shell") && all.contains("AKIA****(20)")
    );
    for marker in [PROMPT, ANSWER, ARGS, ARGV] {
        assert!(!all.contains(marker), "{marker} in {all}");
    }
    let joined = query_as(
        ch,
        READER,
        "SELECT tool_calls.name FROM llmtrace_redacted.traces ARRAY JOIN tool_calls LIMIT 1",
    );
    assert_eq!(joined.as_deref(), Ok("run_shell"));
    for column in hidden {
        refused(
            ch,
            READER,
            &format!("SELECT `{column}` FROM llmtrace_redacted.traces"),
            "Unknown identifier",
        );
    }
    // No route to the traces database: directly, by a local read, by table functions.
    let reader_denied = "Access denied to database llmtrace for user llmtrace_reader";
    refused(
        ch,
        READER,
        "SELECT count() FROM llmtrace.traces",
        reader_denied,
    );
    refused(
        ch,
        READER,
        "SELECT request_body FROM llmtrace.traces",
        reader_denied,
    );
    refused(
        ch,
        READER,
        "SELECT count() FROM llmtrace_redacted.traces SETTINGS prefer_localhost_replica = 1",
        "readonly mode",
    );
    for function in [
        format!(
            "remote('127.0.0.1', llmtrace.traces, '{}', '{}')",
            REDACTOR.0, REDACTOR.1
        ),
        "merge('llmtrace', '^traces$')".to_owned(),
        format!(
            "url('http://127.0.0.1:{}/?query=SELECT%20request_body%20FROM%20llmtrace.traces', TSV, 'b String')",
            ch.http_port
        ),
    ] {
        refused(
            ch,
            READER,
            &format!("SELECT * FROM {function}"),
            "Table functions are forbidden in readonly mode",
        );
    }
    // The service user answers only from loopback with its password; the reader has neither.
    refused(
        ch,
        (REDACTOR.0, READER.1),
        "SELECT 1",
        "Wrong password for user llmtrace_redactor",
    );
}

/// Neither reader changes anything.
fn nobody_writes(w: &World) {
    let ch = &w.ch;
    for who in [READER, FULL] {
        for sql in [
            "INSERT INTO llmtrace.traces (trace_id) VALUES (toUUID('00000000-0000-0000-0000-000000000099'))",
            "INSERT INTO llmtrace_redacted.traces (trace_id) VALUES (toUUID('00000000-0000-0000-0000-000000000099'))",
            "ALTER TABLE llmtrace.traces DROP COLUMN host",
            "ALTER TABLE llmtrace_redacted.traces DROP COLUMN host",
            "DROP TABLE llmtrace.traces",
            "DROP TABLE llmtrace_redacted.traces",
            "CREATE TABLE llmtrace.copy (a UInt8) ENGINE = Memory",
            "TRUNCATE TABLE llmtrace.traces",
        ] {
            assert!(query_as(ch, who, sql).is_err(), "{} ran {sql}", who.0);
        }
    }
}

/// The full reader reads the bodies, and only the traces database.
fn full_reader_reads_bodies(w: &World) {
    let ch = &w.ch;
    let bodies = query_as(
        ch,
        FULL,
        "SELECT request_body, response_body, tool_calls.arguments, cmdline FROM llmtrace.traces \
         WHERE trace_id = toUUID('00000000-0000-0000-0000-000000000001') LIMIT 1 FORMAT TSV",
    )
    .unwrap();
    for marker in [PROMPT, ANSWER, ARGS, ARGV] {
        assert!(bodies.contains(marker), "{marker} not in {bodies}");
    }
    refused(
        ch,
        FULL,
        "SELECT count() FROM llmtrace_redacted.traces",
        "Access denied to database llmtrace_redacted",
    );
}

/// A column a migration adds reaches the readers' table on the next migration, which also
/// repairs a readers' table left behind by an older agent; a second run changes nothing.
#[test]
fn migrations_keep_the_readers_table_in_step() {
    let w = World::new();
    let ch = &w.ch;
    let expected = columns(ch, "llmtrace_redacted", "traces");
    assert!(expected.iter().any(|c| c == "container_name"));
    // The schema before migration 4, with a readers' table made then.
    ch.query("ALTER TABLE llmtrace.traces DROP COLUMN container_name");
    ch.query("DROP TABLE llmtrace.schema_migrations");
    ch.query(
        "CREATE TABLE llmtrace.schema_migrations (version UInt32, name String, applied_at DateTime DEFAULT now()) \
         ENGINE = ReplacingMergeTree() ORDER BY version",
    );
    ch.query("INSERT INTO llmtrace.schema_migrations (version, name) VALUES (1, 'create_traces'), (2, 'x'), (3, 'y')");
    ch.query("DROP TABLE llmtrace_redacted.traces");
    ch.query(
        "CREATE TABLE llmtrace_redacted.traces (trace_id UUID, host String) \
         ENGINE = Distributed(llmtrace_redacted, llmtrace, traces)",
    );
    let out = w.llmtrace("agent.toml", &["clickhouse", "migrate"]);
    assert!(out.contains("applied migrations [4]"), "{out}");
    assert_eq!(columns(ch, "llmtrace_redacted", "traces"), expected);
    ch.query("INSERT INTO llmtrace.traces (trace_id, container_name, request_body) VALUES (toUUID('00000000-0000-0000-0000-000000000007'), 'web-1', 'secret')");
    assert_eq!(
        query_as(
            ch,
            READER,
            "SELECT container_name FROM llmtrace_redacted.traces"
        )
        .as_deref(),
        Ok("web-1")
    );
    // Up to date: the table is not re-made (its metadata keeps its time).
    let made = |ch: &ClickHouseServer| {
        ch.query_text(
            "SELECT metadata_modification_time FROM system.tables \
             WHERE database = 'llmtrace_redacted' AND name = 'traces'",
        )
    };
    let before = made(ch);
    std::thread::sleep(Duration::from_millis(1100));
    w.llmtrace("agent.toml", &["clickhouse", "migrate"]);
    assert_eq!(made(ch), before);
}

/// The modern roles revoke exactly the columns the declaration marks as body, and no saved
/// question or dashboard reads one of them.
#[test]
fn roles_queries_and_dashboards_agree_with_the_declaration() {
    let hidden = body_columns();
    let roles = std::fs::read_to_string(deploy().join("roles-modern.sql")).unwrap();
    let revokes: Vec<&str> = roles
        .lines()
        .filter(|l| l.starts_with("REVOKE SELECT("))
        .collect();
    assert_eq!(revokes.len(), 2, "{roles}");
    for line in revokes {
        let list = &line["REVOKE SELECT(".len()..line.find(") ON ").unwrap()];
        let names: Vec<String> = list
            .split(',')
            .map(|n| n.trim().trim_matches('`').to_owned())
            .collect();
        assert_eq!(names, hidden, "{line}");
    }
    for q in QUERIES {
        for c in &hidden {
            assert!(!q.sql.contains(c.as_str()), "{} reads {c}", q.name);
        }
    }
    let dashboards = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/dashboards");
    for entry in std::fs::read_dir(dashboards).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for c in &hidden {
            assert!(!text.contains(c.as_str()), "{} reads {c}", path.display());
        }
    }
}
