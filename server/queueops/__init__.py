"""The queue as an operator shapes it (issue 33): moving and jumping work, drain and
maintenance, what a pending task waits for, and the history export (GET /tasks.csv)."""
