"""The web edge: Starlette handlers that parse, verify, record and answer. Never imports workers/."""
