-- answers: How many exchanges, tokens and USD did each node, namespace, workload and model use per hour?
-- A time series (time is the start of the hour, in the server's zone) for the fleet overview.
-- Who: node is the Kubernetes node or host the agent runs on; namespace is the Kubernetes
-- namespace ('' outside Kubernetes); workload is "<kind>/<name>" of the pod's owning
-- workload, or the executable for a process outside one.
SELECT
    toStartOfHour(${ts}) AS time,
    node,
    k8s_namespace AS namespace,
    if(k8s_workload = '', exe, concat(k8s_workload_kind, '/', k8s_workload)) AS workload,
    model,
    count() AS exchanges,
    toUInt64(ifNull(sum(input_tokens), 0)) AS input_tokens,
    toUInt64(ifNull(sum(output_tokens), 0)) AS output_tokens,
    round(ifNull(sum(cost_usd), 0), 6) AS cost_usd
FROM ${database}.${table} FINAL
WHERE ${ts} >= now() - ${since}
    AND intercepted = 1
GROUP BY time, node, namespace, workload, model
ORDER BY time, node, namespace, workload, model
