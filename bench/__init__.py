"""imgate's benchmark: `python -m bench` (full) or `python -m bench --quick` (CI).

Every deciding figure is a ratio of two measurements taken in the same run, with the
sandbox, the gateway and the floor programs each in a process of its own on loopback.
"""
