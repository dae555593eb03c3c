"""The profile's version (PROFILE.md §1.6): it travels in every event's program URN."""

from __future__ import annotations

PROFILE_MAJOR = 1
PROFILE_MINOR = 0
PROFILE_VERSION = f"{PROFILE_MAJOR}.{PROFILE_MINOR}"
"""The version of PROFILE.md this package implements (its first line says the same)."""
