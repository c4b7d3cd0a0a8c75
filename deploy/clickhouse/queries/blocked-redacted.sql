-- answers: Which exchanges did the policy block or redact, from which workload or process to which provider, for which findings?
-- Who: namespace is the Kubernetes namespace ('' outside Kubernetes); workload is
-- "<kind>/<name>" of the pod's owning workload, or the executable for a process outside one;
-- process_host is that process's host ('' for a workload, which may run on many nodes).
SELECT
    k8s_namespace AS namespace,
    if(k8s_workload = '', exe, concat(k8s_workload_kind, '/', k8s_workload)) AS workload,
    if(k8s_workload = '', host, '') AS process_host,
    provider,
    action,
    count() AS exchanges,
    arrayStringConcat(arraySort(groupUniqArrayArray(findings.kind)), ',') AS finding_kinds,
    toString(max(${ts})) AS last_seen
FROM ${database}.${table} FINAL
WHERE ${ts} >= now() - ${since}
    AND action IN ('block', 'redact')
GROUP BY namespace, workload, process_host, provider, action
ORDER BY exchanges DESC, namespace, workload, process_host, provider, action
