//! The trace row: one per HTTP exchange that reached the agent.
//!
//! Declared once: the `trace_row!` list below is the struct, its RowBinary layout (encode and
//! decode, in this order), the column list the INSERT names, and the ClickHouse type every DDL
//! flavour must give the column (checked by `sink::migrate`'s tests). A new column is one line
//! here (appended at the end: migrations add columns at the end), its name in a column-adding
//! migration (`sink::migrate::MIGRATIONS`), and the line in `trace/` that fills it.
//!
//! Field names are binding: they are the ClickHouse column names and the `llmtrace tail --json`
//! field names. The two `Nested` columns (`tool_calls`, `findings`) are objects in JSON and
//! parallel `name.field` arrays in ClickHouse.

use std::net::{IpAddr, Ipv6Addr};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::column::{Column, DecodeError, Reader, nested_column};
use crate::identity::ContainerRuntime;

/// One column of the trace table. A column whose text is (or may be) what a prompt or an
/// answer said is marked `; body` (a `Nested` one `; body[field, …]` for such fields): only
/// full readers see it. Mark a new column before it ships, or every reader will see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnDef {
    /// Column name (for `Nested`, the prefix of its `name.field` columns).
    pub name: &'static str,
    /// ClickHouse type in the modern spelling; the 18.16 flavour uses same-bytes stand-ins
    /// (`sink::migrate::legacy_type`).
    pub ch_type: &'static str,
    /// Field names of a `Nested` column; empty otherwise.
    pub nested: &'static [&'static str],
    /// Who may read it (`sink::migrate::readers` builds the body-free table from this).
    pub readers: Readers,
}

/// Who may read a column. Body columns hold what a prompt or an answer said (or may say: a
/// command line can carry a prompt given as an argument); only full readers see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readers {
    /// Every reader.
    All,
    /// Only full readers.
    Full,
    /// Every reader sees this `Nested` column except these fields, which only full readers see.
    FullFields(&'static [&'static str]),
}

impl ColumnDef {
    /// The ClickHouse column names it stores (`name.field` for each field of a `Nested` one),
    /// each with whether every reader may read it.
    pub fn stored_names(&self) -> Vec<(String, bool)> {
        if self.nested.is_empty() {
            return vec![(self.name.to_owned(), self.readers != Readers::Full)];
        }
        self.nested
            .iter()
            .map(|f| {
                let all = match self.readers {
                    Readers::All => true,
                    Readers::Full => false,
                    Readers::FullFields(hidden) => !hidden.contains(f),
                };
                (format!("{}.{f}", self.name), all)
            })
            .collect()
    }
}

macro_rules! trace_row {
    (
        $(#[$meta:meta])*
        pub struct TraceRow {
            $(
                $(#[$fmeta:meta])*
                $name:ident : $ty:ty => $ch:expr $(; body $([$($field:ident),*])?)?
                    $(; default $default:expr)? ,
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub struct TraceRow {
            $( $(#[$fmeta])* pub $name: $ty, )*
        }

        impl TraceRow {
            /// Every column in RowBinary order.
            pub const SCHEMA: &'static [ColumnDef] = &[
                $( ColumnDef {
                    name: stringify!($name),
                    ch_type: $ch,
                    nested: <$ty as Column>::NESTED,
                    readers: trace_row!(@readers $(body $([$($field),*])?)?),
                }, )*
            ];

            /// A row with every column at its default.
            fn blank() -> Self {
                Self { $( $name: trace_row!(@default $($default)?), )* }
            }

            /// Appends the RowBinary encoding of every column.
            pub(crate) fn put_columns(&self, out: &mut Vec<u8>) {
                $( Column::put(&self.$name, out); )*
            }

            /// Reads every column from RowBinary.
            pub(crate) fn get_columns(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                Ok(Self { $( $name: Column::get(r, stringify!($name))?, )* })
            }

            /// The bytes a row held in memory takes: itself and the text and arrays it owns
            /// (by length). What the sink queue's byte bound counts.
            pub fn heap_bytes(&self) -> usize {
                size_of::<Self>() $( + Column::heap_bytes(&self.$name) )*
            }
        }
    };
    (@readers) => { Readers::All };
    (@readers body) => { Readers::Full };
    (@readers body [$($field:ident),*]) => { Readers::FullFields(&[$(stringify!($field)),*]) };
    (@default) => { Default::default() };
    (@default $default:expr) => { $default };
}

trace_row! {
    /// One trace row. Timestamps are microseconds since the Unix epoch (UTC). Text columns are
    /// empty when unknown; `Nullable` ones are `None` when unknown, which is not zero.
    pub struct TraceRow {
        /// Unique id of this exchange; the deduplication key in ClickHouse.
        trace_id: Uuid => "UUID"; default Uuid::nil(),
        /// Id of the client connection the exchange arrived on.
        connection_id: u64 => "UInt64",
        /// When the request started (µs since epoch).
        start_time: i64 => "DateTime64(6, 'UTC')",
        /// When the response head arrived (µs since epoch); `None` if none did.
        first_byte_time: Option<i64> => "Nullable(DateTime64(6, 'UTC'))",
        /// When the exchange ended (µs since epoch).
        end_time: i64 => "DateTime64(6, 'UTC')",
        /// Host name of the machine the agent runs on.
        host: String => "LowCardinality(String)",
        /// Process id of the calling process.
        pid: u32 => "UInt32",
        /// User id of the calling process.
        uid: u32 => "UInt32",
        /// Kernel command name (`comm`) of the calling process.
        comm: String => "LowCardinality(String)",
        /// Executable path of the calling process.
        exe: String => "LowCardinality(String)",
        /// Command line of the calling process (bounded, credentials masked). Full readers
        /// only: a prompt given to a command-line client as an argument is in it.
        cmdline: String => "String"; body,
        /// Container id derived from the cgroup path; empty outside containers.
        container_id: String => "String",
        /// Original destination address the application connected to.
        dst_addr: IpAddr => "IPv6"; default IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        /// Original destination port.
        dst_port: u16 => "UInt16",
        /// TLS server name from the ClientHello.
        sni: String => "LowCardinality(String)",
        /// ALPN protocol negotiated with the application (`h2`, `http/1.1`, or empty).
        alpn: String => "LowCardinality(String)",
        /// HTTP version of the exchange (`HTTP/1.1`, `HTTP/2`).
        http_version: String => "LowCardinality(String)",
        /// HTTP request method.
        method: String => "LowCardinality(String)",
        /// Request path (without the query string).
        path: String => "String",
        /// Response status; `None` if no response was received.
        status: Option<u16> => "Nullable(UInt16)",
        /// Detected provider (`openai`, `anthropic`, ...).
        provider: String => "LowCardinality(String)",
        /// API kind (`chat`, `responses`, `messages`, `embeddings`, ...).
        api: String => "LowCardinality(String)",
        /// Model requested by the client.
        model: String => "LowCardinality(String)",
        /// Model reported by the provider in the response.
        response_model: String => "LowCardinality(String)",
        /// Whether the response was streamed.
        stream: bool => "Bool",
        /// Time to first token in milliseconds, when known.
        ttft_ms: Option<f64> => "Nullable(Float64)",
        /// Total duration in milliseconds.
        duration_ms: f64 => "Float64",
        /// Token kinds (`input`, `output`, `cached`, `reasoning`, ...), parallel to `token_counts`.
        token_kinds: Vec<String> => "Array(LowCardinality(String))",
        /// Token counts, parallel to `token_kinds`.
        token_counts: Vec<u64> => "Array(UInt64)",
        /// Input tokens, when the provider reported usage.
        input_tokens: Option<u64> => "Nullable(UInt64)",
        /// Output tokens, when the provider reported usage.
        output_tokens: Option<u64> => "Nullable(UInt64)",
        /// Cost in US dollars; `None` means unknown, which is not zero.
        cost_usd: Option<f64> => "Nullable(Float64)",
        /// Request text (bounded, after redaction).
        request_body: String => "String"; body,
        /// Response text (bounded, after redaction).
        response_body: String => "String"; body,
        /// Request body bytes seen.
        request_bytes: u64 => "UInt64",
        /// Response body bytes seen.
        response_bytes: u64 => "UInt64",
        /// Request body bytes not kept because of the capture bound.
        request_dropped_bytes: u64 => "UInt64",
        /// Response body bytes not kept because of the capture bound.
        response_dropped_bytes: u64 => "UInt64",
        /// Tool calls the model made.
        tool_calls: Vec<ToolCall> => ToolCall::CH_TYPE; body[arguments],
        /// Security findings.
        findings: Vec<Finding> => Finding::CH_TYPE,
        /// Enforcement action taken (`allow`, `flag`, `redact`, `block`).
        action: String => "LowCardinality(String)",
        /// False when any part of the exchange was not captured.
        capture_complete: bool => "Bool"; default true,
        /// Fingerprint of the API key used; never the key itself.
        api_key_fingerprint: String => "String",
        /// Error that ended the exchange, if any.
        error: Option<String> => "Nullable(String)",
        /// Whether TLS was intercepted (false: bytes were spliced through).
        intercepted: bool => "Bool"; default true,
        /// Why the connection was not intercepted; empty when it was.
        not_intercepted_reason: String => "LowCardinality(String)",
        // Added by migration 2 (`sink::migrate::MIGRATIONS`).
        /// Position of the exchange on its connection (1-based; 0 for a relayed connection).
        exchange_seq: u32 => "UInt32",
        /// ALPN protocol negotiated with the provider; empty when no upstream TLS was made.
        upstream_alpn: String => "LowCardinality(String)",
        /// Provider request id (response header), else the response or message id.
        request_id: String => "String",
        /// Why generation stopped, as the provider said (`stop`, `length`, `tool_calls`, ...).
        finish_reason: String => "LowCardinality(String)",
        /// Output token limit the request asked for.
        max_tokens: Option<u64> => "Nullable(UInt64)",
        /// Sampling temperature the request asked for.
        temperature: Option<f64> => "Nullable(Float64)",
        /// True when token counts were estimated because the provider reported no usage.
        usage_estimated: bool => "Bool",
        /// True when some text exceeded the analysis bound and was analysed only up to it.
        analysis_truncated: bool => "Bool",
        /// Milliseconds from the request to the first response body byte, when one arrived.
        first_body_byte_ms: Option<f64> => "Nullable(Float64)",
        /// Median milliseconds between consecutive response body chunks (streams).
        inter_chunk_p50_ms: Option<f64> => "Nullable(Float64)",
        /// Longest milliseconds between consecutive response body chunks (streams).
        inter_chunk_max_ms: Option<f64> => "Nullable(Float64)",
        /// Response body chunks seen by the analysis.
        response_chunks: u64 => "UInt64",
        /// Container runtime named by the cgroup (`docker`, `containerd`, `cri-o`, `podman`).
        container_runtime: ContainerRuntime => "LowCardinality(String)",
        /// Kubernetes pod UID (from the cgroup path); empty outside pods.
        k8s_pod_uid: String => "String",
        /// Kubernetes namespace of the pod.
        k8s_namespace: String => "LowCardinality(String)",
        /// Kubernetes pod name.
        k8s_pod: String => "String",
        /// Container name within the pod.
        k8s_container: String => "LowCardinality(String)",
        /// Kind of the workload owning the pod (`Deployment`, `StatefulSet`, `DaemonSet`, ...).
        k8s_workload_kind: String => "LowCardinality(String)",
        /// Name of the workload owning the pod.
        k8s_workload: String => "LowCardinality(String)",
        /// Kubernetes node name (`NODE_NAME`), else the host name.
        node: String => "LowCardinality(String)",
        /// Inode of the client's network namespace; 0 when unknown.
        netns: u64 => "UInt64",
        /// Version of the agent that wrote the row.
        agent_version: String => "LowCardinality(String)",
        /// Fleet label from `[sink] cluster_label`; empty when not set.
        cluster: String => "LowCardinality(String)",
        /// Names of the tools the request offered the model.
        tools_offered: Vec<String> => "Array(LowCardinality(String))",
        /// Stream events or documents the analysis could not parse.
        parse_errors: u32 => "UInt32",
        /// Docker's name of the container (from the Docker socket); empty otherwise.
        container_name: String => "String",
    }
}

nested_column! {
    /// One tool call made by the model.
    pub struct ToolCall {
        /// Provider-assigned call id.
        id: String => "String",
        /// Tool (function) name.
        name: String => "LowCardinality(String)",
        /// Arguments as sent by the model (JSON text, bounded).
        arguments: String => "String",
    }
}

nested_column! {
    /// One security finding.
    pub struct Finding {
        /// Finding kind (`prompt_injection`, `secret`, `pii`, ...).
        kind: String => "LowCardinality(String)",
        /// Severity (`info`, `low`, `medium`, `high`, `critical`).
        severity: String => "LowCardinality(String)",
        /// Confidence in `[0, 1]`.
        confidence: f32 => "Float32",
        /// Where it was found (`request`, `response`, `tool_call`).
        location: String => "String",
        /// Short redacted excerpt.
        excerpt: String => "String",
    }
}

impl TraceRow {
    /// A row with the given id and times and every other column at its default.
    pub fn new(trace_id: Uuid, start_time: i64, end_time: i64) -> Self {
        Self {
            trace_id,
            start_time,
            end_time,
            ..Self::blank()
        }
    }

    /// Adds a token count of `kind`, keeping the parallel arrays aligned.
    pub fn push_tokens(&mut self, kind: impl Into<String>, count: u64) {
        self.token_kinds.push(kind.into());
        self.token_counts.push(count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_uses_the_column_names() {
        let mut row = TraceRow::new(Uuid::nil(), 1, 2);
        row.findings.push(Finding {
            kind: "secret".into(),
            severity: "high".into(),
            confidence: 0.5,
            location: "request".into(),
            excerpt: "sk-…".into(),
        });
        row.container_runtime = ContainerRuntime::CriO;
        let v = serde_json::to_value(&row).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut names: Vec<&str> = TraceRow::SCHEMA.iter().map(|c| c.name).collect();
        let mut keys_sorted = keys.clone();
        keys_sorted.sort_unstable();
        names.sort_unstable();
        assert_eq!(keys_sorted, names);
        assert_eq!(v["findings"][0]["kind"], "secret");
        assert_eq!(v["findings"][0]["severity"], "high");
        assert_eq!(v["container_runtime"], "cri-o");
        assert!(v["cost_usd"].is_null());
        let back: TraceRow = serde_json::from_value(v).unwrap();
        assert_eq!(back, row);
    }

    /// README's column table names every column.
    #[test]
    fn every_column_is_described_in_the_readme() {
        let readme = include_str!("../../../README.md");
        let table = &readme[readme.find("## Trace columns").expect("column section")..];
        let table = &table[..table[3..].find("\n## ").map_or(table.len(), |i| i + 3)];
        let missing: Vec<&str> = TraceRow::SCHEMA
            .iter()
            .map(|c| c.name)
            .filter(|n| !table.contains(&format!("`{n}`")))
            .collect();
        assert!(missing.is_empty(), "README lacks columns {missing:?}");
    }

    #[test]
    fn nested_types_list_their_fields() {
        assert_eq!(
            ToolCall::CH_TYPE,
            "Nested(id String, name LowCardinality(String), arguments String)"
        );
        let tool_calls = TraceRow::SCHEMA
            .iter()
            .find(|c| c.name == "tool_calls")
            .unwrap();
        assert_eq!(tool_calls.nested, ["id", "name", "arguments"]);
    }

    /// The columns only full readers see: what prompts and answers said, the tool-call
    /// arguments the model wrote, and command lines (which can carry a prompt). Findings'
    /// excerpts are masked and go out in alerts, so every reader sees them.
    #[test]
    fn body_columns_are_marked() {
        let hidden: Vec<String> = TraceRow::SCHEMA
            .iter()
            .flat_map(ColumnDef::stored_names)
            .filter(|(_, all)| !all)
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            hidden,
            [
                "cmdline",
                "request_body",
                "response_body",
                "tool_calls.arguments"
            ]
        );
        let findings = TraceRow::SCHEMA
            .iter()
            .find(|c| c.name == "findings")
            .unwrap();
        assert_eq!(findings.stored_names().len(), 5);
        assert!(findings.stored_names().iter().all(|(_, all)| *all));
    }

    #[test]
    fn new_rows_are_blank_except_the_given_fields() {
        let row = TraceRow::new(Uuid::nil(), 5, 9);
        assert_eq!((row.start_time, row.end_time), (5, 9));
        assert!(row.capture_complete && row.intercepted);
        assert_eq!(row.container_runtime, ContainerRuntime::Unknown);
        assert!(row.host.is_empty() && row.status.is_none());
    }

    #[test]
    fn a_row_weighs_itself_and_every_text_and_array_it_owns() {
        let blank = TraceRow::new(Uuid::nil(), 0, 0);
        assert_eq!(blank.heap_bytes(), size_of::<TraceRow>());
        let mut row = blank.clone();
        row.request_body = "p".repeat(1000);
        row.response_body = "a".repeat(500);
        row.error = Some("e".repeat(7));
        row.push_tokens("input", 3);
        row.tool_calls.push(ToolCall {
            id: "c".into(),
            name: "nm".into(),
            arguments: "x".repeat(40),
        });
        let owned = 1000
            + 500
            + 7
            + (size_of::<String>() + "input".len())
            + size_of::<u64>()
            + (size_of::<ToolCall>() + 1 + 2 + 40);
        assert_eq!(row.heap_bytes(), size_of::<TraceRow>() + owned);
    }
}
