"""The HTTP front end: routing, request parsing and the dashboard's static files."""
