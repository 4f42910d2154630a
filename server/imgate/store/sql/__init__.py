"""What both SQL stores (SQLite, PostgreSQL) speak alike: their tables (schema.py), their
queries by name (queries.sql, read by queries.py), the runner that migrates either
(migrate.py), and the recipient-list logic they share (lists.py)."""
