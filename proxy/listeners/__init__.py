"""Listeners that ship with the proxy, registered through entry points."""
