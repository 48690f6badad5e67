"""The objects layer: OpenSSL-shaped Context, Connection, Stream, Listener, poll."""
