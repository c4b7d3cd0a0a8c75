-- answers: Which connections were relayed uninspected (never decrypted), from which workload or process, to which name, and why?
-- Who: namespace is the Kubernetes namespace ('' outside Kubernetes); workload is
-- "<kind>/<name>" of the pod's owning workload, or the executable for a process outside one;
-- process_host is that process's host ('' for a workload, which may run on many nodes).
SELECT
    k8s_namespace AS namespace,
    if(k8s_workload = '', exe, concat(k8s_workload_kind, '/', k8s_workload)) AS workload,
    if(k8s_workload = '', host, '') AS process_host,
    sni,
    not_intercepted_reason AS reason,
    count() AS connections,
    sum(request_bytes + response_bytes) AS bytes,
    toString(max(${ts})) AS last_seen
FROM ${database}.${table} FINAL
WHERE ${ts} >= now() - ${since}
    AND intercepted = 0
GROUP BY namespace, workload, process_host, sni, reason
ORDER BY connections DESC, namespace, workload, process_host, sni, reason
