"""Vendor translators: pure mappings between imgate's API and each vendor's HTTP API."""
