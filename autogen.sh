#!/bin/sh
# Generate ./configure from configure.ac and Makefile.am (needs autoconf, automake, pkg-config).
set -e
cd "$(dirname "$0")"
mkdir -p m4 build-aux
autoreconf --install --force
