"""The query API served by the stack itself (not by the registry)."""
