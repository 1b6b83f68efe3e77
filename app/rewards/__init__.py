"""Rewards: the catalogue, exchanges of points for vouchers, the vouchers' life (redeem, cancel, expiry)."""
