"""The peers' suites: which distribution, how to lay out its tests from the sdist of
the installed version, and how pytest runs them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BUILD = REPO / "build" / "peers"


@dataclass(frozen=True)
class Suite:
    """A peer whose own test suite the gate runs."""

    name: str
    #: Arguments for its pytest (besides the gate's own).
    pytest_args: tuple[str, ...] = ()
    #: Files the sdist lacks: destination in the run folder -> file in ``support/``
    #: (``""``: an empty file).
    support: dict[str, str] = field(default_factory=dict)

    @property
    def version(self) -> str:
        """The installed version (the one whose sdist is tested)."""
        return version(self.name)


SUITES: dict[str, Suite] = {
    "starlette": Suite(
        "starlette",
        # Starlette's own CI has no pytest-asyncio; its anyio plugin drives the tests.
        pytest_args=("-p", "no:asyncio"),
    ),
    "sse-starlette": Suite(
        "sse-starlette",
        # It loads examples/02_broadcasting.py, which the sdist does not ship.
        pytest_args=("--ignore=tests/test_broadcasting_example.py",),
        support={
            "tests/__init__.py": "",
            "tests/conftest.py": "sse_conftest.py",
            "tests/anyio_compat.py": "sse_anyio_compat.py",
        },
    ),
}


def sdist(suite: Suite) -> Path:
    """The sdist of the installed version, downloaded with pip once into ``build/peers/sdist``."""
    folder = BUILD / "sdist"
    folder.mkdir(parents=True, exist_ok=True)
    stem = suite.name.replace("-", "_")
    found = sorted(folder.glob(f"{stem}-{suite.version}.tar.gz"))
    if not found:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-binary",
                ":all:",
                "--no-deps",
                "-d",
                str(folder),
                f"{suite.name}=={suite.version}",
            ],
            check=True,
        )
        found = sorted(folder.glob(f"{stem}-{suite.version}.tar.gz"))
    if not found:
        raise RuntimeError(f"pip download left no sdist of {suite.name}=={suite.version} in {folder}")
    return found[0]


def prepare(suite: Suite) -> Path:
    """A fresh folder with the sdist's ``tests/`` and ``pyproject.toml`` (its pytest
    configuration) plus the support files; never the package source, so the tests
    import the installed package."""
    archive = sdist(suite)
    run = BUILD / "run" / f"{suite.name}-{suite.version}"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        members = []
        for member in tar.getmembers():
            top, _, rest = member.name.partition("/")
            if rest == "pyproject.toml" or rest.startswith("tests/"):
                member.name = rest
                members.append(member)
        tar.extractall(run, members=members, filter="data")
    for dest, source in suite.support.items():
        target = run / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        if source:
            shutil.copyfile(HERE / "support" / source, target)
        else:
            target.touch()
    return run


def import_path() -> Path:
    """A folder for ``PYTHONPATH`` holding only this checkout's ``asgi_stream`` and the
    injecting plugin: the peers' suites have a ``tests`` package of their own, so this
    project's root (and its ``tests``) must not be importable there."""
    path = BUILD / "path"
    path.mkdir(parents=True, exist_ok=True)
    for name, target in (
        ("asgi_stream", REPO / "asgi_stream"),
        ("asgi_stream_inject.py", HERE / "asgi_stream_inject.py"),
    ):
        link = path / name
        if link.is_symlink() or link.exists():
            if link.is_symlink() and link.resolve() == target:
                continue
            link.unlink()
        link.symlink_to(target)
    return path
