"""Segment discovery: cluster customers, then describe each cluster as a draft rule.

1. Features per customer, each one a rule can test exactly: lifetime orders, revenue and
   events; days since first seen, last seen and last conversion (none: 100,000 days); with a
   published model, P(alive) and orders expected within 90 days.
2. ``log1p`` of the non-negative features, standardized; k-means (k-means++, 10 starts) for
   every ``k`` in 4..8, keeping the best mean silhouette (or the ``k`` asked for).
3. Each cluster against the rest: a decision tree of depth 3 on the raw features; the leaves
   that predict the cluster become ``any`` of ``all`` of thresholds, written as conditions
   (``lifetime``, ``recency``, ``predicted``). Precision and recall of that rule against the
   cluster are computed on the same customers, with the thresholds as written.

Deterministic for a seed: the same stored customers give the same drafts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streams.models.predictor import History, Predictor
from streams.state.customer import CustomerState

DAY = 86400.0
NO_ORDER_DAYS = 100_000.0
MIN_CUSTOMERS = 40
K_RANGE = range(4, 9)


@dataclass(frozen=True)
class Feature:
    """One column: how to read it from a state, and the condition ``<= t`` / ``> t`` makes."""

    name: str
    read: Callable[[CustomerState, float], float]
    condition: Callable[[bool, float], dict[str, Any]]
    """``(at_most, threshold)`` -> a rule condition."""
    logged: bool = True


def _lifetime(metric: str) -> Callable[[bool, float], dict[str, Any]]:
    def make(at_most: bool, threshold: float) -> dict[str, Any]:
        return {
            "type": "lifetime",
            "metric": metric,
            "op": "le" if at_most else "gt",
            "value": threshold,
        }

    return make


def _days(since: float | None, now: float) -> float:
    return NO_ORDER_DAYS if since is None else max(0.0, (now - since) / DAY)


def features(conversion: str, predictor: Predictor | None) -> list[Feature]:
    """The columns, in order."""

    def recency(at_most: bool, threshold: float) -> dict[str, Any]:
        days = f"{max(threshold, 0.001):g}d"
        return {
            "type": "recency",
            "event": conversion,
            **({"within": days} if at_most else {"not_within": days}),
        }

    def last_order(state: CustomerState, now: float) -> float:
        named = state.named.get(conversion)
        return _days(named[2] if named else None, now)

    found = [
        Feature("orders", lambda s, now: float(s.orders), _lifetime("orders")),
        Feature("revenue", lambda s, now: max(0.0, s.revenue), _lifetime("revenue")),
        Feature("events", lambda s, now: float(s.events), _lifetime("events")),
        Feature(
            "days_since_first_seen",
            lambda s, now: _days(s.first_seen, now),
            _lifetime("days_since_first_seen"),
        ),
        Feature(
            "days_since_last_seen",
            lambda s, now: _days(s.last_seen, now),
            _lifetime("days_since_last_seen"),
        ),
        Feature("days_since_last_order", last_order, recency),
    ]
    if predictor is not None:

        def predicted(metric: str, within: str | None) -> Callable[[bool, float], dict[str, Any]]:
            def make(at_most: bool, threshold: float) -> dict[str, Any]:
                extra = {"within": within} if within else {}
                return {
                    "type": "predicted",
                    "metric": metric,
                    **extra,
                    "op": "le" if at_most else "gt",
                    "value": threshold,
                }

            return make

        def value(metric: str, horizon: float | None) -> Callable[[CustomerState, float], float]:
            def read(state: CustomerState, now: float) -> float:
                h = History.of(state, conversion)
                if h is None:
                    return 0.0
                found = predictor.value(metric, horizon, h, now)
                return 0.0 if found is None or math.isnan(found) else found

            return read

        found.append(Feature("p_alive", value("p_alive", None), predicted("p_alive", None), False))
        found.append(
            Feature(
                "expected_orders_90d",
                value("expected_orders", 90 * DAY),
                predicted("expected_orders", "90d"),
            )
        )
    return found


@dataclass
class Cluster:
    """One discovered cluster and its draft rule."""

    index: int
    size: int
    means: dict[str, float]
    condition: dict[str, Any] | None
    selected: int
    precision: float
    recall: float


@dataclass
class Discovery:
    """The clustering and its drafts."""

    k: int
    silhouette: float
    scores: dict[int, float]
    customers: list[str]
    labels: list[int]
    clusters: list[Cluster]
    feature_names: list[str]


def matrix(states: Sequence[CustomerState], columns: Sequence[Feature], now: float) -> np.ndarray:
    """The raw feature matrix (customers x features)."""
    return np.array([[f.read(s, now) for f in columns] for s in states], dtype=float)


def standardized(raw: np.ndarray, columns: Sequence[Feature]) -> np.ndarray:
    """``log1p`` where marked, then zero mean and unit variance per column."""
    data = raw.copy()
    for i, f in enumerate(columns):
        if f.logged:
            data[:, i] = np.log1p(np.maximum(data[:, i], 0.0))
    spread = data.std(axis=0)
    spread[spread == 0] = 1.0
    scaled: np.ndarray = (data - data.mean(axis=0)) / spread
    return scaled


def _round(threshold: float) -> float:
    """A threshold as a rule would write it (3 significant decimals)."""
    return float(f"{threshold:.4g}")


Path = list[tuple[int, bool, float]]
"""A root-to-leaf path of a tree: (feature, at most?, threshold) per split."""


def _paths(tree: Any) -> list[Path]:
    """The root-to-leaf paths whose leaf predicts the cluster."""
    t = tree.tree_
    paths: list[Path] = []

    def walk(node: int, path: Path) -> None:
        if t.children_left[node] == t.children_right[node]:
            counts = t.value[node][0]
            if counts[1] > counts[0]:
                paths.append(path)
            return
        feature, threshold = int(t.feature[node]), _round(float(t.threshold[node]))
        walk(t.children_left[node], [*path, (feature, True, threshold)])
        walk(t.children_right[node], [*path, (feature, False, threshold)])

    walk(0, [])
    return paths


def _select(raw: np.ndarray, paths: list[Path]) -> np.ndarray:
    chosen = np.zeros(len(raw), dtype=bool)
    for path in paths:
        ok = np.ones(len(raw), dtype=bool)
        for feature, at_most, threshold in path:
            column = raw[:, feature]
            ok &= column <= threshold if at_most else column > threshold
        chosen |= ok
    return chosen


def _condition(
    paths: list[list[tuple[int, bool, float]]], columns: Sequence[Feature]
) -> dict[str, Any] | None:
    alls = []
    for path in paths:
        parts = [columns[f].condition(at_most, t) for f, at_most, t in path]
        if not parts:
            return None
        alls.append(parts[0] if len(parts) == 1 else {"type": "all", "of": parts})
    if not alls:
        return None
    return alls[0] if len(alls) == 1 else {"type": "any", "of": alls}


def discover(
    states: Sequence[CustomerState],
    columns: Sequence[Feature],
    now: float,
    k: int | None,
    seed: int,
) -> Discovery:
    """Cluster ``states`` and draft a rule per cluster (``ValueError`` with too few)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score
    from sklearn.tree import DecisionTreeClassifier

    if len(states) < MIN_CUSTOMERS:
        raise ValueError(f"discovery needs at least {MIN_CUSTOMERS} customers; found {len(states)}")
    raw = matrix(states, columns, now)
    data = standardized(raw, columns)
    sample = min(5000, len(data))
    scores: dict[int, float] = {}
    fits: dict[int, Any] = {}
    for candidate in [k] if k is not None else list(K_RANGE):
        if candidate >= len(data):
            continue
        fit = KMeans(n_clusters=candidate, n_init=10, random_state=seed).fit(data)
        fits[candidate] = fit
        scores[candidate] = float(
            silhouette_score(data, fit.labels_, sample_size=sample, random_state=seed)
        )
    if not fits:
        raise ValueError("too few customers for that many clusters")
    best = max(scores, key=lambda c: (scores[c], -c))
    labels = fits[best].labels_
    clusters = []
    for index in range(best):
        inside = labels == index
        tree = DecisionTreeClassifier(max_depth=3, random_state=seed).fit(raw, inside)
        paths = _paths(tree)
        chosen = _select(raw, paths)
        hits = int(np.sum(chosen & inside))
        clusters.append(
            Cluster(
                index=index,
                size=int(np.sum(inside)),
                means={f.name: float(raw[inside, i].mean()) for i, f in enumerate(columns)},
                condition=_condition(paths, columns),
                selected=int(np.sum(chosen)),
                precision=hits / int(np.sum(chosen)) if np.sum(chosen) else 0.0,
                recall=hits / int(np.sum(inside)) if np.sum(inside) else 0.0,
            )
        )
    return Discovery(
        best,
        scores[best],
        scores,
        [s.customer_id for s in states],
        [int(x) for x in labels],
        clusters,
        [f.name for f in columns],
    )
