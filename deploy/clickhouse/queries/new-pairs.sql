-- answers: Which workload→provider (or process→provider) pairs appeared for the first time in the period (never seen before it)?
-- Who: namespace is the Kubernetes namespace ('' outside Kubernetes); workload is
-- "<kind>/<name>" of the pod's owning workload, or the executable for a process outside one;
-- process_host is that process's host ('' for a workload, which may run on many nodes).
-- Reads the whole table: "never before" has no lower time bound.
SELECT
    k8s_namespace AS namespace,
    if(k8s_workload = '', exe, concat(k8s_workload_kind, '/', k8s_workload)) AS workload,
    if(k8s_workload = '', host, '') AS process_host,
    provider,
    toString(min(${ts})) AS first_seen,
    count() AS exchanges
FROM ${database}.${table} FINAL
WHERE provider != ''
GROUP BY namespace, workload, process_host, provider
HAVING min(${ts}) >= now() - ${since}
ORDER BY first_seen DESC, namespace, workload, process_host, provider
