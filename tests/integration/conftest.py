"""The integration suite's stacks are the session's (tests/conftest.py): `stack`, on
SQLite and PostgreSQL, and `listener_stack`, with the README's example listener added."""
