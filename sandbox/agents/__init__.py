"""Agents as first-class users: the MCP server (``sandbox mcp``), its tools and background jobs.

``mcp.py`` is the only module that imports the ``mcp`` SDK (the ``mcp`` extra); ``tools.py``
holds what the tools do, on :class:`~sandbox.api.Sandbox`, returning the pydantic models of
``models.py``; ``jobs.py`` runs longer commands in the background; ``stdio.py`` takes fd 0 and 1
away from everything but the protocol.
"""
