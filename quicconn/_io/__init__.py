"""The I/O layer: datagram transports, wakers, clocks and impairment."""
