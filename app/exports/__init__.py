"""Exports for accounting and BI (issue 15): README "Exports"."""
