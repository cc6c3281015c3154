"""DBC files shipped with Fleet Server.

A package of its own so that the ``*.dbc`` package-data pattern in pyproject.toml ships these files.
"""
