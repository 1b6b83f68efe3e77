"""Bulk import of a legacy system's members (issue 15): README "Migrating from a legacy system"."""
