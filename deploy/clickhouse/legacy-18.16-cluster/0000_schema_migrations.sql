-- Bookkeeping of applied migrations, replicated to every node of the cluster (18.16 servers).
CREATE DATABASE IF NOT EXISTS ${database} ON CLUSTER ${cluster};

CREATE TABLE IF NOT EXISTS ${database}.schema_migrations ON CLUSTER ${cluster}
(
    version UInt32,
    name String,
    applied_at DateTime DEFAULT now()
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/${database}/schema_migrations', '{replica}')
ORDER BY version;
