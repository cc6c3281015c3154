"""Management use cases shared by the API and the CLI: one function per action, auditing included.

Each function takes a connection (in a superuser or system context, unless it says otherwise) and the
`Actor`, checks what the action needs, changes the rows and writes the `admin_audit_log` entry in the same
transaction. Routes and commands only translate input and output (STYLE 19; `fleet.api.sessions.sign_in`).
"""
