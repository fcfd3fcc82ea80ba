"""`main.py cache`: where Allot's cache is and what it holds; `--clear` empties it.

    python3 main.py cache            # the folder, and entries per kind
    python3 main.py cache --clear    # remove every entry (they are rebuilt when needed)

The cache holds layer graphs measured on the meta device and accelerate's
placements (core.system.disk_cache), in $ALLOT_CACHE_DIR, else $XDG_CACHE_HOME/allot,
else ~/.cache/allot. Deleting it loses nothing but time.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("cache", help="show or clear the cache of measured layer graphs",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("--clear", action="store_true", help="remove every cache entry")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from core.system.disk_cache import cache_root, cache_summary, clear_cache
    from core.units import format_bytes

    if args.clear:
        files, size = clear_cache()
        print(f"removed {files} cache entries ({format_bytes(size)}) from {cache_root()}")
        return 0
    print(f"cache: {cache_root()}")
    for kind, (files, size) in cache_summary().items():
        print(f"  {kind:<11} {files:>5} entries  {format_bytes(size):>10}")
    return 0
