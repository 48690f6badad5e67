"""DTLS 1.2 objects over pyOpenSSL, with the QUIC objects' call discipline."""
