"""Leaf modules: the words every process shares (VIP states and events, what a VIP is, pipe
messages, exit codes, counters). They import nothing from link's processes."""
