#!/usr/bin/env bash
# Sourced by install-tools.sh: the real TLS tools the mesh tests use against the inbound
# listener (openssl makes the certificates and plays s_client; curl --cert is a real client),
# and wrk, the load that runs while certificates rotate.
apt_install openssl curl wrk
