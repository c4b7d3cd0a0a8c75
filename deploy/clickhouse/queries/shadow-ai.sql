-- answers: Which processes call providers or models that are not on the approved lists (shadow AI)?
-- param approved_providers: list = openai,anthropic
-- param approved_models: list =
-- An empty approved_models list approves every model of an approved provider.
SELECT
    host,
    exe,
    comm,
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
GROUP BY host, exe, comm, provider, model
ORDER BY exchanges DESC, host, exe, comm, provider, model
