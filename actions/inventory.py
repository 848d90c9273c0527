"""The Northwind Motors inventory from data/cars.yaml, and searches over it."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping

import yaml


log = logging.getLogger(__name__)

CARS_FILE = Path(__file__).resolve().parent.parent / "data" / "cars.yaml"
BODY_PLURALS = MappingProxyType({
    "suv": "SUVs", "sedan": "sedans", "hatchback": "hatchbacks", "pickup": "pickups",
    "van": "vans", "coupe": "coupés", "wagon": "wagons (estates)",
})
BODY_NAMES = MappingProxyType({
    "suv": "SUV", "sedan": "sedan", "hatchback": "hatchback", "pickup": "pickup", "van": "van",
    "coupe": "coupé", "wagon": "wagon",
})
FUEL_WORDS = MappingProxyType({"electric": "electric", "hybrid": "hybrid", "petrol": "petrol",
                               "diesel": "diesel"})
# Words that turn a price into a lower bound ("over 50k"); any other price is an upper bound.
_MIN_PRICE = re.compile(r"\b(over|above|more than|at least|from|min(imum)?|starting at)\b", re.IGNORECASE)
_SEATS = re.compile(r"\bseat(s|er|ers)?\b|\bfamily of\b|\bpeople\b", re.IGNORECASE)


@dataclass(frozen=True)
class Car:
    """One model on sale; ``range_km`` is set for electric cars, ``consumption`` for the rest."""

    id: str
    name: str
    body: str
    price: int
    fuel: str
    seats: int
    stock: int
    colours: tuple[str, ...]
    tagline: str
    aliases: tuple[str, ...]
    range_km: int | None = None
    consumption: float | None = None

    @property
    def efficiency(self) -> str:
        """'510 km range' or '7.8 l/100 km', whichever applies."""
        if self.range_km is not None:
            return f"{self.range_km} km range"
        return f"{self.consumption:g} l/100 km"

    def as_result(self) -> dict[str, Any]:
        """The car as plain data for ``{{ result.* }}`` templates."""
        return {
            "id": self.id, "name": self.name, "body": self.body, "body_label": BODY_NAMES[self.body], "price": self.price, "fuel": self.fuel,
            "seats": self.seats, "stock": self.stock, "in_stock": self.stock > 0,
            "colours": list(self.colours), "tagline": self.tagline, "range_km": self.range_km,
            "consumption": self.consumption, "efficiency": self.efficiency, "kind": self.kind,
        }

    @property
    def kind(self) -> str:
        """'an electric SUV', 'a petrol sedan'."""
        article = "an" if self.fuel[0] in "aeiou" else "a"
        return f"{article} {self.fuel} {BODY_NAMES[self.body]}"


@dataclass(frozen=True)
class Search:
    """What a visitor asked for in a 'which models' question; None means 'any'."""

    body: str | None = None
    fuel: str | None = None
    max_price: float | None = None
    min_price: float | None = None
    min_seats: int | None = None

    def matches(self, car: Car) -> bool:
        return ((self.body is None or car.body == self.body)
                and (self.fuel is None or car.fuel == self.fuel)
                and (self.max_price is None or car.price <= self.max_price)
                and (self.min_price is None or car.price >= self.min_price)
                and (self.min_seats is None or car.seats >= self.min_seats))

    def describe(self, count: int = 2) -> str:
        """A noun phrase such as 'electric SUVs under $50,000' (singular when ``count`` is 1)."""
        words = [FUEL_WORDS[self.fuel]] if self.fuel else []
        if count == 1:
            words.append(BODY_NAMES[self.body] if self.body else "model")
        else:
            words.append(BODY_PLURALS[self.body] if self.body else "models")
        if self.min_seats:
            words.append(f"with {self.min_seats}+ seats")
        if self.max_price is not None:
            words.append(f"under {money(self.max_price)}")
        if self.min_price is not None:
            words.append(f"over {money(self.min_price)}")
        return " ".join(words)

    def without_price(self) -> Search:
        return Search(self.body, self.fuel, None, None, self.min_seats)


def money(amount: float) -> str:
    """Format a dollar amount the way the flows' ``money`` filter does: $41,900."""
    return f"${amount:,.0f}" if amount == int(amount) else f"${amount:,.2f}"


def _car(car_id: str, raw: Mapping[str, Any]) -> Car:
    return Car(
        id=car_id, name=raw["name"], body=raw["body"], price=int(raw["price"]), fuel=raw["fuel"],
        seats=int(raw["seats"]), stock=int(raw["stock"]), colours=tuple(raw["colours"]),
        tagline=raw["tagline"], aliases=tuple(str(a) for a in raw["aliases"]),
        range_km=raw.get("range_km"), consumption=raw.get("consumption_l_100km"))


def load_cars(path: Path = CARS_FILE) -> Mapping[str, Car]:
    """Read the inventory file; cars keep the file's order."""
    with path.open(encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    cars = {car_id: _car(car_id, raw) for car_id, raw in data["cars"].items()}
    log.debug("loaded %d cars from %s", len(cars), path)
    return MappingProxyType(cars)


CARS: Mapping[str, Car] = load_cars()


def car(car_id: Any) -> Car | None:
    """The car with this id, or None (also for None and unknown ids)."""
    return CARS.get(str(car_id)) if car_id else None


def search_from(text: str, entities: Mapping[str, Any]) -> Search:
    """Build a Search from a message's entities.

    A money amount (or a number of at least 1,000: '40k') is a maximum price unless the text
    says 'over', 'above', 'more than'... A small number next to 'seats' is a minimum seat count.
    """
    amount = entities.get("money")
    number = entities.get("number")
    if amount is None and isinstance(number, (int, float)) and number >= 1000:
        amount = number
    seats = None
    if isinstance(number, (int, float)) and 2 <= number <= 9 and _SEATS.search(text):
        seats = int(number)
    low = amount is not None and bool(_MIN_PRICE.search(text))
    return Search(
        body=entities.get("body_type"), fuel=entities.get("fuel_type"),
        max_price=None if amount is None or low else float(amount),
        min_price=float(amount) if amount is not None and low else None,
        min_seats=seats)


def matching(search: Search, cars: Iterable[Car] | None = None) -> list[Car]:
    """Cars that fit ``search``, cheapest first."""
    pool = CARS.values() if cars is None else cars
    return sorted((c for c in pool if search.matches(c)), key=lambda c: (c.price, c.name))
