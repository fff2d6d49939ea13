"""The one reader of ``.env`` files (:func:`read_dotenv`), for the tools outside the pipeline.

``.env`` holds the machine-specific settings (``.env.example`` documents them). The download
(:mod:`tavse.download`) and the DVC cluster setup (:mod:`tavse.cluster_setup`) read it with
:func:`read_dotenv`; the SLURM scripts ``source`` it, so a valid file is one bash reads the same
way: ``KEY=VALUE`` lines, an unquoted value ending at a `` #`` comment.

Not in :mod:`tavse.common`: every stage lists that package in ``dvc.yaml``, and none reads ``.env``.
"""

from __future__ import annotations

from pathlib import Path


class DotenvError(ValueError):
    """A line of a ``.env`` file is not ``KEY=VALUE``; the message names the file and line, never its text."""


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse the ``KEY=VALUE`` lines of a ``.env`` file; a missing file reads as empty.

    Blank lines, ``#`` comments and an ``export`` prefix are allowed. A value wrapped in single or
    double quotes is what stands between them (nothing expanded); an unquoted one ends at a `` #``
    comment. Any other line, or a key that is not a name, raises :class:`DotenvError` naming the
    file and the line number (not the line: it may hold a secret). A key given twice keeps its last value.
    """
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key.isidentifier():
            raise DotenvError(f"{path}:{number}: expected KEY=VALUE")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].strip()
        values[key] = value
    return values
