#!/bin/sh
# run.sh FUZZER SECONDS SEEDS — runs one libFuzzer target for SECONDS over
# its seed corpus, writing what it finds to a temporary directory (the
# seeds in the tree stay as they are). A crash, leak or sanitizer report
# fails the run; libFuzzer saves the input that caused it in the current
# directory.
set -eu
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
exec "$1" -max_total_time="$2" -timeout=20 -rss_limit_mb=2048 \
    -error_exitcode=1 -timeout_exitcode=1 \
    -print_final_stats=1 "$tmp" "$3"
