"""The supervisor: forks one worker per VIP and the API process, watches and relays."""
