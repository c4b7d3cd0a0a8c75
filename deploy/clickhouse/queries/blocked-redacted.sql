-- answers: Which exchanges did the policy block or redact, from which process to which provider, for which findings?
SELECT
    host,
    exe,
    comm,
    provider,
    action,
    count() AS exchanges,
    arrayStringConcat(arraySort(groupUniqArrayArray(findings.kind)), ',') AS finding_kinds,
    toString(max(${ts})) AS last_seen
FROM ${database}.${table} FINAL
WHERE ${ts} >= now() - ${since}
    AND action IN ('block', 'redact')
GROUP BY host, exe, comm, provider, action
ORDER BY exchanges DESC, host, exe, comm, provider, action
