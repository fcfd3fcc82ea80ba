"""The one place that names devices that occur more than once (docs/design.md, devices).

A device keeps its plain name while it is the only one of its kind; the second
copy is NAME#2, the third NAME#3, and so on (the first free number). The app's
device list, the command line's device specs and the run all name devices here,
so one device has one name in the Plan tab, the Training tab, `plan`, `train`
and the run directory:

    unique_names(["A100-80GB", "A100-80GB", "cpu"])   -> ["A100-80GB", "A100-80GB#2", "cpu"]
    unique_name("A100-80GB", {"A100-80GB"})            -> "A100-80GB#2"
    unique_names(["A100-80GB#3", "A100-80GB"])         -> ["A100-80GB#3", "A100-80GB"]

A name that already carries a number (a spec the app wrote: "A100-80GB#3:80GiB")
keeps it, so the run names its devices exactly as the app did.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

SEPARATOR = "#"


def base_name(name: str) -> str:
    """What the device is, without its copy number: 'A100-80GB#2' -> 'A100-80GB'."""
    stem, separator, number = name.rpartition(SEPARATOR)
    return stem if separator and stem and number.isdigit() else name


def copy_number(name: str) -> int:
    """1 for a plain name, N for NAME#N."""
    base = base_name(name)
    return 1 if base == name else int(name[len(base) + 1:])


def numbered(base: str, number: int) -> str:
    """Copy `number` of `base`: 'A100-80GB' for 1, 'A100-80GB#2' for 2."""
    return base if number == 1 else f"{base}{SEPARATOR}{number}"


def unique_name(name: str, taken: Iterable[str]) -> str:
    """`name` if it is free, else its base with the first free copy number from 2 on."""
    used = set(taken)
    if name not in used:
        return name
    base, number = base_name(name), 2
    while numbered(base, number) in used:
        number += 1
    return numbered(base, number)


def unique_names(names: Sequence[str]) -> list[str]:
    """Each name made unique, in order; names given with a copy number keep it where they can."""
    numbered = [name for name in names if base_name(name) != name]
    reserved = {name for name in numbered if numbered.count(name) == 1}
    taken: set[str] = set()
    result = []
    for name in names:
        chosen = name if name in reserved and name not in taken else unique_name(name, taken | reserved)
        taken.add(chosen)
        result.append(chosen)
    return result
