-- answers: How long did each provider and model take per hour: time to first token and total latency, median and tail?
-- A time series (time is the start of the hour, in the server's zone). Exchanges the policy
-- blocked never reached the provider and are left out. Percentiles are exact (quantileExact:
-- an element of the hour's values, no interpolation); ttft is null for an hour without a
-- streamed first token.
SELECT
    toStartOfHour(${ts}) AS time,
    provider,
    model,
    count() AS exchanges,
    round(quantileExact(0.5)(ttft_ms), 1) AS ttft_p50_ms,
    round(quantileExact(0.95)(ttft_ms), 1) AS ttft_p95_ms,
    round(quantileExact(0.5)(duration_ms), 1) AS latency_p50_ms,
    round(quantileExact(0.95)(duration_ms), 1) AS latency_p95_ms,
    round(quantileExact(0.99)(duration_ms), 1) AS latency_p99_ms
FROM ${database}.${table} FINAL
WHERE ${ts} >= now() - ${since}
    AND intercepted = 1
    AND action != 'block'
GROUP BY time, provider, model
ORDER BY time, provider, model
