"""The operator console at /console/ (views.py): the ledger for people. What happened to a
webhook and its listener runs, what failed and a button to run it again, how healthy the
pipeline is. Off unless CONSOLE_BASIC_AUTH is set (access.py)."""
