"""Made-up but realistic customers for the demo, in canonical terms."""

from __future__ import annotations

import random
from typing import Any

from bridge import canonical as c

GIVEN = [
    "Ada",
    "Grace",
    "Alan",
    "Mary Anne",
    "Linus",
    "Hedy",
    "Katherine",
    "Tim",
    "Barbara",
    "Edsger",
    "Frances",
    "Ken",
    "Radia",
    "Donald",
    "Margaret",
    "Dennis",
    "Shafi",
    "John",
    "Sophie",
    "Guido",
]
FAMILY = [
    "Lovelace",
    "Hopper",
    "Turing",
    "van der Berg",
    "Torvalds",
    "Lamarr",
    "Johnson",
    "Berners-Lee",
    "Liskov",
    "Dijkstra",
    "Allen",
    "Thompson",
    "Perlman",
    "Knuth",
    "Hamilton",
    "Ritchie",
    "Goldwasser",
    "McCarthy",
    "Wilson",
    "van Rossum",
]
STREETS = ["Market St", "Mission St", "Valencia St", "Castro St", "Haight St", "Divisadero St"]
NOTES = ["prefers e-mail receipts", "VIP", "allergic to nuts", "birthday club", "wholesale account", None]


def person(n: int, rng: random.Random) -> dict[str, Any]:
    given = rng.choice(GIVEN)
    family = rng.choice(FAMILY)
    handle = f"{given}.{family}".lower().replace(" ", "").replace("-", "")
    return {
        c.GIVEN_NAME: given,
        c.FAMILY_NAME: family,
        c.EMAIL: f"{handle}.{n}@example.com",
        c.PHONE_MOBILE: f"+1415555{n % 10000:04d}",
        c.NOTE: rng.choice(NOTES),
        c.CUSTOMER_CODE: f"C{10000 + n}",
        c.BILLING_ADDRESS: {
            "line1": f"{rng.randint(1, 999)} {rng.choice(STREETS)}",
            "city": "San Francisco",
            "region": "CA",
            "postal_code": f"941{rng.randint(0, 99):02d}",
            "country": "US",
        },
    }


def edit(values: dict[str, Any], rng: random.Random, n: int) -> dict[str, Any]:
    """One realistic change a person at a till makes: a new note, e-mail, phone or address."""
    field = rng.choice([c.NOTE, c.NOTE, c.EMAIL, c.PHONE_MOBILE, c.BILLING_ADDRESS])
    if field == c.NOTE:
        return {c.NOTE: f"visit {n}: {rng.choice(['bought shoes', 'returned a hat', 'asked about sizes'])}"}
    if field == c.EMAIL:
        local = str(values.get(c.EMAIL) or f"someone{n}@example.com").split("@")[0].split("+")[0]
        return {c.EMAIL: f"{local}+{n}@example.com"}
    if field == c.PHONE_MOBILE:
        return {c.PHONE_MOBILE: f"+1415556{n % 10000:04d}"}
    address = dict(values.get(c.BILLING_ADDRESS) or {})
    address["line1"] = f"{rng.randint(1, 999)} {rng.choice(STREETS)}"
    address.setdefault("city", "San Francisco")
    address.setdefault("country", "US")
    return {c.BILLING_ADDRESS: address}
