"""Incidents: lifecycle state table."""
