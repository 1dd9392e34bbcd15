#!/usr/bin/env bash
# Prints N task lines of the 64 B echo workload the benchmark scripts share:
# {"type":"echo","payload":"xxx…"}, the payload a JSON string of 62 characters
# and its quotes.
#
#   scripts/echo-tasks.sh 100000 > tasks.jsonl
set -euo pipefail
payload=$(printf 'x%.0s' $(seq 62))
awk -v n="${1:?usage: echo-tasks.sh N}" -v p="$payload" \
    'BEGIN { for (i = 0; i < n; i++) printf "{\"type\":\"echo\",\"payload\":\"%s\"}\n", p }'
