-- price_corrections, robust to a correction landing in the same second as the row it corrects.
-- inserted_at has second resolution, so the original +1 row and a repricing's -1/+1 pair written
-- within that second share one (inserted_at, trace_id, span_id) group: 0007's view required
-- exactly one +1 row per group and dropped such a correction. Here the corrected row is the +1 row
-- of the group that differs from the cancelled one (cost, status or version); the original, an
-- exact copy of the cancelled row, never does. The writer's attribution corrections change none
-- of the three and stay out, as before.
CREATE OR REPLACE VIEW {db}.price_corrections AS
SELECT corrected_at, trace_id_hex, span_id_hex, event_time, user_id, provider, model,
       old.1 AS old_pricing_status, old.2 AS old_price_version, old.3 AS old_cost_usd,
       new.1 AS new_pricing_status, new.2 AS new_price_version, new.3 AS new_cost_usd
FROM
(
    SELECT e.inserted_at AS corrected_at,
           lower(hex(e.trace_id)) AS trace_id_hex,
           lower(hex(e.span_id)) AS span_id_hex,
           any(e.event_time) AS event_time,
           any(e.user_id) AS user_id,
           any(e.provider) AS provider,
           any(if(e.response_model != '', e.response_model, e.request_model)) AS model,
           groupArrayIf((e.pricing_status, e.price_version, e.cost_usd), e.sign < 0) AS olds,
           groupArrayIf((e.pricing_status, e.price_version, e.cost_usd), e.sign > 0) AS news,
           olds[1] AS old,
           arrayFirst(x -> x.1 != old.1 OR x.2 != old.2
                           OR ifNull(toString(x.3), 'NULL') != ifNull(toString(old.3), 'NULL'), news) AS new
    FROM {db}.usage_events AS e
    GROUP BY corrected_at, e.trace_id, e.span_id
    HAVING length(olds) = 1
       AND arrayExists(x -> x.1 != old.1 OR x.2 != old.2
                            OR ifNull(toString(x.3), 'NULL') != ifNull(toString(old.3), 'NULL'), news)
);
