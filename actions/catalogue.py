"""Handlers that answer questions about the models: lists, details, prices, stock, colours.

Every handler here only reads data loaded at import or computes, so it is marked
``@action(timeout=None)``: it runs in the request's own thread, with no time limit and no
thread switch. A handler that calls a network service keeps a limit (see ``booking.py``).
"""
from __future__ import annotations

import logging
import re

from bot.actions import Context, Reply, action
from bot.config import Button

from .facts import FACTS
from .inventory import BODY_NAMES, CARS, Car, car, matching, money, search_from

log = logging.getLogger(__name__)

MAX_BUTTONS = 4


def _line(c: Car) -> str:
    return f"• {c.name}: {money(c.price)}, {c.fuel} {BODY_NAMES[c.body]}, {c.seats} seats, {c.efficiency}"


def _model_buttons(cars: list[Car]) -> tuple[Button, ...]:
    """One button per car: it shows the name and asks for the car's details when clicked."""
    return tuple(Button(c.name, f"Tell me about the {c.name}") for c in cars[:MAX_BUTTONS])


@action(timeout=None)
def list_models(ctx: Context) -> Reply:
    """List the models that fit the body type, fuel, price and seats named in the message.

    Sets ``result.count``; the text lists the cars cheapest first, with one button per car.
    When nothing fits the price, it offers the cheapest cars that fit everything else.
    """
    search = search_from(ctx.text, ctx.entities)
    found = matching(search)
    if found:
        intro = (f"We have {len(found)} {search.describe()}:" if len(found) > 1
                 else f"We have one {search.describe(count=1)}:")
        if search == type(search)():
            intro = f"Here is our full range of {len(found)} models, cheapest first:"
        text = "\n".join([intro, *(_line(c) for c in found)])
        return Reply(text, result={"count": len(found)}, buttons=_model_buttons(found))
    relaxed = matching(search.without_price())
    if relaxed and search.without_price() != search:
        text = "\n".join([f"Sorry, we have no {search.describe()}. The closest are:",
                          *(_line(c) for c in relaxed[:3])])
        return Reply(text, result={"count": 0}, buttons=_model_buttons(relaxed))
    cheapest = matching(type(search)())[:3]
    text = "\n".join([f"Sorry, we have no {search.describe()} at the moment. Our most affordable models are:",
                      *(_line(c) for c in cheapest)])
    return Reply(text, result={"count": 0}, buttons=_model_buttons(cheapest))


def _chosen(ctx: Context, slot: str = "car_model") -> Car:
    chosen = car(ctx.slots.get(slot))
    if chosen is None:  # the flow asks for the slot first, so this is a wiring mistake
        raise LookupError(f"slot {slot!r} holds no known car: {ctx.slots.get(slot)!r}")
    return chosen


@action(timeout=None)
def describe_model(ctx: Context) -> Reply:
    """Details of the car in slot ``car_model`` as ``result`` (see Car.as_result)."""
    chosen = _chosen(ctx)
    return Reply(result=chosen.as_result(), slots={"car_label": chosen.name})


@action(timeout=None)
def lookup_price(ctx: Context) -> Reply:
    """Price and stock of the car in ``car_model``: ``result.price``, ``result.in_stock``."""
    chosen = _chosen(ctx)
    return Reply(result=chosen.as_result(), slots={"car_label": chosen.name})


@action(timeout=None)
def check_stock(ctx: Context) -> Reply:
    """Stock of the car in ``car_model``: ``result.in_stock``, ``result.stock``, and for a sold-out car
    ``result.alternatives`` (in-stock cars of the same body, nearest in price) and ``delivery_weeks``."""
    chosen = _chosen(ctx)
    result = chosen.as_result()
    alternatives = [c for c in CARS.values() if c.body == chosen.body and c.id != chosen.id and c.stock > 0]
    result["alternatives"] = [c.name for c in sorted(alternatives, key=lambda c: abs(c.price - chosen.price))[:2]]
    result["delivery_weeks"] = FACTS["ordering"]["delivery_weeks"]
    return Reply(result=result, slots={"car_label": chosen.name})


@action(timeout=None)
def model_colours(ctx: Context) -> Reply:
    """Colours of the car in ``car_model``.

    ``result.asked`` is a colour named in the message (one the car comes in, if any), and
    ``result.has_asked`` says whether the car comes in it; ``result.match`` is then the full colour
    name ('lime green' -> 'Electric Lime').
    """
    chosen = _chosen(ctx)
    result = chosen.as_result()
    words = re.findall(r"[a-z]+", ctx.text.lower())
    asked = [w for w in words if w in _COLOUR_WORDS]
    offered = " ".join(chosen.colours).lower().split()
    match = next((w for w in asked if w in offered), None)
    result["asked"] = match or (asked[0] if asked else None)
    result["has_asked"] = match is not None
    result["match"] = next((c for c in chosen.colours if match and match in c.lower().split()), None)
    return Reply(result=result, slots={"car_label": chosen.name})


_COLOUR_WORDS = ("white", "black", "blue", "grey", "gray", "red", "green", "silver", "orange", "teal",
                 "lime", "beige", "yellow", "brown", "purple", "pink", "gold")


@action(timeout=None)
def compare_models(ctx: Context) -> Reply:
    """Compare the cars in ``car_model`` and ``other_model``: price, fuel, seats, economy, stock."""
    a, b = _chosen(ctx, "car_model"), _chosen(ctx, "other_model")
    cheaper, dearer = sorted((a, b), key=lambda c: c.price)
    if a.price == b.price:
        price_line = f"Both cost {money(a.price)}."
    else:
        price_line = f"The {cheaper.name} is {money(dearer.price - cheaper.price)} cheaper ({money(cheaper.price)} vs {money(dearer.price)})."
    lines = [f"{a.name} vs {b.name}:", price_line]
    for c in (a, b):
        stock = f"{c.stock} in stock" if c.stock else "sold out, can be ordered"
        lines.append(f"• {c.name}: {c.fuel} {BODY_NAMES[c.body]}, {c.seats} seats, {c.efficiency}, {stock}.")
    if a.seats != b.seats:
        roomier = max((a, b), key=lambda c: c.seats)
        lines.append(f"The {roomier.name} has more room with {roomier.seats} seats.")
    if a.consumption and b.consumption and a.consumption != b.consumption:
        frugal, thirsty = sorted((a, b), key=lambda c: c.consumption or 0)
        lines.append(f"The {frugal.name} uses less fuel ({frugal.consumption:g} vs {thirsty.consumption:g} l/100 km).")
    if a.range_km and b.range_km and a.range_km != b.range_km:
        longer, shorter = sorted((a, b), key=lambda c: -(c.range_km or 0))
        lines.append(f"The {longer.name} goes further on a charge ({longer.range_km} vs {shorter.range_km} km).")
    return Reply("\n".join(lines), result={"cheaper": cheaper.name, "price_gap": dearer.price - cheaper.price},
                 buttons=(f"Test drive the {a.name}", f"Test drive the {b.name}"))


@action(timeout=None)
def check_other_model(ctx: Context) -> str | None:
    """Refuse comparing a car with itself."""
    if ctx.slots.get("other_model") == ctx.slots.get("car_model"):
        chosen = car(ctx.slots.get("car_model"))
        label = chosen.name if chosen else "that model"
        return f"That's the {label} again! Which other model should I compare it with?"
    return None
