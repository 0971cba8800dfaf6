"""Live updates: the status API, the Server-Sent Events stream and the media page.

versions.py stamps each committed change of a media with a version; the web's stream hub
(hub.py) hears of it (PostgreSQL NOTIFY, or SQLite's file changing), reads what changed
after each stream's cursor (changes.py) and writes it as SSE (stream.py); tokens.py says
who may watch; views.py serves it; worker.py is the gunicorn worker that holds the streams.
"""
