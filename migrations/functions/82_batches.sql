-- Offline tills' batches (POST /v1/purchases/batch, app/earning/batch.py): a day of purchases and returns in one
-- request, one transaction. Each item is posted by the same function as a single request (ledger.purchase,
-- ledger.purchase_return): a refusal is that item's answer, never the batch's. What is particular to a batch is
-- only this: its members are found first and locked together, in the service-wide order (ledger.lock_members), so
-- a batch and group commit's batches, transfers or jobs never wait for each other in a cycle.

-- The members a batch names: by the reference of each purchase (an alias resolves to its surviving member), and
-- by the order of each return (the purchase's member). Locks them all; answers which key found which member.
CREATE FUNCTION ledger.lock_batch(p_program uuid, p_member_refs text[], p_order_ids text[])
RETURNS TABLE (member_ref text, order_id text, member_pk bigint) LANGUAGE plpgsql AS $$
DECLARE
    v_refs text[];
    v_orders text[];
    v_members bigint[];
BEGIN
    SELECT array_agg(x.ref), array_agg(x.ord), array_agg(x.pk) INTO v_refs, v_orders, v_members FROM (
        SELECT r.ref, NULL::text AS ord, m.id AS pk
          FROM unnest(p_member_refs) AS r(ref) CROSS JOIN LATERAL ledger.member(p_program, r.ref) m
        UNION ALL
        SELECT NULL, p.order_id, ledger.survivor(p.member_id) FROM purchases p
         WHERE p.program_id = p_program AND p.order_id = ANY (p_order_ids)
    ) x;
    IF v_members IS NOT NULL THEN
        PERFORM ledger.lock_members(v_members);
        RETURN QUERY SELECT * FROM unnest(v_refs, v_orders, v_members);
    END IF;
END $$;
