"""Who may talk to the server: client networks, trusted proxies and what they forward,
Host, Origin/CORS, the cross-site rule and the API token."""
