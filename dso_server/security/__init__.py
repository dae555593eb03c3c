"""Security of the operator API: credentials and roles (``tokens``) and the audit log's entries (``audit``).

Pure modules; their tables live in the store (``dso_server.store.security_store``).
"""
