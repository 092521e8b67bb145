"""Pure rules and data: no IO, no asyncio, nothing of ours outside core."""
