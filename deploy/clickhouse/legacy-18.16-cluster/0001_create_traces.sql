-- Cluster variant of the 18.16 compatibility schema (same stand-in types as
-- legacy-18.16/0001_create_traces.sql): one replicated local table per shard and a Distributed
-- table in front, created with ON CLUSTER through the servers' distributed DDL queue (ZooKeeper).
-- 18.16 has no insert deduplication tokens: replays are caught by block checksums instead.
CREATE TABLE IF NOT EXISTS ${database}.${table}_local ON CLUSTER ${cluster}
(
    trace_id UUID,
    connection_id UInt64,
    start_time Int64,
    first_byte_time Nullable(Int64),
    end_time Int64,
    host String,
    pid UInt32,
    uid UInt32,
    comm String,
    exe String,
    cmdline String,
    container_id String,
    pod_uid String,
    dst_addr FixedString(16),
    dst_port UInt16,
    sni String,
    alpn String,
    http_version String,
    method String,
    path String,
    status Nullable(UInt16),
    provider String,
    api String,
    model String,
    response_model String,
    stream UInt8,
    ttft_ms Nullable(Float64),
    duration_ms Float64,
    token_kinds Array(String),
    token_counts Array(UInt64),
    input_tokens Nullable(UInt64),
    output_tokens Nullable(UInt64),
    cost_usd Nullable(Float64),
    request_body String,
    response_body String,
    request_bytes UInt64,
    response_bytes UInt64,
    request_dropped_bytes UInt64,
    response_dropped_bytes UInt64,
    tool_calls Nested(id String, name String, arguments String),
    findings Nested(kind String, severity String, confidence Float32, location String, excerpt String),
    action String,
    capture_complete UInt8,
    api_key_fingerprint String,
    error Nullable(String),
    intercepted UInt8,
    not_intercepted_reason String
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/${database}/${table}_local', '{replica}')
PARTITION BY toDate(toDateTime(intDiv(start_time, 1000000)))
ORDER BY (host, provider, model, intDiv(start_time, 3600000000), trace_id)
-- Replays are dropped by ReplicatedMergeTree's block checksums (a replayed batch is
-- byte-identical); whatever escapes collapses on merge.
SETTINGS replicated_deduplication_window = 10000;

-- Sharding by trace_id sends a replayed row to the shard holding the original, where
-- ReplacingMergeTree can collapse it.
CREATE TABLE IF NOT EXISTS ${database}.${table} ON CLUSTER ${cluster}
AS ${database}.${table}_local
ENGINE = Distributed(${cluster}, ${database}, ${table}_local, cityHash64(trace_id));
