#!/usr/bin/env bash
# Sourced by install-tools.sh: the real servers the discovery tests run against.
# etcd-server: the etcd source is tested against a real etcd (through its HTTP/JSON gateway).
# dnsmasq-base: the dnsmasq binary alone (the `dnsmasq` package adds a system service that
# would try to take port 53); the tests run their own instance on a free loopback port.
# apt_install skips packages already installed.
apt_install etcd-server dnsmasq-base
