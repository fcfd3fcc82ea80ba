"""`main.py cache`: where Allot's cache is and what it holds; `--clear` empties it.

    python3 main.py cache            # the folder, and entries per kind
    python3 main.py cache --clear    # remove every entry (they are rebuilt when needed)
    python3 main.py cache --warm     # measure the shipped models now (install.py runs it)

The cache holds layer graphs measured on the meta device, accelerate's
placements and the module trees it places (core.system.disk_cache), in
$ALLOT_CACHE_DIR, else $XDG_CACHE_HOME/allot, else ~/.cache/allot. Deleting it
loses nothing but time. Warming it (core.model.warm_cache) lets the first plan
of a shipped model answer without importing torch or transformers.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("cache", help="show or clear the cache of measured layer graphs",
                                   description=__doc__.split("\n\n")[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--clear", action="store_true", help="remove every cache entry")
    action.add_argument("--warm", action="store_true",
                        help="measure every shipped model's layer graphs now, so that its first plan is fast")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from core.system.disk_cache import cache_root, cache_summary, clear_cache
    from core.units import format_bytes

    if args.warm:
        import time

        from core.planning.front_door import warm_shipped_models

        started = time.perf_counter()
        count = warm_shipped_models(lambda line: print(f"  measured {line}", flush=True))
        print(f"warmed {count} shipped models in {time.perf_counter() - started:.0f} s: {cache_root()}")
        return 0
    if args.clear:
        files, size = clear_cache()
        print(f"removed {files} cache entries ({format_bytes(size)}) from {cache_root()}")
        return 0
    print(f"cache: {cache_root()}")
    for kind, (files, size) in cache_summary().items():
        print(f"  {kind:<11} {files:>5} entries  {format_bytes(size):>10}")
    return 0
