"""The Lua scripts of the layout, read once from the ``lua/`` files beside this module.

``LOOKUP_LUA`` binary-searches one bucket blob and returns one payload in a single round trip;
``SWITCH_LUA`` and ``ROLLBACK_LUA`` move the ``current``/``previous`` pointers atomically and
announce the change on the channel. Clients register them with ``redis.register_script``.
"""

from __future__ import annotations

from importlib.resources import files

_LUA = files(__package__) / "lua"

LOOKUP_LUA = (_LUA / "lookup.lua").read_text()
SWITCH_LUA = (_LUA / "switch.lua").read_text()
ROLLBACK_LUA = (_LUA / "rollback.lua").read_text()
