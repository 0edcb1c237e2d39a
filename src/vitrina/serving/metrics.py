"""Prometheus text exposition (format 0.0.4) of request counts, latencies, fallbacks and swaps."""

from __future__ import annotations

import threading
from collections import Counter

#: distinct ``event`` label values in vitrina_events_total (one more: ``other``)
MAX_EVENT_LABELS = 64
OTHER_EVENTS = "other"
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**kv: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in kv.items()) + "}"


class Metrics:
    """Thread-safe counters and one latency histogram per route."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, str, int]] = Counter()
        self._buckets: dict[str, list[int]] = {}
        self._sums: Counter[str] = Counter()
        self._counts: Counter[str] = Counter()
        self._fallbacks: Counter[str] = Counter()
        self._events: Counter[str] = Counter()
        self._swaps: Counter[str] = Counter()

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[(method, route, status)] += 1
            buckets = self._buckets.setdefault(route, [0] * len(BUCKETS))
            for i, edge in enumerate(BUCKETS):
                if seconds <= edge:
                    buckets[i] += 1
            self._sums[route] += seconds
            self._counts[route] += 1

    def fallback(self, reason: str) -> None:
        with self._lock:
            self._fallbacks[reason] += 1

    def events(self, kind: str, n: int) -> None:
        """Count events by name; past ``MAX_EVENT_LABELS`` distinct names the rest count as
        ``other``, so clients choosing event names cannot grow the series without bound."""
        with self._lock:
            if kind not in self._events and len(self._events) >= MAX_EVENT_LABELS:
                kind = OTHER_EVENTS
            self._events[kind] += n

    def swap(self, outcome: str) -> None:
        with self._lock:
            self._swaps[outcome] += 1

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            lines += [
                "# HELP vitrina_requests_total HTTP requests by route and status.",
                "# TYPE vitrina_requests_total counter",
            ]
            for (method, route, status), n in sorted(self._requests.items()):
                lines.append(
                    f"vitrina_requests_total{_labels(method=method, route=route, status=str(status))} {n}"
                )
            lines += [
                "# HELP vitrina_request_seconds Request latency.",
                "# TYPE vitrina_request_seconds histogram",
            ]
            for route, buckets in sorted(self._buckets.items()):
                for edge, n in zip(BUCKETS, buckets, strict=True):
                    lines.append(f"vitrina_request_seconds_bucket{_labels(route=route, le=str(edge))} {n}")
                lines.append(
                    f"vitrina_request_seconds_bucket{_labels(route=route, le='+Inf')} {self._counts[route]}"
                )
                lines.append(f"vitrina_request_seconds_sum{_labels(route=route)} {self._sums[route]:.6f}")
                lines.append(f"vitrina_request_seconds_count{_labels(route=route)} {self._counts[route]}")
            for name, help_, counter, label in (
                (
                    "vitrina_fallbacks_total",
                    "Recommendations served by a fallback, by reason.",
                    self._fallbacks,
                    "reason",
                ),
                ("vitrina_events_total", "Events accepted, by event type.", self._events, "event"),
                ("vitrina_model_swaps_total", "Admin model swaps, by outcome.", self._swaps, "outcome"),
            ):
                lines += [f"# HELP {name} {help_}", f"# TYPE {name} counter"]
                lines += [f"{name}{_labels(**{label: k})} {n}" for k, n in sorted(counter.items())]
        return "\n".join(lines) + "\n"
