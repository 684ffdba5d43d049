"""Builds the compiled kernels of `hashing` and `estimator` (`_compiled.c`) in place, with the C
compiler Python was built with (no fused multiply-adds: the kernels round as numpy does).
Standard library only, so an image's build stage can run it without the backend's dependencies:

    python -m backend.native

`bin/setup` and the Dockerfile run it. Without a compiler nothing is built and numpy computes the
same features and scores: a 1,000-task /predict takes about twice the CPU (48 against 21 ms).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("_compiled.c")


def target() -> Path:
    """Where Python imports `backend._compiled` from for this interpreter."""
    return SOURCE.with_name("_compiled" + sysconfig.get_config_var("EXT_SUFFIX"))


def command(output: Path) -> list[str]:
    compiler = shlex.split(sysconfig.get_config_var("CC") or "cc")
    return [
        *compiler,
        "-O2",
        "-shared",
        "-fPIC",
        "-fno-strict-aliasing",
        "-ffp-contract=off",
        f"-I{sysconfig.get_paths()['include']}",
        str(SOURCE),
        "-o",
        str(output),
        "-lm",
    ]


def build(force: bool = False) -> Path:
    """Compile `_compiled.c` unless the module is newer than its source; written to a temporary
    file and renamed, so a process importing it meanwhile sees the old module or the new one.
    Raises `subprocess.CalledProcessError` or `OSError` when there is no working compiler."""
    output = target()
    if not force and output.exists() and output.stat().st_mtime >= SOURCE.stat().st_mtime:
        return output
    handle, partial = tempfile.mkstemp(prefix=".build-", suffix=output.suffix, dir=output.parent)
    os.close(handle)
    try:
        subprocess.run(command(Path(partial)), check=True)
        os.replace(partial, output)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return output


def main() -> int:
    try:
        print(f"built {build(force='--force' in sys.argv)}")
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"compiled hashing not built ({exc}): features are computed with numpy", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
