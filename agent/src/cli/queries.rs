//! The saved fleet questions of `deploy/clickhouse/queries/`, embedded in the binary, and how
//! they are rendered for one server.
//!
//! Each file starts with `-- answers: <one line>` and may declare parameters as
//! `-- param <name>: list|number = <default>`. Placeholders: `${database}`, `${table}`, `${ts}`
//! (the trace start as a `DateTime`: the legacy schema stores microseconds in an `Int64`),
//! `${since}` (the period in seconds) and every declared parameter. Values are checked before
//! they reach the SQL: lists hold plain names only, numbers are integers.

use std::collections::BTreeMap;

/// One saved query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SavedQuery {
    /// File name without `.sql`, the name `llmtrace report` takes.
    pub name: &'static str,
    /// The file's text.
    pub sql: &'static str,
}

macro_rules! saved {
    ($($name:literal),* $(,)?) => {
        &[$(SavedQuery {
            name: $name,
            sql: include_str!(concat!("../../../deploy/clickhouse/queries/", $name, ".sql")),
        }),*]
    };
}

/// Every saved query, by name.
pub const QUERIES: &[SavedQuery] = saved![
    "actions-over-time",
    "blocked-redacted",
    "cost-per-day",
    "errors-over-time",
    "findings-over-time",
    "latency-over-time",
    "new-pairs",
    "secrets-pii-sent",
    "shadow-ai",
    "silent-agents",
    "top-talkers",
    "traffic-over-time",
    "uninspected",
];

/// A query cannot be rendered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("no saved query {0:?} (see `llmtrace report --list`)")]
    Unknown(String),
    #[error("query {query} has no parameter {param:?}")]
    UnknownParam { query: &'static str, param: String },
    #[error("parameter {param}: {problem}")]
    BadValue { param: String, problem: String },
    #[error("query {query} uses an undefined placeholder ${{{placeholder}}}")]
    Placeholder {
        query: &'static str,
        placeholder: String,
    },
}

/// Kind of a declared parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// Comma-separated names, rendered as a SQL array of strings.
    List,
    /// A non-negative integer.
    Number,
}

/// A declared parameter and its default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// Name, used as `${name}` and `--param name=value`.
    pub name: String,
    /// Kind of value.
    pub kind: ParamKind,
    /// Default value, as written in the file.
    pub default: String,
}

/// Where and how to render.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    /// Database of the traces table.
    pub database: &'a str,
    /// Traces table.
    pub table: &'a str,
    /// The server takes the legacy (18.16) schema, whose `start_time` is an `Int64` of µs.
    pub legacy: bool,
    /// The period to look back over.
    pub since: Since<'a>,
}

/// How far back a query looks.
#[derive(Debug, Clone, Copy)]
pub enum Since<'a> {
    /// A fixed number of seconds (`llmtrace report --since`).
    Seconds(u64),
    /// A SQL expression of seconds, e.g. one built from a dashboard's time-range macro.
    Sql(&'a str),
}

/// The period of a Grafana panel: from the dashboard's time picker (the ClickHouse data source
/// plugin's `$__fromTime` macro) to now.
pub const GRAFANA_SINCE: &str = "(toUInt32(now()) - toUInt32($__fromTime))";

impl SavedQuery {
    /// Looks a query up by name.
    pub fn find(name: &str) -> Result<Self, QueryError> {
        QUERIES
            .iter()
            .find(|q| q.name == name)
            .copied()
            .ok_or_else(|| QueryError::Unknown(name.to_owned()))
    }

    /// The one-line question the query answers.
    pub fn answers(&self) -> &'static str {
        self.sql
            .lines()
            .find_map(|l| l.strip_prefix("-- answers:"))
            .map_or("", str::trim)
    }

    /// Declared parameters.
    pub fn params(&self) -> Vec<Param> {
        self.sql
            .lines()
            .filter_map(|l| l.strip_prefix("-- param "))
            .filter_map(|decl| {
                let (name, rest) = decl.split_once(':')?;
                let (kind, default) = rest.split_once('=')?;
                let kind = match kind.trim() {
                    "list" => ParamKind::List,
                    "number" => ParamKind::Number,
                    _ => return None,
                };
                Some(Param {
                    name: name.trim().to_owned(),
                    kind,
                    default: default.trim().to_owned(),
                })
            })
            .collect()
    }

    /// The SQL for `target`, with `values` overriding parameter defaults.
    pub fn render(
        &self,
        target: &Target<'_>,
        values: &BTreeMap<String, String>,
    ) -> Result<String, QueryError> {
        let params = self.params();
        if let Some(unknown) = values
            .keys()
            .find(|k| !params.iter().any(|p| &p.name == *k))
        {
            return Err(QueryError::UnknownParam {
                query: self.name,
                param: unknown.clone(),
            });
        }
        let ts = if target.legacy {
            "toDateTime(intDiv(start_time, 1000000))"
        } else {
            "toDateTime(start_time)"
        };
        let mut vars: BTreeMap<String, String> = BTreeMap::from([
            ("database".to_owned(), target.database.to_owned()),
            ("table".to_owned(), target.table.to_owned()),
            ("ts".to_owned(), ts.to_owned()),
            (
                "since".to_owned(),
                match target.since {
                    Since::Seconds(n) => n.to_string(),
                    Since::Sql(expr) => expr.to_owned(),
                },
            ),
        ]);
        for p in params {
            let raw = values.get(&p.name).unwrap_or(&p.default);
            vars.insert(p.name.clone(), sql_value(&p, raw)?);
        }
        substitute(self.name, self.sql, &vars)
    }
}

fn sql_value(p: &Param, raw: &str) -> Result<String, QueryError> {
    let bad = |problem: &str| QueryError::BadValue {
        param: p.name.clone(),
        problem: problem.to_owned(),
    };
    match p.kind {
        ParamKind::Number => raw
            .trim()
            .parse::<u64>()
            .map(|n| n.to_string())
            .map_err(|_| bad("must be a non-negative integer")),
        ParamKind::List => {
            let items: Vec<&str> = raw
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            if items.is_empty() {
                return Ok("emptyArrayString()".to_owned());
            }
            // Plain names only, so no quoting can be escaped.
            if let Some(item) = items.iter().find(|s| {
                !s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-:/@".contains(&b))
            }) {
                return Err(bad(&format!(
                    "{item:?} is not a plain name (letters, digits, . _ - : / @)"
                )));
            }
            let quoted: Vec<String> = items.iter().map(|s| format!("'{s}'")).collect();
            Ok(format!("[{}]", quoted.join(", ")))
        }
    }
}

fn substitute(
    query: &'static str,
    sql: &str,
    vars: &BTreeMap<String, String>,
) -> Result<String, QueryError> {
    let mut out = String::with_capacity(sql.len() + 256);
    let mut rest = sql;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').unwrap_or(after.len());
        let name = &after[..end];
        let value = vars.get(name).ok_or_else(|| QueryError::Placeholder {
            query,
            placeholder: name.to_owned(),
        })?;
        out.push_str(value);
        rest = after.get(end + 1..).unwrap_or("");
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(legacy: bool) -> Target<'static> {
        Target {
            database: "llmtrace",
            table: "traces",
            legacy,
            since: Since::Seconds(604_800),
        }
    }

    #[test]
    fn every_query_answers_a_question_and_renders_fully() {
        for q in QUERIES {
            assert!(q.answers().ends_with('?'), "{}: {:?}", q.name, q.answers());
            for legacy in [true, false] {
                let sql = q.render(&target(legacy), &BTreeMap::new()).unwrap();
                assert!(!sql.contains("${"), "{}: {sql}", q.name);
                assert!(sql.contains("llmtrace.traces FINAL"), "{}", q.name);
            }
        }
    }

    #[test]
    fn parameters_are_typed_and_checked() {
        let q = SavedQuery::find("shadow-ai").unwrap();
        let params = q.params();
        assert_eq!(params[0].name, "approved_providers");
        assert_eq!(params[0].default, "openai,anthropic");
        let values = BTreeMap::from([
            ("approved_providers".to_owned(), "openai, azure".to_owned()),
            ("approved_models".to_owned(), "gpt-4o".to_owned()),
        ]);
        let sql = q.render(&target(true), &values).unwrap();
        assert!(sql.contains("has(['openai', 'azure'], provider)"), "{sql}");
        assert!(sql.contains("NOT has(['gpt-4o'], model)"), "{sql}");
        assert!(
            q.render(&target(true), &BTreeMap::new())
                .unwrap()
                .contains("notEmpty(emptyArrayString())")
        );
        let evil = BTreeMap::from([("approved_providers".to_owned(), "a') OR 1=1 --".to_owned())]);
        assert!(matches!(
            q.render(&target(true), &evil),
            Err(QueryError::BadValue { .. })
        ));
        let unknown = BTreeMap::from([("nope".to_owned(), "1".to_owned())]);
        assert!(matches!(
            q.render(&target(true), &unknown),
            Err(QueryError::UnknownParam { .. })
        ));
        let top = SavedQuery::find("top-talkers").unwrap();
        let bad = BTreeMap::from([("limit".to_owned(), "5; DROP".to_owned())]);
        assert!(top.render(&target(false), &bad).is_err());
        assert!(SavedQuery::find("nope").is_err());
    }

    /// Columns `llmtrace_reader` may not read (the REVOKE in roles-modern.sql).
    fn revoked_columns() -> Vec<String> {
        let roles = include_str!("../../../deploy/clickhouse/roles-modern.sql");
        let revoke = roles
            .lines()
            .find(|l| l.starts_with("REVOKE SELECT("))
            .expect("roles-modern.sql revokes the body columns from the reader");
        let cols = &revoke["REVOKE SELECT(".len()..revoke.find(')').unwrap()];
        cols.split(',')
            .map(|c| c.trim().trim_matches('`').to_owned())
            .collect()
    }

    #[test]
    fn the_reader_role_can_run_every_saved_query() {
        let revoked = revoked_columns();
        for body in ["request_body", "response_body", "tool_calls.arguments"] {
            assert!(revoked.iter().any(|c| c == body), "{body} not revoked");
        }
        for q in QUERIES {
            for c in &revoked {
                assert!(!q.sql.contains(c.as_str()), "{} reads {c}", q.name);
            }
        }
    }

    #[test]
    fn every_file_in_the_queries_directory_is_embedded() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/clickhouse/queries");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter_map(|n| n.strip_suffix(".sql").map(str::to_owned))
            .collect();
        files.sort();
        let embedded: Vec<&str> = QUERIES.iter().map(|q| q.name).collect();
        assert_eq!(files, embedded);
    }

    #[test]
    fn the_start_time_expression_follows_the_schema() {
        let q = SavedQuery::find("cost-per-day").unwrap();
        let legacy = q.render(&target(true), &BTreeMap::new()).unwrap();
        let modern = q.render(&target(false), &BTreeMap::new()).unwrap();
        assert!(legacy.contains("toDate(toDateTime(intDiv(start_time, 1000000)))"));
        assert!(modern.contains("toDate(toDateTime(start_time))"));
    }
}
