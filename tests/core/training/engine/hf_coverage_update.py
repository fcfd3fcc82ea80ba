"""Regenerate resources/hf_coverage.json and docs/models.md from the installed transformers.

    python3 -m tests.core.training.engine.hf_coverage_update            # every registry type
    python3 -m tests.core.training.engine.hf_coverage_update opt cpmant # re-check these, keep the rest

Each type of MODEL_FOR_CAUSAL_LM_MAPPING_NAMES gets the registry test's check
(hf_registry_support.check_type) in a forked process of its own, with a time limit:
a type that passes is supported; one that fails is refused with the one-line reason
the failure gives (the refusal the model itself raises, or why its tiny model could
not be proven to split exactly). Encoder types are refused by the config alone.
The registry test (test_hf_registry.py) then holds the file to the installed
transformers and docs/models.md to the file.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

LIMIT_S = 60.0  # a type whose tiny model takes longer to check (after the imports) is refused: the test stays lean
ROOT = Path(__file__).resolve().parents[4]


def refusal(model_type: str) -> str | None:
    """Why `model_type` is refused (None: its tiny model passes the check). Runs in a child process."""
    from core.errors import InputError
    from core.model import hf_source
    from core.model.hf import first_line
    from tests.core.training.engine.hf_registry_support import check_type, tiny_config

    hf_source.coverage = _nothing_refused  # type: ignore[assignment]  # the type is measured, not looked up
    unproven = f"'{model_type}' is not proven to split exactly"
    try:
        tiny_config(model_type)
    except Exception as error:
        return f"{unproven}: transformers rejects a tiny config of it ({first_line(error)})"
    with tempfile.TemporaryDirectory() as directory:
        try:
            check_type(model_type, Path(directory))
        except InputError as error:
            return str(error)
        except AssertionError as error:
            return (f"'{model_type}' split into stages does not give the unsplit model's outputs "
                    f"(fp32, rel 1e-5): {first_line(error)}")
        except ImportError as error:
            return f"{unproven}: its tiny model needs a package Allot does not install ({first_line(error)})"
        except Exception as error:
            return f"{unproven}: its tiny model fails the check ({type(error).__name__}: {first_line(error)})"
    return None


def _nothing_refused() -> dict[str, Any]:
    return {"transformers": "", "supported": [], "refused": {}}


def _child(model_type: str, pipe: Any) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    pipe.send(refusal(model_type))


def measured(model_type: str, limit_s: float = LIMIT_S) -> str | None:
    """refusal() in a forked process, refused when it takes over `limit_s`."""
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(model_type, send))
    process.start()
    ready = receive.poll(limit_s)
    if not ready:
        process.kill()
        process.join()
        return (f"'{model_type}' is not proven to split exactly: its tiny model takes over {limit_s:.0f} s "
                "to check on two CPU cores")
    result: str | None = receive.recv()
    process.join()
    return result


def _import_once() -> None:
    """What every check imports, imported before the forks (no torch op runs in the
    parent: a fork after one can hang in torch's thread pool)."""
    import importlib

    for module in ("transformers.modeling_utils", "transformers.generation.utils", "core.model.graph",
                   "core.planning.front_door", "core.training.engine.hf_stages", "core.training.hf_export",
                   "tests.core.training.engine.hf_support"):
        importlib.import_module(module)


def main(argv: list[str]) -> int:
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    from tests.core.training.engine.hf_registry_support import coverage_markdown

    path = ROOT / "resources" / "hf_coverage.json"
    registry = sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    unknown = [name for name in argv if name not in registry]
    if unknown:
        print(f"not a causal-LM registry type: {', '.join(unknown)}", file=sys.stderr)
        return 2
    old = json.loads(path.read_text(encoding="utf-8"))
    if argv and old["transformers"] != transformers.__version__:
        print("the file is of another transformers: regenerate every type", file=sys.stderr)
        return 2
    reasons: dict[str, str | None] = {name: old["refused"].get(name) for name in registry}
    _import_once()
    for name in argv or registry:
        start = time.perf_counter()
        reasons[name] = measured(name)
        print(f"{name:28s} {time.perf_counter() - start:5.1f} s  {reasons[name] or 'supported'}", flush=True)
        coverage = {"transformers": transformers.__version__,
                    "supported": sorted(name for name, reason in reasons.items() if reason is None),
                    "refused": {name: reason for name, reason in sorted(reasons.items()) if reason is not None}}
        path.write_text(json.dumps(coverage, indent=1) + "\n", encoding="utf-8")  # after each type: a stop keeps them
        (ROOT / "docs" / "models.md").write_text(coverage_markdown(coverage), encoding="utf-8")
    print(f"{len(coverage['supported'])} of {len(registry)} types supported")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
