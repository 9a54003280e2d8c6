"""The `link-client` command (entry point `link_client.main`): a client of the agent's HTTP API,
sharing nothing with the agent but the API's JSON."""
