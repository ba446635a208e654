"""The notification subgraph (port 4004, Postgres schema `notification`).

It reacts to events from every service (consumer in workers/notifications.py), keeps the in-app
inbox and preferences, and sends e-mail (Jinja2 templates in templates/, es-MX and en).
`decisions.py` holds the pure rules for who hears about what; `mailcatcher.py` is the local SMTP
catcher for development.
"""
