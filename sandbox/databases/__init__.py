"""Per-workspace PostgreSQL databases: strategies (snapshot, template, schema) and servers."""
