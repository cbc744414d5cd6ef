"""The HTTP API: thin FastAPI routes over the runtime (``create_app`` in ``app``).

A package (not a namespace directory) so that coverage measures it and mypy checks it as part of
``genhook``.
"""
