"""The media app's side, as the listeners see it: its media records, the Ittybit API
client that starts follow-up jobs, mail for notifications, and submitting new media."""
