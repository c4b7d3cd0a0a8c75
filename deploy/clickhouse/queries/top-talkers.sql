-- answers: Which processes talk to LLM providers the most (exchanges, tokens, cost, bytes)?
-- param limit: number = 20
SELECT
    host,
    exe,
    comm,
    count() AS exchanges,
    toUInt64(ifNull(sum(input_tokens), 0) + ifNull(sum(output_tokens), 0)) AS tokens,
    round(ifNull(sum(cost_usd), 0), 6) AS cost_usd,
    sum(request_bytes + response_bytes) AS bytes
FROM ${database}.${table} FINAL
WHERE ${ts} >= now() - ${since}
GROUP BY host, exe, comm
ORDER BY exchanges DESC, cost_usd DESC, host, exe, comm
LIMIT ${limit}
