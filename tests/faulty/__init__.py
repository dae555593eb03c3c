"""Deliberately faulty implementations that the conformance suite must catch."""
