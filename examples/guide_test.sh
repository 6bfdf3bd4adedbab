#!/usr/bin/env bash
# The user guide's shell test (curl + jq), unchanged but for the address.
# Usage: SERVER=http://127.0.0.1:8090 bash examples/guide_test.sh
SERVER=${SERVER:-http://172.16.11.130:8090}

# 1. 发送任务
TASK_ID=$(curl -s -X POST $SERVER \
  -H 'Content-Type: application/json' \
  -d @SCAN_QR_CODE_command.json | jq -r '.task_id')

echo "Task ID: $TASK_ID"

# 2. 循环查询状态
while true; do
    STATUS=$(curl -s $SERVER/task/$TASK_ID | jq -r '.status')
    echo "Status: $STATUS"
    
    if [ "$STATUS" = "completed" ] || [ "$STATUS" = "failed" ]; then
        break
    fi
    
    sleep 2
done

# 3. 获取最终结果
curl $SERVER/task/$TASK_ID | jq
