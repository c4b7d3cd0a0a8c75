-- answers: Which workloads or processes sent secrets or personal data (PII) to which provider (request findings; blocked requests were never sent and are left out)?
-- Who: namespace is the Kubernetes namespace ('' outside Kubernetes); workload is
-- "<kind>/<name>" of the pod's owning workload, or the executable for a process outside one;
-- process_host is that process's host ('' for a workload, which may run on many nodes).
SELECT
    k8s_namespace AS namespace,
    if(k8s_workload = '', exe, concat(k8s_workload_kind, '/', k8s_workload)) AS workload,
    if(k8s_workload = '', host, '') AS process_host,
    provider,
    countIf(arrayExists((k, l) -> k LIKE 'secret.%' AND l = 'request', findings.kind, findings.location)) AS secret_exchanges,
    countIf(arrayExists((k, l) -> k LIKE 'pii.%' AND l = 'request', findings.kind, findings.location)) AS pii_exchanges,
    countIf(action = 'redact') AS redacted,
    toString(min(${ts})) AS first_seen,
    toString(max(${ts})) AS last_seen
FROM ${database}.${table} FINAL
WHERE ${ts} >= now() - ${since}
    AND action != 'block'
    AND arrayExists((k, l) -> (k LIKE 'secret.%' OR k LIKE 'pii.%') AND l = 'request', findings.kind, findings.location)
GROUP BY namespace, workload, process_host, provider
ORDER BY secret_exchanges + pii_exchanges DESC, namespace, workload, process_host, provider
