"""The run store: run folders indexed in SQLite, its schema and read-side queries."""
