"""The DSO's store: the source of truth (SQLite through sqlite-utils) and the grid's tables."""
