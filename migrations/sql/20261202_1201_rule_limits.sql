-- issue-12: limits on earn rules, and what erasure may rewrite.

-- The member's counts of the limited rules of a rule set (p_rules, a rule set document), per period of each
-- rule's limits, for the purchase at p_occurred_at: {"<rule id>": {"day": n, "year": n, ...}}; NULL when no
-- rule has limits. A count is the member's purchases the rule applied to (member_rule_awards) in that local
-- calendar day, month or year of p_occurred_at in p_tz ("ever": all of them), less those a return took all of
-- it back from (released). Each count is a range of ix_member_rule_awards_counted. Called by
-- ledger_purchase_context (under the member's lock, so concurrent purchases count each other) and by the quote.
CREATE FUNCTION ledger_rule_counts(p_member bigint, p_rules jsonb, p_occurred_at timestamptz, p_tz text)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_object_agg(r.id, r.counts)
    FROM (
        SELECT rule ->> 'id' AS id,
               (SELECT jsonb_object_agg(l.per, (
                        SELECT count(*) FROM member_rule_awards a
                         WHERE a.member_id = p_member AND a.rule_id = rule ->> 'id' AND NOT a.released
                           AND a.occurred_at >= b.period_start AND a.occurred_at < b.period_end))
                  FROM jsonb_to_recordset(rule -> 'limits') AS l(per text, times bigint)
                 CROSS JOIN LATERAL (
                     SELECT CASE WHEN l.per = 'ever' THEN '-infinity'::timestamptz
                                 ELSE date_trunc(l.per, p_occurred_at AT TIME ZONE p_tz) AT TIME ZONE p_tz END
                                AS period_start,
                            CASE WHEN l.per = 'ever' THEN 'infinity'::timestamptz
                                 ELSE (date_trunc(l.per, p_occurred_at AT TIME ZONE p_tz)
                                       + ('1 ' || l.per)::interval) AT TIME ZONE p_tz END AS period_end
                 ) b) AS counts
          FROM jsonb_array_elements(coalesce(p_rules -> 'rules', '[]'::jsonb)) AS rule
         WHERE CASE WHEN jsonb_typeof(rule -> 'limits') = 'array' THEN jsonb_array_length(rule -> 'limits') > 0
                    ELSE false END
    ) r
$$;

-- purchase_returns is append-only, like the ledger, with one exception: erasure (app/members/service.py) may
-- rewrite `result`, the explanation of a clawback, to remove what names a birthday rule, and nothing else;
-- only inside a transaction that says so (SET LOCAL points_ledger.erasure = 'on'), and only when every number
-- stays: the points of the result and of every line and bonus in it.
CREATE FUNCTION ledger_forbid_change_but_redaction() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND current_setting('points_ledger.erasure', true) = 'on'
       AND (NEW.id, NEW.purchase_id, NEW.return_id, NEW.content_hash, NEW.request, NEW.points, NEW.shortfall,
            NEW.entry_id, NEW.created_at, NEW.occurred_at)
           IS NOT DISTINCT FROM
           (OLD.id, OLD.purchase_id, OLD.return_id, OLD.content_hash, OLD.request, OLD.points, OLD.shortfall,
            OLD.entry_id, OLD.created_at, OLD.occurred_at)
       AND (NEW.result - 'order_bonuses' - 'released_rule_ids') = (OLD.result - 'order_bonuses' - 'released_rule_ids')
       AND (SELECT array_agg(b - 'rule_id' - 'kind' ORDER BY n)
              FROM jsonb_array_elements(NEW.result -> 'order_bonuses') WITH ORDINALITY AS x(b, n))
           IS NOT DISTINCT FROM
           (SELECT array_agg(b - 'rule_id' - 'kind' ORDER BY n)
              FROM jsonb_array_elements(OLD.result -> 'order_bonuses') WITH ORDINALITY AS x(b, n))
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'purchase_returns is append-only (erasure may only redact the names in result)'
        USING ERRCODE = 'restrict_violation';
END $$;

DROP TRIGGER purchase_returns_append_only ON purchase_returns;
CREATE TRIGGER purchase_returns_append_only BEFORE UPDATE OR DELETE ON purchase_returns
    FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change_but_redaction();
