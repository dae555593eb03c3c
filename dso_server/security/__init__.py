"""Security of the DSO server: the lab PKI (``pki``) and the VTN's mutual-TLS identity checks (``identity``)."""
