-- answers: What did each workload or process spend per day: exchanges, input and output tokens, cost in USD?
-- Who: namespace is the Kubernetes namespace ('' outside Kubernetes); workload is
-- "<kind>/<name>" of the pod's owning workload, or the executable for a process outside one;
-- process_host is that process's host ('' for a workload, which may run on many nodes).
SELECT
    toString(toDate(${ts})) AS day,
    k8s_namespace AS namespace,
    if(k8s_workload = '', exe, concat(k8s_workload_kind, '/', k8s_workload)) AS workload,
    if(k8s_workload = '', host, '') AS process_host,
    count() AS exchanges,
    toUInt64(ifNull(sum(input_tokens), 0)) AS input_tokens,
    toUInt64(ifNull(sum(output_tokens), 0)) AS output_tokens,
    round(ifNull(sum(cost_usd), 0), 6) AS cost_usd
FROM ${database}.${table} FINAL
WHERE ${ts} >= now() - ${since}
    AND intercepted = 1
GROUP BY day, namespace, workload, process_host
ORDER BY day, cost_usd DESC, namespace, workload, process_host
