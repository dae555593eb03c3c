"""The DSO's store: the source of truth (SQLite or PostgreSQL, one interface) and the grid's tables."""
