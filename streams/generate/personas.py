"""Synthetic customers: personas with distinct buying, browsing and email habits.

A :class:`Persona` says how often a kind of customer browses, buys and reads email, what they
spend, and which traits they tend to have. :class:`Generator` turns a seeded population of such
customers into Segment-spec events, either live (``next_event(now)``) or as an event-time
history spanning days (:func:`history`). Everything is drawn from one seeded ``random.Random``,
so the same seed always gives the same events, ``messageId`` included.
"""

from __future__ import annotations

import random
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

Event = dict[str, Any]

_ID_NAMESPACE = uuid.UUID("6f1c2f0e-5b1d-4c57-9a43-0c1f7d1e2a10")

COUNTRIES: dict[str, tuple[str, ...]] = {
    "CA": ("Toronto", "Montreal", "Vancouver", "Calgary"),
    "US": ("New York", "Austin", "Chicago", "Seattle", "Miami"),
    "GB": ("London", "Manchester", "Edinburgh"),
    "FR": ("Paris", "Lyon", "Marseille"),
    "DE": ("Berlin", "Munich", "Hamburg"),
}
LIFESTYLES = ("eco_conscious", "luxury", "bargain_hunter", "adventurer")
NEEDS = ("price", "quality", "convenience", "support")
PLANS = ("free", "pro", "enterprise")
_LOCALES = {"CA": "en-CA", "US": "en-US", "GB": "en-GB", "FR": "fr-FR", "DE": "de-DE"}
INDUSTRIES = ("software", "retail", "finance", "healthcare", "manufacturing", "education")
CATEGORIES = ("apparel", "electronics", "home", "outdoor", "beauty", "books", "office")
PAGES = ("Home", "Category", "Search", "Deals", "Pricing", "Blog", "Help")
CAMPAIGNS = ("weekly-digest", "spring-sale", "new-arrivals", "win-back", "vip-preview")


@dataclass(frozen=True, slots=True)
class Persona:
    """How one kind of customer behaves.

    ``activity`` is sessions per week; the ``p_*`` fields are per-session probabilities; prices are
    drawn uniformly from ``price``. ``churn_after_days`` makes the customer stop buying (and mostly
    stop visiting) after that many days of history.
    """

    name: str
    weight: float
    activity: float
    pages: tuple[int, int]
    p_product: float
    p_add: float
    p_checkout: float
    p_order: float
    p_email: float
    p_click: float
    price: tuple[float, float]
    items: tuple[int, int] = (1, 2)
    lifestyle: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    need: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    plan: tuple[float, ...] = (6.0, 3.0, 1.0)
    b2b: bool = False
    anonymous: float = 0.0
    p_consent: float = 0.5
    churn_after_days: float | None = None


# fmt: off
PERSONAS: tuple[Persona, ...] = (
    Persona(
        "window_shopper", weight=20, activity=8.0, pages=(3, 8),
        p_product=0.8, p_add=0.15, p_checkout=0.05, p_order=0.3, p_email=0.1, p_click=0.2,
        price=(10, 120), lifestyle=(1, 1, 1, 2), need=(1, 1, 2, 1), anonymous=0.35, p_consent=0.3,
    ),
    Persona(
        "bargain_hunter", weight=18, activity=6.0, pages=(2, 6),
        p_product=0.9, p_add=0.5, p_checkout=0.4, p_order=0.7, p_email=0.25, p_click=0.4,
        price=(5, 60), items=(1, 4), lifestyle=(1, 0.2, 4, 1), need=(5, 1, 1, 0.5), p_consent=0.7,
    ),
    Persona(
        "vip", weight=8, activity=4.0, pages=(1, 4),
        p_product=0.9, p_add=0.7, p_checkout=0.8, p_order=0.9, p_email=0.4, p_click=0.5,
        price=(300, 1500), items=(1, 3), lifestyle=(1, 5, 0.2, 1), need=(0.2, 5, 2, 1),
        plan=(1, 3, 4), p_consent=0.8,
    ),
    Persona(
        "churner", weight=14, activity=5.0, pages=(1, 5),
        p_product=0.8, p_add=0.5, p_checkout=0.5, p_order=0.8, p_email=0.2, p_click=0.3,
        price=(20, 250), items=(1, 3), need=(2, 1, 2, 3), churn_after_days=30.0,
    ),
    Persona(
        "b2b_buyer", weight=10, activity=3.0, pages=(1, 4),
        p_product=0.9, p_add=0.6, p_checkout=0.6, p_order=0.85, p_email=0.15, p_click=0.3,
        price=(200, 5000), items=(2, 6), lifestyle=(2, 1, 0.5, 0.5), need=(1, 3, 2, 3),
        plan=(0.5, 3, 4), b2b=True, p_consent=0.6,
    ),
    Persona(
        "email_enthusiast", weight=14, activity=4.0, pages=(1, 3),
        p_product=0.6, p_add=0.3, p_checkout=0.3, p_order=0.7, p_email=0.9, p_click=0.6,
        price=(15, 150), lifestyle=(2, 1, 1, 1), need=(1, 2, 3, 1), p_consent=0.95,
    ),
    Persona(
        "cart_abandoner", weight=16, activity=6.0, pages=(2, 6),
        p_product=0.9, p_add=0.8, p_checkout=0.6, p_order=0.1, p_email=0.2, p_click=0.3,
        price=(20, 300), items=(1, 3), lifestyle=(1, 1, 2, 2), need=(3, 1, 2, 1), p_consent=0.5,
    ),
)
# fmt: on
"""The persona mix; ``weight`` is each persona's relative share of the population."""


@dataclass(slots=True)
class Customer:
    """One synthetic customer: an id, a persona, traits, and what has been emitted about them."""

    id: str
    persona: Persona
    anonymous: bool
    traits: dict[str, Any]
    company: dict[str, Any] | None
    group_id: str | None
    consent: bool | None
    context: dict[str, Any] = field(default_factory=dict)
    introduced: bool = False
    seq: int = 0


def _pick(rng: random.Random, values: tuple[str, ...], weights: tuple[float, ...]) -> str:
    return rng.choices(values, weights=weights, k=1)[0]


def make_customer(rng: random.Random, index: int) -> Customer:
    """Draw customer number ``index``: a persona by weight, then traits that fit the persona."""
    persona = rng.choices(PERSONAS, weights=[p.weight for p in PERSONAS], k=1)[0]
    country = rng.choice(tuple(COUNTRIES))
    traits: dict[str, Any] = {
        "age": rng.randint(18, 80),
        "gender": _pick(rng, ("female", "male", "nonbinary"), (48, 48, 4)),
        "address": {"country": country, "city": rng.choice(COUNTRIES[country])},
        "plan": _pick(rng, PLANS, persona.plan),
        "survey": {
            "lifestyle": _pick(rng, LIFESTYLES, persona.lifestyle),
            "primary_need": _pick(rng, NEEDS, persona.need),
        },
    }
    company: dict[str, Any] | None = None
    group_id: str | None = None
    if persona.b2b:
        company = {
            "name": f"Company {index % 97:02d}",
            "employee_count": rng.choice((8, 25, 60, 180, 450, 1200, 5000)),
            "industry": rng.choice(INDUSTRIES),
        }
        traits["company"] = {
            "employee_count": company["employee_count"],
            "industry": company["industry"],
        }
        group_id = f"g{index % 97:02d}"
    anonymous = rng.random() < persona.anonymous
    consent = (rng.random() < persona.p_consent) if rng.random() < 0.6 else None
    prefix = "a" if anonymous else "u"
    context = {
        "library": {"name": "segmenter-generate", "version": "0.1.0"},
        "locale": _LOCALES[country],
        "ip": f"203.0.113.{rng.randint(1, 254)}",
    }
    return Customer(
        f"{prefix}{index}", persona, anonymous, traits, company, group_id, consent, context
    )


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Generator:
    """A seeded population of customers and the events they produce.

    ``next_event(now)`` gives live events stamped ``now``; :meth:`session` gives one customer's
    visit as events at increasing times (used by :func:`history`). The same ``seed`` and
    ``customers`` always give the same sequence; each ``messageId`` is a uuid5 of the seed and
    a counter.
    """

    seed: int = 1
    customers: int = 1000
    rng: random.Random = field(init=False, repr=False)
    population: list[Customer] = field(init=False, repr=False)
    _pending: deque[Event] = field(init=False, repr=False, default_factory=deque)
    _counter: int = field(init=False, default=0)
    _order_no: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if self.customers < 1:
            raise ValueError("customers must be at least 1")
        self.rng = random.Random(self.seed)
        self.population = [make_customer(self.rng, i) for i in range(self.customers)]
        self._activity = [c.persona.activity for c in self.population]

    # -- building blocks -------------------------------------------------------------------
    def _base(self, customer: Customer, kind: str, at: datetime) -> Event:
        self._counter += 1
        customer.seq += 1
        event: Event = {
            "type": kind,
            "messageId": str(uuid.uuid5(_ID_NAMESPACE, f"{self.seed}:{self._counter}")),
            "timestamp": _iso(at),
        }
        event["anonymousId" if customer.anonymous else "userId"] = customer.id
        event["context"] = customer.context
        return event

    def _track(self, customer: Customer, name: str, at: datetime, props: dict[str, Any]) -> Event:
        event = self._base(customer, "track", at)
        event["event"] = name
        event["properties"] = props
        return event

    def introduce(self, customer: Customer, at: datetime) -> list[Event]:
        """The events that make a customer known: identify, group (B2B), consent (sometimes)."""
        customer.introduced = True
        out: list[Event] = []
        if not customer.anonymous:
            identify = self._base(customer, "identify", at)
            identify["traits"] = customer.traits
            out.append(identify)
        if (
            customer.company is not None
            and customer.group_id is not None
            and not customer.anonymous
        ):
            group = self._base(customer, "group", at)
            group["groupId"] = customer.group_id
            group["traits"] = customer.company
            out.append(group)
        if customer.consent is not None and not customer.anonymous:
            consent = self._base(customer, "consent", at)
            consent["categoryPreferences"] = {"marketing": customer.consent}
            out.append(consent)
        return out

    def _product(self, customer: Customer) -> dict[str, Any]:
        low, high = customer.persona.price
        return {
            "product_id": f"p{self.rng.randint(1, 500)}",
            "price": round(self.rng.uniform(low, high), 2),
            "category": self.rng.choice(CATEGORIES),
        }

    def session(self, customer: Customer, start: datetime, buying: bool = True) -> list[Event]:
        """One visit of ``customer`` starting at ``start``: pages, products, cart, order, email.

        With ``buying`` false the visit never completes an order (a churned customer).
        """
        persona, rng = customer.persona, self.rng
        at = start
        out: list[Event] = []

        def step() -> datetime:
            nonlocal at
            at = at + timedelta(seconds=rng.uniform(5, 90))
            return at

        if not customer.introduced:
            out += self.introduce(customer, at)
        if rng.random() < persona.p_email and not customer.anonymous:
            campaign = rng.choice(CAMPAIGNS)
            email = {"campaign_id": campaign, "email_id": f"e{rng.randint(1, 9999)}"}
            out.append(self._track(customer, "Email Opened", step(), dict(email)))
            if rng.random() < persona.p_click:
                out.append(self._track(customer, "Email Link Clicked", step(), dict(email)))
        for _ in range(rng.randint(*persona.pages)):
            page = self._base(customer, "page", step())
            name = rng.choice(PAGES)
            page["name"] = name
            page["properties"] = {"path": f"/{name.lower()}", "title": name}
            out.append(page)
        if rng.random() >= persona.p_product:
            return out
        cart: list[dict[str, Any]] = []
        for _ in range(rng.randint(*persona.items)):
            product = self._product(customer)
            out.append(self._track(customer, "Product Viewed", step(), product))
            if rng.random() < persona.p_add:
                cart.append(product)
                out.append(
                    self._track(customer, "Product Added", step(), dict(product, quantity=1))
                )
        if not cart or rng.random() >= persona.p_checkout:
            return out
        total = round(sum(float(p["price"]) for p in cart), 2)
        out.append(
            self._track(customer, "Checkout Started", step(), {"value": total, "currency": "USD"})
        )
        if buying and rng.random() < persona.p_order:
            self._order_no += 1
            order = {
                "order_id": f"o{self.seed}-{self._order_no}",
                "revenue": total,
                "total": total,
                "currency": "USD",
                "category": cart[0]["category"],
            }
            out.append(self._track(customer, "Order Completed", step(), order))
        return out

    # -- live mode ------------------------------------------------------------------------------
    def next_event(self, now: datetime | None = None) -> Event:
        """The next live event, stamped ``now`` (default: the current UTC time)."""
        if not self._pending:
            moment = now or datetime.now(UTC)
            customer = self.rng.choices(self.population, weights=self._activity, k=1)[0]
            self._pending.extend(self.session(customer, moment))
        event = self._pending.popleft()
        event["timestamp"] = _iso(now or datetime.now(UTC))
        return event

    def events(self) -> Iterator[Event]:
        """Live events forever, each stamped with the current time."""
        while True:
            yield self.next_event()


def customer_key(event: Event) -> str:
    """The customer id of a generated event (the Kafka key)."""
    return str(event.get("userId") or event.get("anonymousId"))


def history(seed: int, customers: int, days: float, start: datetime) -> list[Event]:
    """An event-time-ordered history of ``customers`` customers over ``days`` days from ``start``.

    Every customer appears within the first tenth of the span. Sessions follow each persona's
    ``activity`` (a Poisson process); churners buy for ``churn_after_days`` and then stop buying
    and almost stop visiting, so with a span of months they lapse. Ties in time are broken by
    generation order, so the result is deterministic. Expect about 5 events per customer per day
    (60 customers over 180 days: about 53,000 events).
    """
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    gen = Generator(seed=seed, customers=customers)
    rng = gen.rng
    span = timedelta(days=days)
    end = start + span
    tagged: list[tuple[datetime, int, Event]] = []
    order = 0
    for customer in gen.population:
        persona = customer.persona
        at = start + span * rng.uniform(0.0, 0.1)
        churn_at = (
            start + timedelta(days=persona.churn_after_days * rng.uniform(0.5, 1.5))
            if persona.churn_after_days is not None
            else None
        )
        while at < end:
            churned = churn_at is not None and at >= churn_at
            if not churned or rng.random() < 0.1:
                for event in gen.session(customer, at, buying=not churned):
                    moment = datetime.fromisoformat(event["timestamp"])
                    if moment < end:
                        tagged.append((moment, order, event))
                        order += 1
            at += timedelta(days=rng.expovariate(persona.activity / 7.0))
    tagged.sort(key=lambda item: (item[0], item[1]))
    return [event for _, _, event in tagged]
