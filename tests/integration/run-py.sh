#!/bin/sh
# The automake LOG_COMPILER for the integration tests (tests/integration/*.py):
# run one test file with the Python that has paho-mqtt (configure's PYTHON3,
# Debian's /usr/bin/python3 by default). Exit 99 is a hard error for automake.
test $# -eq 1 || { echo "usage: $0 TEST.py" >&2; exit 99; }
if [ -z "${AVIARYD:-}" ]; then
    echo "run-py.sh: AVIARYD is not set; run the tests with 'make check'" >&2
    exit 99
fi
if [ ! -x "$AVIARYD" ]; then
    echo "run-py.sh: $AVIARYD is not built; run 'make' first" >&2
    exit 99
fi
TESTS_DIR=${TESTS_DIR:-$(cd "$(dirname "$1")" && pwd)}
PYTHONPATH=$TESTS_DIR${PYTHONPATH:+:$PYTHONPATH}
PYTHONDONTWRITEBYTECODE=1
export TESTS_DIR PYTHONPATH PYTHONDONTWRITEBYTECODE
exec "${PYTHON3:-/usr/bin/python3}" "$1"
