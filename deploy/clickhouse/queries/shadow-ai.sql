-- answers: Which workloads or processes call providers or models that are not on the approved lists (shadow AI)?
-- param approved_providers: list = openai,anthropic
-- param approved_models: list =
-- An empty approved_models list approves every model of an approved provider.
-- Who: namespace is the Kubernetes namespace ('' outside Kubernetes); workload is
-- "<kind>/<name>" of the pod's owning workload, or the executable for a process outside one;
-- process_host is that process's host ('' for a workload, which may run on many nodes).
SELECT
    k8s_namespace AS namespace,
    if(k8s_workload = '', exe, concat(k8s_workload_kind, '/', k8s_workload)) AS workload,
    if(k8s_workload = '', host, '') AS process_host,
    provider,
    model,
    if(has(${approved_providers}, provider), 'model', 'provider') AS not_approved,
    count() AS exchanges,
    toString(min(${ts})) AS first_seen,
    toString(max(${ts})) AS last_seen
FROM ${database}.${table} FINAL
WHERE ${ts} >= now() - ${since}
    AND provider != ''
    AND (NOT has(${approved_providers}, provider)
        OR (notEmpty(${approved_models}) AND model != '' AND NOT has(${approved_models}, model)))
GROUP BY namespace, workload, process_host, provider, model
ORDER BY exchanges DESC, namespace, workload, process_host, provider, model
