"""The operator's console: the start-up menus and banner, what the console speaks
(language, statuses, layout), and the console the process runs in (output that cannot
fail, shutdown signals). The client CLI uses text.py and terminal.py only."""
