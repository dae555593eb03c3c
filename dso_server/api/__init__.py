"""The operator's JSON API and web pages (aiohttp)."""
