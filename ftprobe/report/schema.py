"""The JSON Schema of ``results.json`` (shipped in the package) and loading a results file for re-rendering."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from ftprobe.core.errors import FtprobeError
from ftprobe.core.results import READABLE_VERSIONS, SCHEMA_VERSION, Result

__all__ = ["SCHEMA_PATH", "ResultsFileError", "load_results", "results_schema", "validate_results"]

SCHEMA_PATH = Path(__file__).with_name("results.schema.json")
_OLD_SCHEMAS = {1: Path(__file__).with_name("results.schema.v1.json")}  # files written before intervals


class ResultsFileError(FtprobeError):
    """A results file cannot be read or does not follow the results schema."""


@lru_cache(maxsize=4)
def results_schema(version: int = SCHEMA_VERSION) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``results.json`` of a schema version (default: the one this ftprobe
    writes, :data:`SCHEMA_VERSION`; older versions it still reads have their own schema)."""
    schema = json.loads((SCHEMA_PATH if version == SCHEMA_VERSION else _OLD_SCHEMAS[version]).read_text())
    assert schema["properties"]["schema_version"]["const"] == version, "schema file and Result disagree"
    return schema


def validate_results(data: dict[str, Any], *, source: str = "results") -> None:
    """Check a results dict (``Result.to_dict()`` or a parsed ``results.json``) against the schema.

    Args:
        data: The parsed JSON object.
        source: How to name the file in the error message.

    Raises:
        ResultsFileError: The first schema violation, with where it is in the file.
        ImportError: jsonschema is not installed (``pip install jsonschema``).
    """
    import jsonschema

    version = data.get("schema_version") if isinstance(data, dict) else None
    if version not in READABLE_VERSIONS:
        readable = ", ".join(map(str, READABLE_VERSIONS))
        raise ResultsFileError(
            f"{source} has schema version {version!r}; this ftprobe reads versions {readable}. Re-run "
            "`ftprobe compare ... --out DIR` with this ftprobe, or render it with the ftprobe that wrote it."
        )
    validator = jsonschema.Draft202012Validator(results_schema(version))
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        raise ResultsFileError(
            f"{source} does not follow the results schema at {where}: {err.message}{more}. It was edited or "
            "written by another tool; write it again with `ftprobe compare ... --out DIR`."
        )


def load_results(path: str | Path, *, validate: bool = True) -> Result:
    """Read ``results.json`` into a :class:`~ftprobe.core.results.Result`, checking it against the schema.

    Args:
        path: The results file (or a folder that holds ``results.json``).
        validate: Check against the schema first (needs jsonschema; skipped when it is not installed).

    Raises:
        ResultsFileError: Missing or unreadable file, not JSON, wrong schema version or structure.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise ResultsFileError(f"no results file at {path}; give the results.json that `ftprobe compare` wrote")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsFileError(f"{path} is not a readable JSON results file ({exc}); give the results.json that "
                               "`ftprobe compare` wrote") from None
    if not isinstance(data, dict):
        raise ResultsFileError(f"{path} holds a JSON {type(data).__name__}, not a results object")
    if validate:
        try:
            validate_results(data, source=str(path))
        except ImportError:
            pass  # jsonschema is optional at run time; Result.from_dict still checks the version
    try:
        return Result.from_dict(data)
    except FtprobeError as exc:
        raise ResultsFileError(f"{path}: {exc}") from None
    except (TypeError, KeyError, ValueError) as exc:
        raise ResultsFileError(f"{path} does not look like an ftprobe results file ({exc!r})") from None
