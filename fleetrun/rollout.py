"""Rolling runs, pure logic: batch specs and sizes (Ansible's `serial` arithmetic), dispatch order, the failure
budget and the decision to stop. No threads and no I/O here; fleetrun/dispatch.py applies it to a run."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from fleetrun.errors import UsageError
from fleetrun.models import Host, Outcome, RolloutStop

# What counts against --max-fail and the implicit "whole batch failed" rule: every outcome of a host that was
# tried and did not end ok. Cancelled and not-started hosts were never given their chance, so they don't count.
FAILURES = frozenset({Outcome.FAILED, Outcome.TIMEOUT, Outcome.UNREACHABLE, Outcome.AUTH_FAILED, Outcome.HOST_KEY})

_AMOUNT = re.compile(r"(-?[0-9]+)(%?)\Z")
ORDERS = ("inventory", "sorted", "reverse", "reverse_inventory", "reverse_sorted", "shuffle")


@dataclass(frozen=True)
class Amount:
    """A host count, or a percentage of the selected hosts."""

    value: int
    percent: bool = False

    def of(self, total: int) -> int:
        """Exact integer floor: 20% of 12 is 2. (Ansible computes int(pct / 100.0 * n) in floating point,
        which gives 28 for 29% of 100; a person expects 29, and so does fleetrun.)"""
        return total * self.value // 100 if self.percent else self.value

    def __str__(self) -> str:
        return f"{self.value}%" if self.percent else str(self.value)


def _amount(text: str, option: str, *, minimum: int, hint: str) -> Amount:
    match = _AMOUNT.match(text.strip())
    if match is None:
        raise UsageError(f"{option} {text!r}: not a number of hosts or a percentage; {hint}")
    amount = Amount(int(match.group(1)), bool(match.group(2)))
    if amount.value < minimum:
        raise UsageError(f"{option} {text!r}: must be at least {minimum}{'%' if amount.percent else ''}; {hint}")
    return amount


def parse_batch(text: str) -> tuple[Amount, ...]:
    """'2' → (2,); '1,5,20%' → (1, 5, 20%): each batch's size in turn, the last one repeating."""
    hint = "give N hosts, N% of the selected hosts, or a list like 1,5,20% (the last size repeats)"
    parts = text.split(",")
    if not text.strip() or any(not part.strip() for part in parts):
        raise UsageError(f"--batch {text!r}: an empty size; {hint}")
    return tuple(_amount(part, "--batch", minimum=1, hint=hint) for part in parts)


def parse_canary(text: str) -> Amount:
    return _amount(text, "--canary", minimum=1, hint="give the number of hosts (or N%) to try first")


def parse_max_fail(text: str) -> Amount:
    hint = "give the failures to tolerate: N, or N% of the selected hosts (0 stops at the first failure)"
    return _amount(text, "--max-fail", minimum=0, hint=hint)


def batch_sizes(total: int, spec: Sequence[Amount] | None, canary: Amount | None = None) -> list[int]:
    """Sizes of the batches for `total` hosts, first to last; they add up to `total`.

    As Ansible's `serial`: a percentage is of all the selected hosts (floor, at least 1), the last size
    repeats, the last batch takes what is left. A canary is a first batch of its own; the spec then applies
    to the hosts after it (its percentages still of all the selected hosts). No spec: one batch of the rest.
    """
    sizes: list[int] = []
    left = total
    if canary is not None and left:
        first = min(max(canary.of(total), 1), left)
        sizes.append(first)
        left -= first
    position = 0
    while left > 0:
        if not spec:
            size = left
        else:
            size = max(spec[min(position, len(spec) - 1)].of(total), 1)
            position += 1
        sizes.append(min(size, left))
        left -= sizes[-1]
    return sizes


@dataclass(frozen=True)
class Order:
    """The order hosts are dispatched in (the table still lists them in inventory order)."""

    kind: str = "inventory"
    seed: str | None = None  # shuffle:SEED repeats the same order; plain shuffle differs every run

    def __str__(self) -> str:
        return f"{self.kind}:{self.seed}" if self.seed is not None else self.kind


def parse_order(text: str) -> Order:
    kind, colon, seed = text.strip().partition(":")
    if kind not in ORDERS or (colon and kind != "shuffle") or (colon and not seed):
        raise UsageError(f"--order {text!r}: use inventory, sorted, reverse, reverse_sorted, shuffle or "
                         "shuffle:SEED")
    return Order(kind, seed if colon else None)


def order_hosts(hosts: Sequence[Host], order: Order) -> list[Host]:
    """`hosts` (in inventory order) in dispatch order. As Ansible's `order`: sorted is by name, reverse is
    the inventory reversed (Ansible's reverse_inventory), reverse_sorted is by name descending."""
    if order.kind == "sorted":
        return sorted(hosts, key=lambda host: host.name)
    if order.kind == "reverse_sorted":
        return sorted(hosts, key=lambda host: host.name, reverse=True)
    if order.kind in ("reverse", "reverse_inventory"):
        return list(reversed(hosts))
    if order.kind == "shuffle":
        # A str seed is hashed with SHA-512 by random.Random: the same order in every process and release.
        shuffled = list(hosts)
        random.Random(order.seed).shuffle(shuffled)
        return shuffled
    return list(hosts)


@dataclass(frozen=True)
class Rollout:
    """How a run rolls out: the command-line settings, before they meet the selected hosts."""

    batch: tuple[Amount, ...] | None = None
    canary: Amount | None = None
    max_fail: Amount | None = None
    continue_on_batch_failure: bool = False
    abort_running: bool = False
    pause: float = 0.0
    confirm: bool = False
    order: Order = Order()


@dataclass(frozen=True)
class Plan:
    """A rollout applied to the selected hosts: the batches in dispatch order and the budget."""

    batches: tuple[tuple[Host, ...], ...]
    total: int
    canary: bool = False  # the first batch is a canary: any failure in it stops the rollout
    allowed: int | None = None  # failures tolerated over the whole run; None: no budget
    budget_text: str = ""  # "--max-fail 2 (20% of 12)", for the stop message
    continue_on_batch_failure: bool = False
    abort_running: bool = False
    pause: float = 0.0
    confirm: bool = False


def make_plan(hosts: Sequence[Host], rollout: Rollout | None = None) -> Plan:
    """Batches of `hosts` (given in inventory order) and the run's failure budget."""
    rollout = rollout or Rollout()
    ordered = order_hosts(hosts, rollout.order)
    sizes = batch_sizes(len(ordered), rollout.batch, rollout.canary)
    batches: list[tuple[Host, ...]] = []
    start = 0
    for size in sizes:
        batches.append(tuple(ordered[start:start + size]))
        start += size
    allowed, text = None, ""
    if rollout.max_fail is not None:
        allowed = rollout.max_fail.of(len(ordered))
        text = f"--max-fail {allowed}"
        if rollout.max_fail.percent:
            text += f" ({rollout.max_fail} of {len(ordered)})"
    return Plan(tuple(batches), len(ordered), canary=rollout.canary is not None and len(batches) > 1,
                allowed=allowed, budget_text=text, continue_on_batch_failure=rollout.continue_on_batch_failure,
                abort_running=rollout.abort_running, pause=rollout.pause, confirm=rollout.confirm)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def decide(plan: Plan, batch: int, failures: int, batch_failures: int, batch_done: int) -> RolloutStop | None:
    """Whether the results so far stop the rollout, judged after a result of `batch` (0-based).

    `failures` is the run's total so far, `batch_failures` and `batch_done` this batch's. The caller stops
    only if something is left to stop (hosts not yet started, or running ones with --abort-running).
    """
    number = batch + 1
    if plan.canary and batch == 0 and batch_failures:
        size = len(plan.batches[0])
        return RolloutStop("canary", number, f"rollout stopped after batch 1 (the canary): "
                           f"{_plural(batch_failures, 'failure')}; --canary {size} must fully succeed")
    if plan.allowed is not None and failures > plan.allowed:
        return RolloutStop("max-fail", number, f"rollout stopped after batch {number}: "
                           f"{_plural(failures, 'failure')} > {plan.budget_text}")
    size = len(plan.batches[batch])
    if plan.allowed is None and not plan.continue_on_batch_failure and batch_done == size == batch_failures:
        return RolloutStop("batch-failed", number, f"rollout stopped after batch {number}: all "
                           f"{_plural(size, 'host')} of the batch failed (--continue-on-batch-failure goes on)")
    return None


def operator_stop(after_batch: int) -> RolloutStop:
    """The stop when the operator answers no to --confirm before batch `after_batch` + 1 (1-based)."""
    return RolloutStop("operator", after_batch, f"rollout stopped by the operator after batch {after_batch}")


# What a not-started host's `reason` says when the rollout, not a signal or the deadline, held it back.
STOP_REASONS = {"operator": "stopped by the operator"}


def not_started_reason(stop: RolloutStop) -> str:
    return STOP_REASONS.get(stop.reason, "rollout stopped")
