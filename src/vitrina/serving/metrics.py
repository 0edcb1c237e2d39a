"""Prometheus text exposition (format 0.0.4) of request counts, latencies, fallbacks and swaps.

With ``vitrina serve --workers N`` each process counts its own traffic and writes a snapshot to the
run's shared folder (:mod:`vitrina.serving.fleet`); ``/metrics`` renders the sum of its live counts
and the other workers' latest snapshots (``peers``), so a scrape sees the whole service whichever
worker answers it.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

#: distinct ``event`` label values in vitrina_events_total (one more: ``other``)
MAX_EVENT_LABELS = 64
OTHER_EVENTS = "other"
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

#: plain-data counts of one process (JSON-able: what workers write for each other)
Snapshot = dict[str, Any]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**kv: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in kv.items()) + "}"


def _capped_events(counts: Counter[str], kind: str) -> str:
    """``kind``, or ``other`` once ``MAX_EVENT_LABELS`` distinct names are counted."""
    return kind if kind in counts or len(counts) < MAX_EVENT_LABELS else OTHER_EVENTS


class Metrics:
    """Thread-safe counters and one latency histogram per route; ``peers`` returns the snapshots of
    the other worker processes, added in when rendering."""

    def __init__(self, peers: Callable[[], Iterable[Snapshot]] | None = None) -> None:
        self._lock = threading.Lock()
        self._peers = peers
        self._requests: Counter[tuple[str, str, int]] = Counter()
        self._buckets: dict[str, list[int]] = {}
        self._sums: Counter[str] = Counter()
        self._counts: Counter[str] = Counter()
        self._fallbacks: Counter[str] = Counter()
        self._events: Counter[str] = Counter()
        self._swaps: Counter[str] = Counter()
        #: bumped by every update: a worker rewrites its snapshot only when this moved
        self.changes = 0

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[(method, route, status)] += 1
            buckets = self._buckets.setdefault(route, [0] * len(BUCKETS))
            for i, edge in enumerate(BUCKETS):
                if seconds <= edge:
                    buckets[i] += 1
            self._sums[route] += seconds
            self._counts[route] += 1
            self.changes += 1

    def fallback(self, reason: str) -> None:
        with self._lock:
            self._fallbacks[reason] += 1
            self.changes += 1

    def events(self, kind: str, n: int) -> None:
        """Count events by name; past ``MAX_EVENT_LABELS`` distinct names the rest count as
        ``other``, so clients choosing event names cannot grow the series without bound."""
        with self._lock:
            self._events[_capped_events(self._events, kind)] += n
            self.changes += 1

    def swap(self, outcome: str) -> None:
        with self._lock:
            self._swaps[outcome] += 1
            self.changes += 1

    def snapshot(self) -> Snapshot:
        """This process's counts as plain data (:func:`render` takes a list of them)."""
        with self._lock:
            return {
                "requests": [[m, r, s, n] for (m, r, s), n in self._requests.items()],
                "buckets": {r: list(b) for r, b in self._buckets.items()},
                "sums": dict(self._sums),
                "counts": dict(self._counts),
                "fallbacks": dict(self._fallbacks),
                "events": dict(self._events),
                "swaps": dict(self._swaps),
            }

    def render(self) -> str:
        """The exposition of this process plus its peers (the whole service)."""
        peers = list(self._peers()) if self._peers is not None else []
        return render([self.snapshot(), *peers])


def render(snapshots: Iterable[Snapshot]) -> str:
    """The exposition of the sum of ``snapshots`` (one per worker process)."""
    requests: Counter[tuple[str, str, int]] = Counter()
    buckets: dict[str, list[int]] = {}
    sums: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    fallbacks: Counter[str] = Counter()
    events: Counter[str] = Counter()
    swaps: Counter[str] = Counter()
    for snap in snapshots:
        for method, route, status, n in snap["requests"]:
            requests[(method, route, int(status))] += n
        for route, row in snap["buckets"].items():
            total = buckets.setdefault(route, [0] * len(BUCKETS))
            buckets[route] = [a + b for a, b in zip(total, row, strict=True)]
        sums.update(snap["sums"])
        counts.update(snap["counts"])
        fallbacks.update(snap["fallbacks"])
        swaps.update(snap["swaps"])
        for kind, n in snap["events"].items():  # each worker caps its names; so does the sum
            events[_capped_events(events, kind)] += n
    lines = [
        "# HELP vitrina_requests_total HTTP requests by route and status.",
        "# TYPE vitrina_requests_total counter",
    ]
    for (method, route, status), n in sorted(requests.items()):
        lines.append(f"vitrina_requests_total{_labels(method=method, route=route, status=str(status))} {n}")
    lines += ["# HELP vitrina_request_seconds Request latency.", "# TYPE vitrina_request_seconds histogram"]
    for route, row in sorted(buckets.items()):
        for edge, n in zip(BUCKETS, row, strict=True):
            lines.append(f"vitrina_request_seconds_bucket{_labels(route=route, le=str(edge))} {n}")
        lines.append(f"vitrina_request_seconds_bucket{_labels(route=route, le='+Inf')} {counts[route]}")
        lines.append(f"vitrina_request_seconds_sum{_labels(route=route)} {sums[route]:.6f}")
        lines.append(f"vitrina_request_seconds_count{_labels(route=route)} {counts[route]}")
    for name, help_, counter, label in (
        ("vitrina_fallbacks_total", "Recommendations served by a fallback, by reason.", fallbacks, "reason"),
        ("vitrina_events_total", "Events accepted, by event type.", events, "event"),
        ("vitrina_model_swaps_total", "Admin model swaps, by outcome.", swaps, "outcome"),
    ):
        lines += [f"# HELP {name} {help_}", f"# TYPE {name} counter"]
        lines += [f"{name}{_labels(**{label: k})} {n}" for k, n in sorted(counter.items())]
    return "\n".join(lines) + "\n"
