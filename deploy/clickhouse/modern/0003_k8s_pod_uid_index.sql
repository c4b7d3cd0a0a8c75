-- "Which traces came from pod Z" after pod_uid was retired for k8s_pod_uid (migration 2).
-- Applies to parts written from now on; older parts still answer through pod_uid's index.
ALTER TABLE ${database}.${table}
    ADD INDEX IF NOT EXISTS idx_k8s_pod_uid k8s_pod_uid TYPE bloom_filter(0.01) GRANULARITY 4;
