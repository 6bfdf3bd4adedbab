# The user guide's polling client, kept exactly as the guide has it (comments
# and messages in Chinese) so that it keeps working unchanged. Change only
# SERVER_URL. For a client with timeouts, retries and long-poll, see
# examples/better_client.py.
import requests
import time
import json

SERVER_URL = "http://172.16.11.130:8090"

def send_command(json_file):
    """发送命令，立即返回task_id"""
    with open(json_file, 'r') as f:
        data = json.load(f)
    
    response = requests.post(SERVER_URL, json=data)
    result = response.json()
    
    if result.get('success'):
        task_id = result['task_id']
        print(f"✓ 任务已提交: {task_id}")
        return task_id
    else:
        print(f"✗ 提交失败: {result.get('message')}")
        return None

def wait_for_task(task_id, timeout=600, interval=2):
    """等待任务完成（轮询）"""
    start_time = time.time()
    
    while time.time() - start_time < timeout:
        response = requests.get(f"{SERVER_URL}/task/{task_id}")
        task_info = response.json()
        
        status = task_info.get('status')
        print(f"任务状态: {status}")
        
        if status == 'completed':
            print("✓ 任务完成")
            return task_info.get('result')
        elif status == 'failed':
            print("✗ 任务失败")
            return task_info.get('result')
        
        time.sleep(interval)  # 每2秒查询一次
    
    print("✗ 等待超时")
    return None

# 使用示例
if __name__ == "__main__":
    # 1. 发送命令
    task_id = send_command("SCAN_QR_CODE_command.json")
    
    if task_id:
        # 2. 等待完成
        result = wait_for_task(task_id)
        
        # 3. 处理结果
        if result and result.get('success'):
            print(f"扫描完成，数量: {result.get('scanned_count')}")
        else:
            print("任务失败")
