#!/bin/bash
# quicconn's entry point in the QUIC interop runner's endpoint image.
#
# The runner starts the container with ROLE, TESTCASE, REQUESTS,
# SSLKEYLOGFILE and QLOGDIR set and /www, /downloads and /certs mounted.
# /setup.sh (from the quic-network-simulator-endpoint base image) routes
# traffic through the simulator; the server waits for nothing, the client
# waits until the simulator is up, as every runner endpoint does.  The
# testcase logic, including exit status 127 for unsupported testcases, is in
# interop/endpoint.py.
set -e

if [ -f /setup.sh ]; then
    # shellcheck disable=SC1091
    . /setup.sh
fi

if [ "$ROLE" = "client" ] && [ -x /wait-for-it.sh ]; then
    /wait-for-it.sh sim:57832 -s -t 30
fi

# The project's root: /quicconn in the image, else this checkout.
if [ -d /quicconn/interop ]; then cd /quicconn; else cd "$(dirname "$0")/.."; fi
exec python3 -m interop.endpoint
