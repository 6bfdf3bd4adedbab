#!/usr/bin/env bash
# Submit a command file and wait for its task (curl + jq); a safer examples/guide_test.sh.
#   SERVER=http://127.0.0.1:8090 bash examples/submit_and_wait.sh [COMMAND.json]
# - an Idempotency-Key makes the submit safe to retry: curl retries a failed
#   connection with the same key, so a lost reply never makes a second task;
# - ?wait=30 holds each status request until the task ends (or 30 s pass);
# - every curl has --max-time; `cancelled` ends the loop too.
# Exit: 0 completed, 1 failed, 3 cancelled, 4 timeout, 5 cannot connect / bad reply.
set -euo pipefail

SERVER=${SERVER:-${ROBOT_SERVER_URL:-http://127.0.0.1:8090}}
FILE=${1:-SCAN_QR_CODE_command.json}
TIMEOUT=${TIMEOUT:-600}
AUTH=()
if [ -n "${ROBOT_API_TOKEN:-}" ]; then
    AUTH=(-H "Authorization: Bearer ${ROBOT_API_TOKEN}")
fi
KEY=$(uuidgen 2>/dev/null || cat /proc/sys/kernel/random/uuid)

# 1. Submit. --retry-all-errors also retries a reply cut off mid-way; the key makes that safe.
if ! REPLY=$(curl -sS --max-time 15 --retry 5 --retry-all-errors --retry-delay 1 \
        -X POST "$SERVER/" ${AUTH[@]+"${AUTH[@]}"} \
        -H 'Content-Type: application/json' -H "Idempotency-Key: $KEY" \
        --data-binary @"$FILE"); then
    echo "cannot reach $SERVER" >&2
    exit 5
fi
TASK_ID=$(jq -r '.task_id // empty' <<<"$REPLY")
if [ -z "$TASK_ID" ]; then
    echo "not queued: $(jq -r '.message // .' <<<"$REPLY")" >&2
    exit 5
fi
echo "Task ID: $TASK_ID"

# 2. Wait: each request returns as soon as the task is final, or after 30 s.
DEADLINE=$(( $(date +%s) + TIMEOUT ))
while true; do
    if [ "$(date +%s)" -ge "$DEADLINE" ]; then
        echo "timed out; the task keeps running: curl -X POST $SERVER/task/$TASK_ID/cancel" >&2
        exit 4
    fi
    if ! TASK=$(curl -sS --max-time 45 ${AUTH[@]+"${AUTH[@]}"} \
            "$SERVER/task/$TASK_ID?wait=30"); then
        echo "connection problem; asking again" >&2
        sleep 2
        continue
    fi
    STATUS=$(jq -r '.status' <<<"$TASK")
    echo "Status: $STATUS $(jq -r '.progress // {} | "\(.done // "")/\(.total // "")"' \
        <<<"$TASK")"
    case "$STATUS" in
        completed|failed|cancelled) break ;;
        pending|running) ;;
        *) echo "unexpected reply: $TASK" >&2; exit 5 ;;
    esac
done

# 3. The final result.
jq . <<<"$TASK"
case "$STATUS" in
    completed) exit 0 ;;
    failed) exit 1 ;;
    *) exit 3 ;;
esac
