//! `llmtrace report`: run a saved fleet question against the configured ClickHouse and print
//! the answer as a table, JSON or CSV.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use serde::Deserialize;
use serde_json::Value;

use super::queries::{QUERIES, SavedQuery, Since, Target};
use crate::sink::{SinkConfig, client};

/// A report's answer is held in memory to be printed: a bigger one is refused, not truncated.
const MAX_RESULT_BYTES: usize = 64 << 20;

/// `llmtrace report` arguments.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Saved query to run (see `--list`).
    #[arg(required_unless_present = "list")]
    pub name: Option<String>,
    /// List the saved queries with the question each answers and its parameters.
    #[arg(long)]
    pub list: bool,
    /// Period to look at: a number with s, m, h, d or w (e.g. 24h, 7d).
    #[arg(long, default_value = "7d")]
    pub since: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// A query parameter, e.g. `--param approved_providers=openai,anthropic` (repeatable).
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
}

/// How the answer is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// A JSON array of objects keyed by column name.
    Json,
    /// CSV with a header line.
    Csv,
}

/// A result in ClickHouse's `JSONCompact` format.
#[derive(Debug, Deserialize)]
struct Answer {
    meta: Vec<Column>,
    data: Vec<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
struct Column {
    name: String,
}

/// Runs `llmtrace report`.
pub async fn run(args: &ReportArgs, cfg: &SinkConfig) -> anyhow::Result<()> {
    if args.list {
        print!("{}", list());
        return Ok(());
    }
    let name = args.name.as_deref().unwrap_or_default();
    let query = SavedQuery::find(name)?;
    let since_seconds = parse_period(&args.since)?;
    let values = parse_params(&args.params)?;
    let ch = &cfg.clickhouse;
    let timeout = Duration::from_millis(ch.timeout_ms);
    let client = client::build(ch)?;
    let version = client::server_version(&client, timeout)
        .await
        .context("ClickHouse did not answer")?;
    let sql = query.render(
        &Target {
            database: &ch.database,
            table: &ch.table,
            legacy: !version.is_modern(),
            since: Since::Seconds(since_seconds),
        },
        &values,
    )?;
    let body = tokio::time::timeout(timeout, fetch(&client, &sql))
        .await
        .map_err(|_| anyhow::anyhow!("the query did not finish within {timeout:?}"))?
        .with_context(|| format!("query {name} failed"))?;
    print!("{}", format_answer(&body, args.format)?);
    Ok(())
}

/// Prints a ClickHouse `JSONCompact` answer in `format`.
pub fn format_answer(body: &[u8], format: Format) -> anyhow::Result<String> {
    let answer: Answer =
        serde_json::from_slice(body).context("decoding ClickHouse's JSONCompact answer")?;
    Ok(render(&answer, format))
}

async fn fetch(client: &clickhouse::Client, sql: &str) -> anyhow::Result<Vec<u8>> {
    let mut cursor = client
        .query_raw(sql)
        // 64-bit counts as JSON numbers, not strings (18.16 and modern servers alike).
        .with_setting("output_format_json_quote_64bit_integers", "0")
        .fetch_bytes("JSONCompact")?;
    let mut body = Vec::new();
    while let Some(chunk) = cursor.next().await? {
        if body.len() + chunk.len() > MAX_RESULT_BYTES {
            bail!("the answer is larger than {MAX_RESULT_BYTES} bytes: narrow it with --since");
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `--list`: one line per query with its question, then its parameters.
pub fn list() -> String {
    let width = QUERIES.iter().map(|q| q.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for q in QUERIES {
        let _ = writeln!(out, "{:<width$}  {}", q.name, q.answers());
        for p in q.params() {
            let _ = writeln!(
                out,
                "{:<width$}    --param {}=… (default: {:?})",
                "", p.name, p.default
            );
        }
    }
    out
}

/// Parses `7d`, `24h`, `30m`, `90s`, `2w` into seconds.
pub fn parse_period(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let split = s.len().saturating_sub(1);
    let (number, unit) = s.split_at(split);
    let multiplier = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        _ => bail!("--since {s:?}: expected a number with s, m, h, d or w (e.g. 7d)"),
    };
    let n: u64 = number
        .parse()
        .with_context(|| format!("--since {s:?}: expected a number with s, m, h, d or w"))?;
    n.checked_mul(multiplier)
        .filter(|&v| v > 0)
        .with_context(|| format!("--since {s:?} must be positive and not absurdly large"))
}

fn parse_params(params: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    params
        .iter()
        .map(|p| {
            let (k, v) = p
                .split_once('=')
                .with_context(|| format!("--param {p:?}: expected NAME=VALUE"))?;
            Ok((k.trim().to_owned(), v.to_owned()))
        })
        .collect()
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "NULL".to_owned(),
        other => other.to_string(),
    }
}

fn render(answer: &Answer, format: Format) -> String {
    let names: Vec<&str> = answer.meta.iter().map(|c| c.name.as_str()).collect();
    let mut out = String::new();
    match format {
        Format::Json => {
            let rows: Vec<serde_json::Map<String, Value>> = answer
                .data
                .iter()
                .map(|row| {
                    names
                        .iter()
                        .map(|n| (*n).to_owned())
                        .zip(row.iter().cloned())
                        .collect()
                })
                .collect();
            out = serde_json::to_string_pretty(&rows).unwrap_or_default();
            out.push('\n');
        }
        Format::Csv => {
            let line = |cells: Vec<String>| {
                cells
                    .iter()
                    .map(|c| csv_field(c))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let _ = writeln!(
                out,
                "{}",
                line(names.iter().map(|n| (*n).to_owned()).collect())
            );
            for row in &answer.data {
                let _ = writeln!(out, "{}", line(row.iter().map(cell).collect()));
            }
        }
        Format::Table => {
            let rows: Vec<Vec<String>> = answer
                .data
                .iter()
                .map(|r| r.iter().map(cell).collect())
                .collect();
            let mut widths: Vec<usize> = names.iter().map(|n| n.chars().count()).collect();
            for row in &rows {
                for (w, c) in widths.iter_mut().zip(row) {
                    *w = (*w).max(c.chars().count());
                }
            }
            let line = |cells: &[String]| {
                let padded: Vec<String> = cells
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect();
                padded.join("  ").trim_end().to_owned()
            };
            let header: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
            let _ = writeln!(out, "{}", line(&header));
            for row in &rows {
                let _ = writeln!(out, "{}", line(row));
            }
            let _ = writeln!(out, "({} rows)", rows.len());
        }
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer() -> Answer {
        serde_json::from_str(
            r#"{"meta":[{"name":"host","type":"String"},{"name":"n","type":"UInt64"},{"name":"c","type":"Nullable(Float64)"}],
                "data":[["h1",3,0.5],["a,\"b\"",10,null]],"rows":2}"#,
        )
        .unwrap()
    }

    #[test]
    fn periods_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_period("7d").unwrap(), 604_800);
        assert_eq!(parse_period("24h").unwrap(), 86_400);
        assert_eq!(parse_period("30m").unwrap(), 1_800);
        assert_eq!(parse_period("2w").unwrap(), 1_209_600);
        for bad in ["", "d", "7", "7y", "-1d", "0h", "99999999999999999999d"] {
            assert!(parse_period(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_print_every_row() {
        assert_eq!(
            render(&answer(), Format::Table),
            "host   n   c\nh1     3   0.5\na,\"b\"  10  NULL\n(2 rows)\n"
        );
        assert_eq!(
            render(&answer(), Format::Csv),
            "host,n,c\nh1,3,0.5\n\"a,\"\"b\"\"\",10,NULL\n"
        );
        let json: Value = serde_json::from_str(&render(&answer(), Format::Json)).unwrap();
        assert_eq!(json[1]["n"], 10);
        assert_eq!(json[0]["host"], "h1");
        assert!(json[1]["c"].is_null());
    }

    #[test]
    fn the_list_names_every_query_and_parameter() {
        let text = list();
        for q in QUERIES {
            assert!(
                text.contains(q.name) && text.contains(q.answers()),
                "{}",
                q.name
            );
        }
        assert!(text.contains("--param approved_providers="));
    }
}
