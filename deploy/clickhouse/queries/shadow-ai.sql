-- answers: Which workloads or processes call providers or models that are not on the approved lists, or LLM APIs that are not configured at all (shadow AI)?
-- param approved_providers: list = openai,anthropic
-- param approved_models: list =
-- An empty approved_models list approves every model of an approved provider.
-- Who: namespace is the Kubernetes namespace ('' outside Kubernetes); workload is
-- "<kind>/<name>" of the pod's owning workload, or the executable for a process outside one;
-- process_host is that process's host ('' for a workload, which may run on many nodes).
-- server_name: a TLS server name that looks like an LLM API ([control] llm_api_names) on a
-- connection relayed untouched because the name is not configured (finding
-- shadow_ai.llm_api; not_approved = 'unconfigured_name'); '' for intercepted exchanges.
SELECT
    k8s_namespace AS namespace,
    if(k8s_workload = '', exe, concat(k8s_workload_kind, '/', k8s_workload)) AS workload,
    if(k8s_workload = '', host, '') AS process_host,
    provider,
    model,
    if(has(findings.kind, 'shadow_ai.llm_api'), sni, '') AS server_name,
    multiIf(has(findings.kind, 'shadow_ai.llm_api'), 'unconfigured_name',
        has(${approved_providers}, provider), 'model', 'provider') AS not_approved,
    count() AS exchanges,
    toString(min(${ts})) AS first_seen,
    toString(max(${ts})) AS last_seen
FROM ${database}.${table} FINAL
WHERE ${ts} >= now() - ${since}
    AND ((provider != ''
            AND (NOT has(${approved_providers}, provider)
                OR (notEmpty(${approved_models}) AND model != '' AND NOT has(${approved_models}, model))))
        OR (intercepted = 0 AND has(findings.kind, 'shadow_ai.llm_api')))
GROUP BY namespace, workload, process_host, provider, model, server_name, not_approved
ORDER BY exchanges DESC, namespace, workload, process_host, provider, model, server_name
