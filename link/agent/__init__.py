"""The `link-agent` command: its entry point (`link_agent.py`, the supervisor's start) and its
one-shot subcommands (`associate`/`dissociate`, `import-link`)."""
