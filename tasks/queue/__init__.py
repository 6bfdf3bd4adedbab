"""The queue: its state changes (manager.py) and what they use: the queue in memory,
start-up recovery, stop records, change events, long-poll waiters and the views
clients read."""
