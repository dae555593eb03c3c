"""Security of the DSO server: the lab PKI (``pki``) and the VTN's mutual TLS (``tls``); the operator API's
credentials and roles (``tokens``) and the audit log's entries (``audit``).

Pure modules but ``pki`` (it writes the CA's files); their tables live in the store
(``dso_server.store.security_store``, ``dso_server.store.certificates``).
"""
