-- Trace rows, one per HTTP exchange. Column order and types match the agent's RowBinary
-- declaration (agent/src/sink/row.rs); the agent names the columns in its INSERT, so a later
-- migration may add columns. See README.md for how replays are deduplicated.
-- Fleet variant: one replicated local table per shard, a Distributed table in front.
CREATE TABLE IF NOT EXISTS ${database}.${table}_local ON CLUSTER ${cluster}
(
    trace_id UUID,
    connection_id UInt64,
    start_time DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    first_byte_time Nullable(DateTime64(6, 'UTC')),
    end_time DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    host LowCardinality(String),
    pid UInt32,
    uid UInt32,
    comm LowCardinality(String),
    exe LowCardinality(String),
    cmdline String CODEC(ZSTD(3)),
    container_id String,
    pod_uid String,
    dst_addr IPv6,
    dst_port UInt16,
    sni LowCardinality(String),
    alpn LowCardinality(String),
    http_version LowCardinality(String),
    method LowCardinality(String),
    path String CODEC(ZSTD(1)),
    status Nullable(UInt16),
    provider LowCardinality(String),
    api LowCardinality(String),
    model LowCardinality(String),
    response_model LowCardinality(String),
    stream Bool,
    ttft_ms Nullable(Float64),
    duration_ms Float64,
    token_kinds Array(LowCardinality(String)),
    token_counts Array(UInt64),
    input_tokens Nullable(UInt64),
    output_tokens Nullable(UInt64),
    cost_usd Nullable(Float64),
    -- Bodies are the bulk of the bytes: strong compression, shorter retention.
    request_body String CODEC(ZSTD(3)) TTL toDate(start_time) + INTERVAL ${body_retention_days} DAY,
    response_body String CODEC(ZSTD(3)) TTL toDate(start_time) + INTERVAL ${body_retention_days} DAY,
    request_bytes UInt64,
    response_bytes UInt64,
    request_dropped_bytes UInt64,
    response_dropped_bytes UInt64,
    tool_calls Nested(id String, name LowCardinality(String), arguments String),
    findings Nested(kind LowCardinality(String), severity LowCardinality(String), confidence Float32, location String, excerpt String),
    action LowCardinality(String),
    capture_complete Bool,
    api_key_fingerprint String,
    error Nullable(String),
    intercepted Bool,
    not_intercepted_reason LowCardinality(String),

    -- Point lookups and "which traces had finding X / used key Y / came from pod Z".
    INDEX idx_trace_id trace_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_finding_kind findings.kind TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_pod_uid pod_uid TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_container_id container_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_api_key api_key_fingerprint TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_action action TYPE set(16) GRANULARITY 4
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/${database}/${table}_local', '{replica}')
PARTITION BY toDate(start_time)
-- Security questions start from a host (or its pods/processes), a provider/model, and a time
-- range; trace_id last makes the key unique so ReplacingMergeTree collapses only replays.
ORDER BY (host, provider, model, toStartOfHour(start_time), trace_id)
TTL toDate(start_time) + INTERVAL ${retention_days} DAY
SETTINGS replicated_deduplication_window = 10000;

-- Sharding by trace_id sends a replayed row to the shard holding the original, where
-- ReplacingMergeTree can collapse it.
CREATE TABLE IF NOT EXISTS ${database}.${table} ON CLUSTER ${cluster}
AS ${database}.${table}_local
ENGINE = Distributed(${cluster}, ${database}, ${table}_local, cityHash64(trace_id));
