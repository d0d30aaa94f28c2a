"""The methods @dataclass writes, compiled once and kept between runs (fleetrun/methodcache.py, issue 13)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import types

import pytest

from fleetrun import methodcache

CLASS = '''
from dataclasses import dataclass, field

@dataclass(frozen=True)
class Point:
    """A frozen class with defaults, as most of fleetrun's are."""
    x: int
    y: int = 2
    tags: tuple[str, ...] = ()
    seen: list[int] = field(default_factory=list, compare=False)

@dataclass
class Counter:
    name: str
    count: int = 0
'''


@pytest.fixture(autouse=True)
def writes_bytecode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # as Python runs by default: the cache is written


def _define(monkeypatch: pytest.MonkeyPatch, cache: methodcache._Cache | None, name: str) -> types.ModuleType:
    """Run CLASS as module `name`, its dataclasses compiled through `cache` (None: as Python does)."""
    module = types.ModuleType(name)
    monkeypatch.setitem(sys.modules, name, module)
    with monkeypatch.context() as patch:
        if cache is None:
            patch.delattr(dataclasses, "exec", raising=False)
        else:
            patch.setattr(dataclasses, "exec", cache.exec)
        exec(compile(CLASS, f"<{name}>", "exec"), module.__dict__)
    return module


def _behaviour(module: types.ModuleType) -> list[object]:
    point = module.Point(1, tags=("a",))
    counter = module.Counter("c")
    counter.count += 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        point.x = 5
    return [repr(point), point == module.Point(1, 2, ("a",), [9]), hash(point) == hash(module.Point(1, tags=("a",))),
            repr(dataclasses.replace(point, y=7)), [f.name for f in dataclasses.fields(point)],
            dataclasses.asdict(point), repr(counter), counter == module.Counter("c", 1), module.Point.__doc__]


def test_classes_built_from_the_cache_behave_exactly_as_classes_compiled_afresh(tmp_path, monkeypatch):
    path = tmp_path / "methods.bin"
    first = methodcache._Cache(str(path))
    learnt = _define(monkeypatch, first, "fleetrun._probe_first")
    assert first.learnt and len(first.codes) >= 8  # __init__, __repr__, __eq__ twice; frozen's three
    first.save()
    again = methodcache._Cache(str(path))
    cached = _define(monkeypatch, again, "fleetrun._probe_again")
    assert not again.learnt and again.used == set(again.codes)  # every method came from the file
    plain = _define(monkeypatch, None, "fleetrun._probe_plain")
    assert _behaviour(cached) == _behaviour(learnt) == _behaviour(plain)


def test_other_modules_classes_are_compiled_as_usual(tmp_path, monkeypatch):
    cache = methodcache._Cache(str(tmp_path / "methods.bin"))
    _define(monkeypatch, cache, "notfleetrun")
    assert cache.codes == {} and not cache.learnt


@pytest.mark.parametrize("content", [b"", b"garbage", b"\x00\x00\r\n" + b"fleetrun dataclass methods 1\n{"])
def test_a_missing_damaged_or_foreign_file_is_ignored_and_replaced(tmp_path, monkeypatch, content):
    path = tmp_path / "methods.bin"
    path.write_bytes(content)
    cache = methodcache._Cache(str(path))
    assert cache.codes == {}
    module = _define(monkeypatch, cache, "fleetrun._probe_damaged")
    assert module.Point(1).y == 2
    cache.save()
    assert len(methodcache._Cache(str(path)).codes) == len(cache.codes) > 0


def test_nothing_is_written_where_python_would_write_no_bytecode(tmp_path, monkeypatch):
    path = tmp_path / "methods.bin"
    cache = methodcache._Cache(str(path))
    _define(monkeypatch, cache, "fleetrun._probe_nowrite")
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    cache.save()
    assert not path.exists()
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    cache.owner = os.getpid() + 1  # as in a forked worker process: only the process that loaded it writes
    cache.save()
    assert not path.exists()
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")  # a directory that can't be made, even by root (unlike a read-only one)
    blocked = methodcache._Cache(str(not_a_directory / "__pycache__" / "methods.bin"))
    _define(monkeypatch, blocked, "fleetrun._probe_blocked")
    blocked.save()  # no error, as with Python's own bytecode: the next run compiles again
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_a_warm_cache_leaves_a_fresh_interpreter_nothing_to_compile():
    """The first run learns every method of the modules `fleetrun exec` imports; the next compiles none."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    code = ("import dataclasses, fleetrun.cli, fleetrun.exec_task, fleetrun.ssh.lean_session; "
            "cache = dataclasses.exec.__self__; print(len(cache.used), cache.learnt)")

    def run() -> list[str]:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
        return done.stdout.split()

    run()
    used, learnt = run()
    assert int(used) > 100 and learnt == "False"
