"""The 4D field: hash-grid encodings (static 3D, dynamic 4D), MLPs, occupancy, rendering.

Importing this package imports torch but compiles nothing; the CPU kernel of the hash grid is
built on first use.
"""

from fourdistill.field.hash_grid import HashGridConfig, HashGridEncoding

__all__ = ["HashGridConfig", "HashGridEncoding"]
