"""Insight: RFM scores and segments, lifecycle stages, programme health, liability (issue 17)."""
