"""The on-device console page (docs/console.md): routes mounted on the live view's server.

:func:`edge_agent.console.routes.mount_console` is the entry point; the daemon
implements :class:`edge_agent.console.data.ConsoleData`.
"""
