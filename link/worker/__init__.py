"""The per-VIP worker process: election, state machine, binding and announcing the VIP."""
