"""The web UI under `/ui/`: server-rendered page shells (Jinja2) and our own small ES modules.

Pages carry no data and no secrets: each shell renders the chrome in the reader's language and hands the
page's settings to its script in a `<script type="application/json">` block (no inline code, so the CSP
can forbid it). The script signs in through the refresh cookie, keeps the access token in memory only,
and reads everything through the same REST API and WebSocket streams as any other client.
"""
