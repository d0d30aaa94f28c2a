"""The README's shell session, run for real: every `console` block's `$ ` lines against a fresh lab.

    .venv/bin/python tests/readme_session.py            # run it; show how the README differs (exit 1 if it does)
    .venv/bin/python tests/readme_session.py --update   # run it; write what the commands printed into README.md

The commands run one after the other in one bash, in a fresh directory with a fresh HOME, with this
checkout's `fleetrun` first on PATH and stderr merged into stdout, as a terminal shows them. The comparison
is strict except for what must vary from run to run (see `normalise`). tests/integration/test_readme.py runs
the comparison in the suite; after a change to an output format, run --update and read the diff.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PROMPT = "$ "
MARKER = "\x1efleetrun-readme-step"  # printed after each command, with its exit status
STEP_TIMEOUT = 60  # seconds for any one command (the slowest, `sleep 60 --timeout 2`, takes ~3)


@dataclass(frozen=True)
class Step:
    command: str
    output: tuple[str, ...]


@dataclass(frozen=True)
class Block:
    start: int  # index of the line after ```console
    end: int  # index of the closing ```
    steps: tuple[Step, ...]


def blocks(text: str) -> list[Block]:
    """The README's ```console blocks, each split into commands and the output shown under each."""
    lines = text.split("\n")
    found: list[Block] = []
    index = 0
    while index < len(lines):
        if lines[index].strip() != "```console":
            index += 1
            continue
        start = end = index + 1
        while lines[end].strip() != "```":
            end += 1
        steps: list[Step] = []
        for line in lines[start:end]:
            if line.startswith(PROMPT):
                steps.append(Step(line[len(PROMPT):], ()))
            elif steps:
                steps[-1] = Step(steps[-1].command, (*steps[-1].output, line))
            else:
                raise ValueError(f"README.md:{start + 1}: a console block must start with a '$ ' command line")
        found.append(Block(start, end, tuple(steps)))
        index = end + 1
    return found


def run(commands: list[str], workdir: Path, home: Path) -> list[tuple[str, ...]]:
    """What each command printed, run in order in one bash (so `$?`, `cd` and `export` carry over)."""
    script = ["set +e"]
    for command in commands:
        # Restore the previous command's status first: the marker's printf would otherwise be `$?`.
        script += ['(exit "${__status:-0}")', command, "__status=$?",
                   f"printf '\\n{MARKER} %d\\n' \"$__status\""]
    env = {key: value for key, value in os.environ.items()
           if key not in {"SSH_AUTH_SOCK", "FLEETRUN_INVENTORY", "NO_COLOR", "COLUMNS"}}
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "fleetrun").exists():
        raise RuntimeError(f"no fleetrun next to {sys.executable}: run this with the checkout's .venv/bin/python")
    env.update(HOME=str(home), PYTHONUNBUFFERED="1",  # output in the order a terminal would show it
               PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}")
    done = subprocess.run(["bash", "--norc", "--noprofile", "-c", "\n".join(script)], cwd=workdir, env=env,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=STEP_TIMEOUT * len(commands), check=False)
    outputs: list[tuple[str, ...]] = []
    for chunk in done.stdout.split(f"\n{MARKER} ")[:-1]:
        text = chunk.split("\n", 1)[1] if outputs else chunk  # drop the previous marker's status line
        text = text.removesuffix("\n")  # the marker starts on a line of its own
        outputs.append(tuple(text.split("\n")) if text else ())
    if len(outputs) != len(commands):
        raise RuntimeError(f"the session stopped after {len(outputs)} of {len(commands)} commands:\n{done.stdout}")
    return outputs


_RULES = [
    # `uptime` says the time of day, how long the machine is up, the users and the load.
    (re.compile(r"\b\d\d:\d\d:\d\d up .*?load average: \d+\.\d+, \d+\.\d+, \d+\.\d+"), "<uptime>"),
    (re.compile(r"\b\d+\.\d s\b"), "#.# s"),  # the run's elapsed time in the summary line
    (re.compile(r"\b\d+\.\ds\b"), "#.#s"),  # each host's time
    (re.compile(r"\b127(\.\d{1,3}){3}\b"), "127.x.x.x"),  # the lab picks free loopback addresses
    # Column widths follow the widest cell, which holds a time or an uptime: compare cells, not padding.
    (re.compile(r" {2,}"), "  "),
    (re.compile(r"-{2,}"), "--"),
]


def normalise(lines: tuple[str, ...], workdir: Path | None = None) -> list[str]:
    """The lines with what must vary replaced by placeholders; everything else compares exactly."""
    text = "\n".join(lines)
    if workdir is not None:
        text = text.replace(str(workdir), "<session dir>")
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return [line.rstrip() for line in text.split("\n")]


def session(readme: str) -> tuple[list[Block], list[list[tuple[str, ...]]], Path]:
    """Run every console block, each in a fresh directory (removed afterwards, its lab stopped);
    (blocks, outputs per block, the directory they ran in)."""
    found = blocks(readme)
    top = Path(tempfile.mkdtemp(prefix="fleetrun-readme-"))
    workdir, home = top / "session", top / "home"
    outputs = []
    try:
        for block in found:
            for directory in (workdir, home):  # each block starts afresh, in the same place
                shutil.rmtree(directory, ignore_errors=True)
                directory.mkdir(mode=0o700)
            try:
                outputs.append(run([step.command for step in block.steps], workdir, home))
            finally:
                stop_leftover_labs(workdir)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    return found, outputs, workdir


def stop_leftover_labs(directory: Path) -> None:
    """A session that failed half way may leave its lab running: stop every lab under `directory`."""
    from fleetrun.errors import LabError
    from fleetrun.lab import stop_lab

    for state in directory.rglob("lab.json"):
        with contextlib.suppress(LabError):
            stop_lab(state.parent)


def differences(readme: str) -> str:
    """A unified diff of the README's session against a real one, normalised; empty when they agree."""
    found, outputs, workdir = session(readme)
    diff: list[str] = []
    for block, actual in zip(found, outputs, strict=True):
        expected_lines, actual_lines = [], []
        for step, output in zip(block.steps, actual, strict=True):
            expected_lines += [PROMPT + step.command, *normalise(step.output)]
            actual_lines += [PROMPT + step.command, *normalise(output, workdir)]
        diff += difflib.unified_diff(expected_lines, actual_lines, f"README.md:{block.start + 1} (normalised)",
                                     "what the commands print (normalised)", lineterm="")
    return "\n".join(diff)


def update(readme: str) -> str:
    """The README with each console block replaced by what its commands print now."""
    found, outputs, workdir = session(readme)
    lines = readme.split("\n")
    for block, actual in reversed(list(zip(found, outputs, strict=True))):
        new: list[str] = []
        for step, output in zip(block.steps, actual, strict=True):
            text = "\n".join(output).replace(str(workdir), "~")
            new += [PROMPT + step.command, *(line.rstrip() for line in text.split("\n"))] if output \
                else [PROMPT + step.command]
        lines[block.start:block.end] = new
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--update", action="store_true", help="write what the commands print into README.md")
    args = parser.parse_args(argv)
    readme = README.read_text()
    if args.update:
        README.write_text(update(readme))
        print(f"updated {README}; review it with: git diff {README.name}")
        return 0
    diff = differences(readme)
    if diff:
        print(diff)
        print("\nthe README's session differs from what the commands print: "
              "run .venv/bin/python tests/readme_session.py --update and review the diff")
        return 1
    print("the README's session is what the commands print")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # so `fleetrun` imports from this checkout
    sys.exit(main())
