-- answers: Which workloads or processes talk to LLM providers the most (exchanges, tokens, cost, bytes)?
-- param limit: number = 20
-- Who: namespace is the Kubernetes namespace ('' outside Kubernetes); workload is
-- "<kind>/<name>" of the pod's owning workload, or the executable for a process outside one;
-- process_host is that process's host ('' for a workload, which may run on many nodes).
SELECT
    k8s_namespace AS namespace,
    if(k8s_workload = '', exe, concat(k8s_workload_kind, '/', k8s_workload)) AS workload,
    if(k8s_workload = '', host, '') AS process_host,
    count() AS exchanges,
    toUInt64(ifNull(sum(input_tokens), 0) + ifNull(sum(output_tokens), 0)) AS tokens,
    round(ifNull(sum(cost_usd), 0), 6) AS cost_usd,
    sum(request_bytes + response_bytes) AS bytes
FROM ${database}.${table} FINAL
WHERE ${ts} >= now() - ${since}
GROUP BY namespace, workload, process_host
ORDER BY exchanges DESC, cost_usd DESC, namespace, workload, process_host
LIMIT ${limit}
