-- Appended to every column-adding migration on 18.16 clusters: 18.16 refuses
-- `ALTER … ON CLUSTER` on a Distributed table in front of replicated shards, so the Distributed
-- table is re-created from the local table's new structure. Inserts made while it is gone fail
-- and are retried from the agents' spools; run migrations with agents stopped on clusters of
-- several shards, where the Distributed table may hold blocks queued for other shards.
DROP TABLE IF EXISTS ${database}.${table} ON CLUSTER ${cluster};

CREATE TABLE IF NOT EXISTS ${database}.${table} ON CLUSTER ${cluster}
AS ${database}.${table}_local
ENGINE = Distributed(${cluster}, ${database}, ${table}_local, cityHash64(trace_id));
