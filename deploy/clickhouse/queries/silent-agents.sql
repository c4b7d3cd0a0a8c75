-- answers: Which agents (nodes) stopped reporting: seen in the period, but no trace for quiet_minutes?
-- param quiet_minutes: number = 60
-- An agent is its cluster label, its node (the Kubernetes node name, else the host name) and
-- its host; rows written before the identity columns existed have an empty node and cluster.
-- Rows come from traffic: a node whose apps made no LLM calls looks the same as a stopped agent.
SELECT
    cluster,
    node,
    host,
    toString(max(${ts})) AS last_seen,
    intDiv(toUInt32(now()) - toUInt32(max(${ts})), 60) AS minutes_silent,
    count() AS exchanges
FROM ${database}.${table} FINAL
WHERE ${ts} >= now() - ${since}
GROUP BY cluster, node, host
HAVING max(${ts}) < now() - ${quiet_minutes} * 60
ORDER BY last_seen, cluster, node, host
