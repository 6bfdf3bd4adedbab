"""Webhooks: telling other systems when work ends (docs/webhooks.md). The outbox and the
subscriptions are the task store's (tasks/store/outbox.py, tasks/store/webhooks.py); here
are signing, the allow-list, one delivery, the sender's threads and the API."""
