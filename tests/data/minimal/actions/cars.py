"""Handlers of the minimal test bot."""
from bot import Context, Reply, action

PRICES = {"x3": ("X3", 41900, True), "x5": ("X5", 61900, False), "sedan_s": ("Sedan S", 32500, True)}


@action
def lookup_price(ctx: Context) -> Reply:
    label, price, in_stock = PRICES[ctx.slots["car_model"]]
    return Reply(slots={"car_label": label}, result={"price": price, "in_stock": in_stock})


@action
def book_drive(ctx: Context) -> Reply:
    return Reply(slots={"reference": "TD-" + ctx.slots["car_model"].upper()})
