"""The web console served by ``runbell serve`` at ``/``.

The room for the console's routes, templates and static files: it reads and
changes the service through the same stores and API the HTTP routes use.
"""
