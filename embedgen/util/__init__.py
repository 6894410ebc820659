"""Small helpers every layer may use: durable atomic writes, byte sizes, file locks.

Modules here import only :mod:`embedgen.errors`, the standard library and third-party
packages, so any package of embedgen can depend on them.
"""
