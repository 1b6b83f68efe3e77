-- The tier metric (points, spend or purchases over a window of months) from per-member daily totals, so a
-- purchase's upgrade check costs the same for a member with ten purchases as for one with ten thousand.
--
-- member_purchase_days holds, per member and UTC day of occurred_at, the sums the metric needs. It is a
-- materialised aggregate of `purchases` (like member_balances of postings): kept by the trigger below in
-- the transaction that changes a purchase, under the member's lock (every purchase and return takes it),
-- and recomputed by `verify`. The metric over [start, end] is the days from start's to end's, minus the
-- purchases of those two days that fall outside the window: for a purchase posted now, nothing.

CREATE FUNCTION ledger_purchase_days_apply() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_points bigint := NEW.points - NEW.clawed_back_points;
    v_qualifying bigint := greatest(NEW.qualifying_points - NEW.qualifying_clawed_back, 0);
    v_spend numeric := NEW.eligible_amount;
    v_count integer := 1;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        v_points := v_points - (OLD.points - OLD.clawed_back_points);
        v_qualifying := v_qualifying - greatest(OLD.qualifying_points - OLD.qualifying_clawed_back, 0);
        v_spend := v_spend - OLD.eligible_amount;
        v_count := 0;
        IF v_points = 0 AND v_qualifying = 0 AND v_spend = 0 THEN
            RETURN NULL;
        END IF;
    END IF;
    INSERT INTO member_purchase_days AS d (member_id, day, points, qualifying_points, spend, purchases)
    VALUES (NEW.member_id, (NEW.occurred_at AT TIME ZONE 'UTC')::date, v_points, v_qualifying, v_spend, v_count)
    ON CONFLICT (member_id, day) DO UPDATE
       SET points = d.points + EXCLUDED.points, qualifying_points = d.qualifying_points + EXCLUDED.qualifying_points,
           spend = d.spend + EXCLUDED.spend, purchases = d.purchases + EXCLUDED.purchases;
    RETURN NULL;
END $$;

CREATE TRIGGER purchases_days AFTER INSERT OR UPDATE ON purchases
    FOR EACH ROW EXECUTE FUNCTION ledger_purchase_days_apply();

INSERT INTO member_purchase_days (member_id, day, points, qualifying_points, spend, purchases)
SELECT member_id, (occurred_at AT TIME ZONE 'UTC')::date, sum(points - clawed_back_points),
       sum(greatest(qualifying_points - qualifying_clawed_back, 0)), sum(eligible_amount), count(*)
  FROM purchases GROUP BY 1, 2;
