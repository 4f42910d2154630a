"""Vendor quotas: sliding windows in process or in Redis, and the callers' fair queue."""
