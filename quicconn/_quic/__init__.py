"""The QUIC layer: reactor, port, channel and stream state machines."""
