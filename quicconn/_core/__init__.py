"""The core layer: the QUIC core interface and its backends."""
