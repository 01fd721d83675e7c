"""Client-to-server sessions (RFC 6120): TLS, SASL, resource binding."""
