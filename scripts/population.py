"""A simulated history of customers and purchases, as NDJSON the backfill imports.

`pulse population OUT.ndjson --purchases 300000` writes users and their purchases;
`pulse backfill OUT.ndjson` loads them into the running stack. The benchmark
`bench/scale.py` grows its populations with it.

Customers behave the way BG/NBD assumes (Fader, Hardie & Lee 2005): each buys at a rate of her
own (gamma distributed across customers) until she drops out, which she may do after any repeat
purchase (with a chance of her own, beta distributed); spends scatter around a mean of her own
(gamma-gamma); she buys from a taste of two or three of sixteen categories, some more popular.
Histories start up to two years back. Deterministic for a seed.
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

CATEGORIES = ["electronics", "books", "clothing", "home", "sports", "toys", "beauty", "garden", "music",
              "films", "games", "grocery", "pets", "auto", "office", "health"]
POPULARITY = np.linspace(2.0, 0.3, len(CATEGORIES)) / np.linspace(2.0, 0.3, len(CATEGORIES)).sum()
HISTORY_DAYS = 730


def write_population(path: Path, rng: np.random.Generator, first_customer: int, purchases: int,
                     prefix: str = "sim_") -> tuple[int, int]:
    """NDJSON users and purchases of new customers until `purchases` purchases; BG/NBD-style:
    a purchase rate per customer (gamma), a drop-out chance after each repeat purchase (beta),
    spends around a customer's own mean (gamma-gamma), categories from a taste of two or three.
    Returns (customers, purchases) written."""
    today = datetime.now(UTC).date()
    written = customers = 0
    with path.open("w") as out:
        while written < purchases:
            customer = first_customer + customers
            customers += 1
            name = f"{prefix}{customer}"
            start = int(rng.integers(0, HISTORY_DAYS))
            rate = rng.gamma(0.9, 1 / 0.12)  # purchases a year while alive (mean 7.5)
            drop = rng.beta(1.0, 4.0)
            mean_spend = 40.0 / rng.gamma(4.0, 1 / 3.0)
            taste = rng.choice(len(CATEGORIES), size=int(rng.integers(2, 4)), replace=False, p=POPULARITY)
            days = [start]
            while len(days) < 60 and rng.random() > (drop if len(days) > 1 else 0.0):
                gap = rng.exponential(365.0 / max(rate, 0.2))
                nxt = days[-1] - int(gap) - 1
                if nxt < 0:
                    break
                days.append(nxt)
            out.write(json.dumps({
                "username": name, "email": f"{name}@customers.example.com", "full_name": f"Customer {customer}",
                "address": {"street": f"Market Street {customer % 1000}", "city": "Tallinn", "country_code": "EE"},
                "created_at": (today - timedelta(days=start + 1)).isoformat()}) + "\n")
            for n, ago in enumerate(days):
                if written >= purchases:
                    break
                moment = datetime.combine(today - timedelta(days=ago), datetime.min.time(), UTC) + timedelta(
                    seconds=int(rng.integers(0, 86400)))
                if moment > datetime.now(UTC):
                    moment = datetime.now(UTC) - timedelta(minutes=5)
                out.write(json.dumps({
                    "event_id": f"{prefix}{customer}-{n}", "username": name, "event_type": "user_purchase",
                    "timestamp": moment.isoformat(),
                    "metadata": {"product_id": f"P-{int(rng.integers(0, 500))}",
                                 "price": round(float(rng.gamma(6.0, mean_spend / 6.0)), 2),
                                 "category": CATEGORIES[int(rng.choice(taste))]}}) + "\n")
                written += 1
    return customers, written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pulse population", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="NDJSON file to write")
    parser.add_argument("--purchases", type=int, default=100_000, help="how many purchases (default 100,000)")
    parser.add_argument("--first-customer", type=int, default=0, help="number of the first customer (default 0)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--prefix", default="sim_", help="usernames and event ids start with it (default sim_)")
    args = parser.parse_args(argv)
    customers, purchases = write_population(args.out, np.random.default_rng(args.seed), args.first_customer,
                                            args.purchases, args.prefix)
    print(f"{args.out}: {customers:,} customers, {purchases:,} purchases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
