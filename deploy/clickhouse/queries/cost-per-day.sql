-- answers: What did each process spend per day: exchanges, input and output tokens, cost in USD?
-- Workload columns: host, exe and comm identify the process today.
SELECT
    toString(toDate(${ts})) AS day,
    host,
    exe,
    comm,
    count() AS exchanges,
    toUInt64(ifNull(sum(input_tokens), 0)) AS input_tokens,
    toUInt64(ifNull(sum(output_tokens), 0)) AS output_tokens,
    round(ifNull(sum(cost_usd), 0), 6) AS cost_usd
FROM ${database}.${table} FINAL
WHERE ${ts} >= now() - ${since}
    AND intercepted = 1
GROUP BY day, host, exe, comm
ORDER BY day, cost_usd DESC, host, exe, comm
