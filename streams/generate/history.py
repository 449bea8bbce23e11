"""A shop's past: seeded, shop-shaped event-time histories (the project's one history generator).

:class:`HistorySpec` says what to draw; :func:`history_events` returns the events in time order
and :func:`write_history` streams them to a JSON-lines file with bounded memory (``segmenter
generate --history``). The same spec always gives the same events, byte for byte.

What a history looks like (the defaults draw about 90 events per customer over two years):

* **customers** arrive over the period (more of them in the season), each introduced by an
  ``identify`` with traits (email, name, age, address, plan, survey answers; a company and a
  ``group`` for B2B buyers) and, for most, a ``consent`` event (marketing given or not, at the
  same instant: ties on purpose); a few stay anonymous browsers; some browse anonymously first
  and are identified later (``identify`` with both ids: an identity merge);
* **purchases** follow BG/NBD (Fader, Hardie and Lee 2005): a buyer's first order comes soon
  after arrival, then orders at a rate ``lambda ~ Gamma(r, alpha)`` a day (seasonal), and after
  each repeat order the buyer drops out for good with probability ``p ~ Beta(a, b)``: repeat
  buyers, one-time buyers and churners, mostly 1 to 5 orders each. Order values follow
  Gamma-Gamma: ``nu ~ Gamma(q, v)`` per customer, each order ``Gamma(p, nu)``. With
  ``season = 0`` and ``browsing = False`` the orders are exactly these models' draws (the
  model tests fit them);
* **sessions**: page views, product views, carts; some carts are abandoned (``Product Added``
  with no order), some checkouts too; browsing fades after a buyer drops out;
* **email**: a newsletter on the 1st and the 15th; consenting customers open some and click a
  few (``Email Opened``, ``Email Link Clicked``);
* **ties**: a share of buyers have day-precision order stamps (an order export with dates only),
  so two orders of a day share their instant; introductions share theirs.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from streams.generate.personas import make_customer

Event = dict[str, Any]
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
YEAR_DAYS = 365.25
PEAK_DAY = 330
"""Day of the year (late November) when the season peaks."""
PAGES = ("Home", "Category", "Search", "Deals", "Product", "Blog", "Help")
CATEGORIES = ("apparel", "electronics", "home", "outdoor", "beauty", "books", "office")
FIRST_NAMES = ("Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia")


@dataclass(frozen=True, slots=True)
class HistorySpec:
    """What to draw. Rates are per day, amounts in the shop's currency (USD)."""

    customers: int = 1000
    months: float = 24.0
    end: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    """The history covers ``months`` (of 30.44 days) before this instant."""
    seed: int = 1
    buyers: float = 0.75
    """Share of customers who order at least once."""
    r: float = 0.5
    alpha: float = 35.0
    a: float = 0.8
    b: float = 2.6
    """BG/NBD: purchase rate ``Gamma(r, alpha)`` a day, dropout ``Beta(a, b)``."""
    p: float = 6.0
    q: float = 4.0
    v: float = 50.0
    """Gamma-Gamma: mean order value ``p v / (q - 1)`` (100 by default)."""
    visits_per_month: float = 2.0
    """Browsing sessions a month of an average customer while active."""
    season: float = 0.35
    """Amplitude of the yearly season (0: none)."""
    browsing: bool = True
    """False: only introductions and orders (no sessions, no email)."""
    anonymous: float = 0.06
    """Share of customers who never identify."""
    merged: float = 0.1
    """Share of customers who browse anonymously before they identify (an identity merge)."""
    consent: float = 0.85
    """Share of identified customers with a ``consent`` event (most give marketing consent)."""
    day_precision: float = 0.12
    """Share of buyers whose orders are stamped at midnight (ties within a day)."""

    @property
    def start(self) -> datetime:
        """The first instant of the period."""
        return self.end - timedelta(days=self.months * YEAR_DAYS / 12)

    def __post_init__(self) -> None:
        if self.customers < 1 or self.months <= 0:
            raise ValueError("a history needs at least one customer and a positive period")
        if self.end.tzinfo is None:
            raise ValueError("end must be timezone-aware")


def stamp(ms: int) -> str:
    """Epoch milliseconds as ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""
    day, rest = divmod(ms, DAY_MS)
    seconds, millis = divmod(rest, 1000)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    return f"{_date(day)}T{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}Z"


_DATES: dict[int, str] = {}


def _date(day: int) -> str:
    found = _DATES.get(day)
    if found is None:
        found = _DATES[day] = (datetime(1970, 1, 1) + timedelta(days=day)).strftime("%Y-%m-%d")
    return found


class _Drawer:
    """One customer's events (unsorted), drawn from one seeded generator."""

    def __init__(self, spec: HistorySpec) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.start = int(spec.start.timestamp() * 1000)
        self.end = int(spec.end.timestamp() * 1000)
        self.out: list[tuple[int, Event]] = []
        self.messages = 0
        self.prefix = f"h{spec.seed}"

    # -- time -----------------------------------------------------------------------------------

    def season(self, ms: int) -> float:
        """The seasonal multiplier at ``ms`` (1 on average, peaking in late November)."""
        if not self.spec.season:
            return 1.0
        day = (ms / DAY_MS) % YEAR_DAYS
        return 1.0 + self.spec.season * math.cos(2 * math.pi * (day - PEAK_DAY) / YEAR_DAYS)

    def arrivals(self, rate_per_day: float, since: int, until: int) -> Iterator[int]:
        """A (seasonal) Poisson process of ``rate_per_day`` on ``[since, until)``, by thinning."""
        if rate_per_day <= 0:
            return
        top = rate_per_day * (1 + self.spec.season)
        at = float(since)
        rng = self.rng
        while True:
            at += rng.expovariate(top) * DAY_MS
            if at >= until:
                return
            if rng.random() * (1 + self.spec.season) < self.season(int(at)):
                yield int(at)

    def arrival(self) -> int:
        """When a customer first comes (seasonal, over the period)."""
        rng = self.rng
        while True:
            at = self.start + int(rng.random() * (self.end - self.start - HOUR_MS))
            if rng.random() * (1 + self.spec.season) < self.season(at):
                return at

    # -- events ---------------------------------------------------------------------------------

    def emit(self, who: dict[str, str], kind: str, at: int, **fields: Any) -> None:
        """One event of ``kind`` at ``at`` for ``who`` (``userId`` and/or ``anonymousId``)."""
        if at >= self.end:
            return
        self.messages += 1
        event: Event = {"type": kind, "messageId": f"{self.prefix}-{self.messages}", **who}
        event["timestamp"] = stamp(at)
        event.update(fields)
        self.out.append((at, event))

    def track(self, who: dict[str, str], name: str, at: int, **properties: Any) -> None:
        self.emit(who, "track", at, event=name, properties=properties)

    def introduce(self, index: int, who: dict[str, str], at: int) -> None:
        """``identify`` with traits, ``group`` (B2B) and ``consent``, all at one instant."""
        rng = self.rng
        customer = make_customer(rng, index)
        traits = dict(customer.traits)
        traits["email"] = f"{who['userId']}@example.com"
        traits["first_name"] = rng.choice(FIRST_NAMES)
        self.emit(who, "identify", at, traits=traits)
        if customer.company is not None and customer.group_id is not None:
            self.emit(who, "group", at, groupId=customer.group_id, traits=customer.company)
        if rng.random() < self.spec.consent:
            given = rng.random() < 0.8
            self.emit(who, "consent", at, categoryPreferences={"marketing": given})
            if given and rng.random() < 0.05:  # withdrawn later
                later = at + int(rng.uniform(30, 400) * DAY_MS)
                self.emit(who, "consent", later, categoryPreferences={"marketing": False})

    def session(self, who: dict[str, str], at: int, cart: bool) -> int:
        """Pages and products from ``at``; with ``cart`` a product is added. The last instant."""
        rng = self.rng
        for _ in range(rng.randint(1, 3)):
            at += int(rng.uniform(5, 90) * 1000)
            page = rng.choice(PAGES)
            self.emit(who, "page", at, name=page, properties={"path": f"/{page.lower()}"})
        for _ in range(rng.randint(0 if not cart else 1, 2)):
            at += int(rng.uniform(5, 60) * 1000)
            product = {"product_id": f"p{rng.randint(1, 400)}", "category": rng.choice(CATEGORIES)}
            self.track(who, "Product Viewed", at, **product)
            if cart:
                at += int(rng.uniform(5, 60) * 1000)
                self.track(who, "Product Added", at, quantity=1, **product)
                cart = False
        return at

    def order(self, who: dict[str, str], at: int, value: float, exact: bool) -> None:
        """An order: with a session around it, or (day precision) the order alone at midnight."""
        props = {
            "order_id": f"o{self.spec.seed}-{self.messages + 1}",
            "revenue": value,
            "total": value,
            "currency": "USD",
            "category": self.rng.choice(CATEGORIES),
        }
        if not exact:
            self.track(who, "Order Completed", at // DAY_MS * DAY_MS, **props)
            return
        if self.spec.browsing:
            at = self.session(who, at, cart=True)
            at += int(self.rng.uniform(10, 120) * 1000)
            self.track(who, "Checkout Started", at, value=value, currency="USD")
        at += int(self.rng.uniform(10, 120) * 1000)
        self.track(who, "Order Completed", at, **props)

    # -- one customer ---------------------------------------------------------------------------

    def customer(self, index: int) -> list[tuple[int, Event]]:
        """Every event of customer ``index`` (unsorted)."""
        spec, rng = self.spec, self.rng
        self.out = []
        arrived = self.arrival()
        kind = rng.random()
        anonymous_first = kind < spec.anonymous + spec.merged
        anon = {"anonymousId": f"a{index}"}
        user = {"userId": f"u{index}"}
        who = anon if anonymous_first else user
        identified_at = arrived
        if kind < spec.anonymous:
            identified_at = self.end  # never
        elif anonymous_first:
            identified_at = arrived + int(rng.expovariate(1 / 20) * DAY_MS)
        buyer = kind >= spec.anonymous and rng.random() < spec.buyers
        activity = rng.gammavariate(2.0, 0.5)
        dropped = self.purchases(user, identified_at) if buyer else self.end
        if identified_at < self.end:
            merge = {"userId": user["userId"], "anonymousId": anon["anonymousId"]}
            self.introduce(index, merge if anonymous_first else user, identified_at)
        if spec.browsing:
            rate = spec.visits_per_month * activity / 30.44
            for at in self.arrivals(rate, arrived, self.end):
                if at >= dropped and rng.random() > 0.2:
                    continue  # a lapsed customer rarely comes back
                visitor = user if at >= identified_at else who
                self.session(visitor, at, cart=rng.random() < 0.2)
                if rng.random() < 0.1:
                    self.track(visitor, "Checkout Started", at + 600_000, currency="USD")
            if identified_at < self.end:
                self.newsletters(user, identified_at, activity)
        return self.out

    def purchases(self, who: dict[str, str], since: int) -> int:
        """BG/NBD orders from soon after ``since``; returns when the buyer dropped out."""
        spec, rng = self.spec, self.rng
        rate = rng.gammavariate(spec.r, 1 / spec.alpha)
        dropout = rng.betavariate(spec.a, spec.b)
        nu = rng.gammavariate(spec.q, 1 / spec.v)
        exact = rng.random() >= spec.day_precision
        first = since + int(rng.expovariate(1 / 3) * DAY_MS) if rng.random() < 0.6 else since
        if first >= self.end:
            return self.end
        self.order(who, first + 60_000, self.value(nu), exact)
        for at in self.arrivals(rate, first, self.end):
            self.order(who, at, self.value(nu), exact)
            if rng.random() < dropout:
                return at
        return self.end

    def value(self, nu: float) -> float:
        """One order's value: ``Gamma(p, nu)``, in cents."""
        return max(0.01, round(self.rng.gammavariate(self.spec.p, 1 / nu), 2))

    def newsletters(self, who: dict[str, str], since: int, activity: float) -> None:
        """Opens and clicks of the newsletters sent after ``since`` (1st and 15th, 09:00)."""
        rng = self.rng
        opens = min(0.9, 0.25 * activity)
        day = datetime.fromtimestamp(since / 1000, UTC).replace(hour=9, minute=0, second=0)
        day = day.replace(microsecond=0)
        while True:
            day = _next_send(day)
            sent = int(day.timestamp() * 1000)
            if sent >= self.end:
                return
            if rng.random() < opens:
                campaign = f"news-{day:%Y%m%d}"
                at = sent + int(rng.expovariate(1 / 6) * HOUR_MS)
                self.track(who, "Email Opened", at, campaign_id=campaign)
                if rng.random() < 0.3:
                    at += int(rng.uniform(5, 300) * 1000)
                    self.track(who, "Email Link Clicked", at, campaign_id=campaign)


def _next_send(day: datetime) -> datetime:
    """The next newsletter instant after ``day`` (the 1st or the 15th, 09:00 UTC)."""
    if day.day < 15:
        return day.replace(day=15)
    month = day.month % 12 + 1
    return day.replace(year=day.year + (month == 1), month=month, day=1)


def customer_events(spec: HistorySpec) -> Iterator[tuple[int, int, Event]]:
    """``(time in ms, tie-breaker, event)`` customer by customer (not in time order)."""
    drawer = _Drawer(spec)
    serial = 0
    for index in range(spec.customers):
        for at, event in drawer.customer(index):
            yield at, serial, event
            serial += 1


def history_events(spec: HistorySpec) -> list[Event]:
    """The whole history in time order (ties in the order drawn), in memory."""
    drawn = sorted(customer_events(spec), key=lambda item: (item[0], item[1]))
    return [event for _, _, event in drawn]


def write_history(spec: HistorySpec, out: Path, run_events: int = 200_000) -> int:
    """Write the history to ``out`` as time-ordered JSON lines, holding at most ``run_events``
    events in memory (sorted out of core); returns the number of events."""
    from streams.importer.sorting import ExternalSorter

    out.parent.mkdir(parents=True, exist_ok=True)
    with ExternalSorter(out.parent, run_events) as sorter:
        for at, serial, event in customer_events(spec):
            sorter.add(at, serial, orjson.dumps(event))
        count = 0
        with out.open("wb") as sink:
            for _at, _serial, line in sorter.merged():
                sink.write(line)
                sink.write(b"\n")
                count += 1
    return count
