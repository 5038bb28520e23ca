"""The 4D field: hash-grid encodings (static 3D, dynamic 4D), MLPs, occupancy, rendering.

Importing this package is cheap (the `fourdistill` command registers its subcommands from
here); torch loads when a name below is first used, and the CPU kernel of the hash grid is
built on its first use.
"""

__all__ = ["HashGridConfig", "HashGridEncoding"]


def __getattr__(name):
    if name in __all__:
        from . import hash_grid

        return getattr(hash_grid, name)
    raise AttributeError(name)
