"""``sample-math``: arithmetic word problems in five graded levels, each a template function.

A template draws its numbers and words from the seeded ``rng``, records each solution step with the expression
it prints and the value it computed, and returns the question. The steps are re-evaluated exactly from the
printed text, so a template whose words and numbers disagree fails at build time rather than shipping a wrong
answer. The order of draws inside a template is part of the dataset: changing it changes the rows of every seed.
"""

from __future__ import annotations

import ast
import operator
import random
from collections.abc import Callable
from fractions import Fraction

from curate.samples._data import RETRIES, WORDS

_OPS: dict[type, Callable[[Fraction, Fraction], Fraction]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def _evaluate(expr: str) -> Fraction:
    """Exact value of an expression of integers, + - * / and brackets (no eval: the grammar is checked)."""

    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return Fraction(node.value)
        raise ValueError(f"unsupported expression {expr!r}")

    return walk(ast.parse(expr, mode="eval").body)


class _Solution:
    """Solution lines of one problem; every step is ``<label>: <expression> = <value>.``"""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.values: list[int] = []

    def step(self, label: str, expr: str, value: int) -> int:
        # The template computes ``value`` with Python arithmetic and prints ``expr`` separately; evaluating the
        # printed text exactly catches a template whose words and numbers disagree before any row ships.
        # A raise, not an assert: the check must survive ``python -O``.
        exact = _evaluate(expr)
        if exact != value or exact.denominator != 1 or value < 0:
            raise AssertionError(f"sample-math step {label!r}: {expr} evaluates to {exact}, template says {value}")
        self.lines.append(f"{label}: {expr} = {value}.")
        self.values.append(value)
        return value


_Template = Callable[[random.Random, _Solution], str]


# --- level 1: one small addition or subtraction ---


def _l1_market(rng: random.Random, s: _Solution) -> str:
    name, fruit = rng.choice(WORDS.names), rng.choice(WORDS.fruits)
    a, b = rng.randint(2, 15), rng.randint(2, 12)
    s.step(f"{fruit.capitalize()} after shopping", f"{a} + {b}", a + b)
    return f"{name} has {a} {fruit}. At the market, {name} buys {b} more. How many {fruit} does {name} have now?"


def _l1_bus(rng: random.Random, s: _Solution) -> str:
    a = rng.randint(8, 20)
    b = rng.randint(2, a - 1)
    s.step("Passengers still on the bus", f"{a} - {b}", a - b)
    return (
        f"A bus is carrying {a} passengers. At the next stop, {b} passengers get off and nobody gets on. "
        "How many passengers are still on the bus?"
    )


def _l1_class(rng: random.Random, s: _Solution) -> str:
    g, b = rng.randint(5, 16), rng.randint(5, 16)
    s.step("Students in the class", f"{g} + {b}", g + b)
    return f"A class has {g} girls and {b} boys. How many students are in the class?"


def _l1_piggy(rng: random.Random, s: _Solution) -> str:
    name, toy = rng.choice(WORDS.names), rng.choice(WORDS.toys)
    a = rng.randint(8, 20)
    b = rng.randint(2, a - 1)
    s.step("Dollars left", f"{a} - {b}", a - b)
    return f"{name} had ${a} in a piggy bank and spent ${b} on a {toy}. How many dollars does {name} have left?"


def _l1_farm(rng: random.Random, s: _Solution) -> str:
    kind1, kind2 = rng.sample(WORDS.animals, 2)
    a, b = rng.randint(2, 14), rng.randint(2, 14)
    s.step("Animals on the farm", f"{a} + {b}", a + b)
    return f"A farm has {a} {kind1} and {b} {kind2}. How many animals are on the farm in total?"


def _l1_bakery(rng: random.Random, s: _Solution) -> str:
    item = rng.choice(WORDS.baked)
    a = rng.randint(10, 20)
    b = rng.randint(2, a - 1)
    s.step(f"{item.capitalize()} left", f"{a} - {b}", a - b)
    return f"A baker made {a} {item}. By noon, {b} of them were sold. How many {item} are left?"


def _l1_walk(rng: random.Random, s: _Solution) -> str:
    name = rng.choice(WORDS.names)
    a, b = rng.randint(2, 12), rng.randint(2, 12)
    s.step("Kilometres walked", f"{a} + {b}", a + b)
    return (
        f"{name} walked {a} km in the morning and {b} km in the evening. How many kilometres did {name} walk that day?"
    )


def _l1_shelf(rng: random.Random, s: _Solution) -> str:
    name = rng.choice(WORDS.names)
    a = rng.randint(10, 20)
    b = rng.randint(2, a - 1)
    s.step("Books left on the shelf", f"{a} - {b}", a - b)
    return f"A shelf holds {a} books. {name} takes {b} books off the shelf to read. How many books remain on it?"


# --- level 2: two steps, small numbers, addition and subtraction ---


def _l2_give(rng: random.Random, s: _Solution) -> str:
    name, friend = rng.sample(WORDS.names, 2)
    fruit = rng.choice(WORDS.fruits)
    a, b = rng.randint(5, 25), rng.randint(3, 20)
    c = rng.randint(2, a + b - 1)
    x = s.step(f"{fruit.capitalize()} after buying more", f"{a} + {b}", a + b)
    s.step(f"{fruit.capitalize()} after giving some away", f"{x} - {c}", x - c)
    return (
        f"{name} has {a} {fruit}. {name} buys {b} more and then gives {c} to {friend}. "
        f"How many {fruit} does {name} have now?"
    )


def _l2_bus(rng: random.Random, s: _Solution) -> str:
    a = rng.randint(15, 40)
    b, c = rng.randint(3, a - 2), rng.randint(2, 15)
    x = s.step("Passengers after the first group gets off", f"{a} - {b}", a - b)
    s.step("Passengers after the new riders get on", f"{x} + {c}", x + c)
    return (
        f"A bus leaves the station with {a} passengers. At the first stop, {b} people get off and {c} people get on. "
        "How many passengers are on the bus now?"
    )


def _l2_savings(rng: random.Random, s: _Solution) -> str:
    name = rng.choice(WORDS.names)
    a, b, c = rng.randint(5, 30), rng.randint(5, 30), rng.randint(5, 30)
    x = s.step("Earned on Monday and Tuesday", f"{a} + {b}", a + b)
    s.step("Earned over the three days", f"{x} + {c}", x + c)
    return (
        f"{name} walks dogs after school. {name} earned ${a} on Monday, ${b} on Tuesday and ${c} on Wednesday. "
        "How many dollars did that make in total?"
    )


def _l2_trip(rng: random.Random, s: _Solution) -> str:
    name = rng.choice(WORDS.names)
    b, c = rng.randint(5, 20), rng.randint(5, 20)
    d = b + c + rng.randint(3, 15)
    x = s.step("Kilometres already cycled", f"{b} + {c}", b + c)
    s.step("Kilometres still to go", f"{d} - {x}", d - x)
    return (
        f"{name} is cycling a {d} km route. {name} rides {b} km before lunch and {c} km after lunch. "
        "How many kilometres are left to ride?"
    )


def _l2_class(rng: random.Random, s: _Solution) -> str:
    g = rng.randint(6, 15)
    boys = g + rng.randint(1, 8)
    total = g + boys
    x = s.step("Boys in the class", f"{total} - {g}", boys)
    s.step("How many more boys than girls", f"{x} - {g}", x - g)
    return (
        f"There are {total} students in a class, and {g} of them are girls. How many more boys than girls are there?"
    )


def _l2_eggs(rng: random.Random, s: _Solution) -> str:
    name = rng.choice(WORDS.names)
    a, b = rng.randint(8, 24), rng.randint(8, 24)
    c = rng.randint(3, a + b - 2)
    x = s.step("Eggs collected", f"{a} + {b}", a + b)
    s.step("Eggs left", f"{x} - {c}", x - c)
    return (
        f"{name} collected {a} eggs on Monday and {b} eggs on Tuesday, then used {c} eggs for baking. "
        "How many eggs are left?"
    )


def _l2_garden(rng: random.Random, s: _Solution) -> str:
    name = rng.choice(WORDS.names)
    f1, f2 = rng.sample(WORDS.flowers, 2)
    a, b = rng.randint(5, 20), rng.randint(5, 20)
    c = rng.randint(2, 9)
    x = s.step("Flowers planted", f"{a} + {b}", a + b)
    s.step("Flowers that bloomed", f"{x} - {c}", x - c)
    return f"{name} planted {a} {f1} and {b} {f2}. {c} of the flowers did not bloom. How many flowers bloomed?"


def _l2_game(rng: random.Random, s: _Solution) -> str:
    name = rng.choice(WORDS.names)
    a = rng.randint(10, 30)
    b, c = rng.randint(2, a - 1), rng.randint(3, 20)
    x = s.step("Score after the second round", f"{a} - {b}", a - b)
    s.step("Final score", f"{x} + {c}", x + c)
    return (
        f"In a quiz game, {name} scores {a} points in the first round, loses {b} points in the second round and "
        f"scores {c} points in the third round. What is {name}'s final score?"
    )


# --- level 3: multiplication and division, two or three steps ---


def _l3_supplies(rng: random.Random, s: _Solution) -> str:
    name = rng.choice(WORDS.names)
    (_, item1), (_, item2) = rng.sample(WORDS.supplies, 2)
    a, p, b, q = rng.randint(2, 9), rng.randint(2, 12), rng.randint(2, 9), rng.randint(2, 12)
    x = s.step(f"Cost of the {item1}", f"{a} * {p}", a * p)
    y = s.step(f"Cost of the {item2}", f"{b} * {q}", b * q)
    s.step("Total cost", f"{x} + {y}", x + y)
    return f"{name} buys {a} {item1} at ${p} each and {b} {item2} at ${q} each. How many dollars does {name} spend?"


def _l3_flour(rng: random.Random, s: _Solution) -> str:
    c, b = rng.randint(2, 5), rng.randint(3, 9)
    bag = c * b + rng.randint(3, 30)
    x = s.step("Cups of flour used", f"{c} * {b}", c * b)
    s.step("Cups of flour left", f"{bag} - {x}", bag - x)
    return (
        f"A bread recipe needs {c} cups of flour per batch. A baker makes {b} batches from a sack that holds "
        f"{bag} cups of flour. How many cups of flour are left in the sack?"
    )


def _l3_groups(rng: random.Random, s: _Solution) -> str:
    g, groups, k = rng.randint(3, 6), rng.randint(4, 9), rng.randint(2, 8)
    total = g * groups
    x = s.step("Number of groups", f"{total} / {g}", groups)
    s.step("Markers handed out", f"{x} * {k}", x * k)
    return (
        f"A teacher splits {total} students into groups of {g}. Each group gets {k} markers. "
        "How many markers does the teacher hand out?"
    )


def _l3_cartons(rng: random.Random, s: _Solution) -> str:
    name = rng.choice(WORDS.names)
    carton = rng.choice([6, 12])
    while True:
        coops, per, days = rng.randint(3, 9), rng.randint(4, 12), rng.randint(2, 7)
        if (coops * per * days) % carton == 0:
            break
    x = s.step("Eggs per day", f"{coops} * {per}", coops * per)
    y = s.step(f"Eggs in {days} days", f"{x} * {days}", x * days)
    s.step("Cartons filled", f"{y} / {carton}", y // carton)
    return (
        f"{name} collects {per} eggs from each of {coops} hen houses every day. The eggs are packed in cartons of "
        f"{carton}. How many cartons does {name} fill in {days} days?"
    )


def _l3_drive(rng: random.Random, s: _Solution) -> str:
    name = rng.choice(WORDS.names)
    speed, hours, extra = rng.randrange(40, 95, 5), rng.randint(2, 5), rng.randint(5, 40)
    x = s.step("Distance on the highway", f"{speed} * {hours}", speed * hours)
    s.step("Total distance", f"{x} + {extra}", x + extra)
    return (
        f"{name} drives at {speed} km per hour for {hours} hours on the highway, then drives {extra} km more on "
        "small roads. How many kilometres does the trip cover?"
    )


def _l3_weekly(rng: random.Random, s: _Solution) -> str:
    name, toy = rng.choice(WORDS.names), rng.choice(WORDS.toys)
    a, w = rng.randint(3, 15), rng.randint(4, 10)
    b = rng.randint(2, a * w - 1)
    x = s.step("Money saved", f"{a} * {w}", a * w)
    s.step("Money left", f"{x} - {b}", x - b)
    return f"{name} saves ${a} every week for {w} weeks, then spends ${b} on a {toy}. How many dollars are left?"


def _l3_share(rng: random.Random, s: _Solution) -> str:
    name = rng.choice(WORDS.names)
    while True:
        packs, size, friends = rng.randint(2, 9), rng.randint(4, 15), rng.randint(2, 6)
        if (packs * size) % friends == 0:
            break
    x = s.step("Stickers in all", f"{packs} * {size}", packs * size)
    s.step("Stickers per friend", f"{x} / {friends}", x // friends)
    return (
        f"{name} has {packs} packs of stickers with {size} stickers in each pack. {name} shares all of them "
        f"equally among {friends} friends. How many stickers does each friend get?"
    )


def _l3_museum(rng: random.Random, s: _Solution) -> str:
    adult, child = rng.randint(8, 20), rng.randint(3, 9)
    na, nc = rng.randint(2, 4), rng.randint(2, 6)
    x = s.step("Adult tickets", f"{na} * {adult}", na * adult)
    y = s.step("Child tickets", f"{nc} * {child}", nc * child)
    s.step("Total for the family", f"{x} + {y}", x + y)
    return (
        f"Museum tickets cost ${adult} for adults and ${child} for children. A family of {na} adults and {nc} "
        "children visits the museum. How many dollars do they pay?"
    )


# --- level 4: three or four steps, numbers in the hundreds, percentages and fractions ---

_FRACTIONS = [(1, 4), (1, 5), (2, 5), (1, 3), (3, 10), (3, 8), (1, 6), (2, 3), (3, 4)]


def _l4_sale(rng: random.Random, s: _Solution) -> str:
    name = rng.choice(WORDS.names)
    one, many = rng.choice(WORDS.goods)
    price, pct = 20 * rng.randint(3, 15), rng.choice([10, 15, 20, 25, 30, 40])
    k, ship = rng.randint(2, 6), rng.randint(5, 25)
    d = s.step(f"Discount on one {one}", f"{price} * {pct} / 100", price * pct // 100)
    p = s.step(f"Sale price of one {one}", f"{price} - {d}", price - d)
    t = s.step(f"Price of {k} {many}", f"{p} * {k}", p * k)
    s.step("Total with delivery", f"{t} + {ship}", t + ship)
    return (
        f"A store sells one {one} for ${price}. During a sale, everything is {pct}% off. {name} buys {k} {many} "
        f"and pays ${ship} for delivery. How many dollars does {name} pay in total?"
    )


def _l4_salary(rng: random.Random, s: _Solution) -> str:
    name, buy = rng.choice(WORDS.names), rng.choice(WORDS.big_buys)
    p, q = rng.choice(_FRACTIONS[:7])
    pay, months = q * rng.randint(600 // q, 3000 // q), rng.randint(3, 12)
    saved = pay * p // q * months
    spend = rng.randint(saved // 3, saved * 9 // 10)
    m = s.step("Savings each month", f"{pay} * {p} / {q}", pay * p // q)
    t = s.step(f"Savings after {months} months", f"{m} * {months}", m * months)
    s.step("Savings left", f"{t} - {spend}", t - spend)
    return (
        f"{name} earns ${pay} each month and saves {p}/{q} of it. After {months} months, {name} spends ${spend} "
        f"on a {buy}. How many dollars of the savings are left?"
    )


def _l4_acres(rng: random.Random, s: _Solution) -> str:
    p, q = rng.choice(_FRACTIONS)
    k = rng.randint(2, 5)
    while True:
        acres = rng.randint(60, 600)
        if acres * p % q == 0 and (acres - acres * p // q) % k == 0:
            break
    corn = s.step("Acres of corn", f"{acres} * {p} / {q}", acres * p // q)
    rest = s.step("Acres left after the corn", f"{acres} - {corn}", acres - corn)
    wheat = s.step("Acres of wheat", f"{rest} / {k}", rest // k)
    s.step("Acres of grass", f"{rest} - {wheat}", rest - wheat)
    return (
        f"A farm has {acres} acres of land. {p}/{q} of the land is planted with corn. 1/{k} of the remaining land "
        "is planted with wheat, and the rest is grass. How many acres are grass?"
    )


def _l4_road_trip(rng: random.Random, s: _Solution) -> str:
    name = rng.choice(WORDS.names)
    pct, more = rng.choice([20, 25, 30, 35]), rng.randrange(10, 65, 5)
    while True:
        dist = 20 * rng.randint(12, 45)
        if dist - 2 * (dist * pct // 100) - more > 0:
            break
    d1 = s.step("Distance on day 1", f"{dist} * {pct} / 100", dist * pct // 100)
    d2 = s.step("Distance on day 2", f"{d1} + {more}", d1 + more)
    both = s.step("Distance in the first two days", f"{d1} + {d2}", d1 + d2)
    s.step("Distance left for day 3", f"{dist} - {both}", dist - both)
    return (
        f"{name} plans a {dist} km road trip. On day 1, {name} drives {pct}% of the distance. On day 2, {name} "
        f"drives {more} km more than on day 1. How many kilometres are left for day 3?"
    )


def _l4_factory(rng: random.Random, s: _Solution) -> str:
    pct = rng.choice([2, 4, 5, 10])
    while True:
        rate, hours, days = rng.randint(20, 90), rng.randint(6, 10), rng.randint(3, 7)
        if rate * hours * days * pct % 100 == 0:
            break
    per_day = s.step("Parts made per day", f"{rate} * {hours}", rate * hours)
    total = s.step(f"Parts made in {days} days", f"{per_day} * {days}", per_day * days)
    bad = s.step("Faulty parts", f"{total} * {pct} / 100", total * pct // 100)
    s.step("Good parts", f"{total} - {bad}", total - bad)
    return (
        f"A machine makes {rate} parts per hour and runs {hours} hours a day. After {days} days, {pct}% of the "
        "parts are found to be faulty. How many good parts did the machine make?"
    )


def _l4_bakery(rng: random.Random, s: _Solution) -> str:
    cakes, cake_price = rng.randint(12, 60), rng.randint(8, 25)
    muffins, muffin_price = rng.randint(30, 150), rng.randint(2, 4)
    revenue = cakes * cake_price + muffins * muffin_price
    costs = rng.randint(revenue // 3, revenue * 4 // 5)
    x = s.step("Money from cakes", f"{cakes} * {cake_price}", cakes * cake_price)
    y = s.step("Money from muffins", f"{muffins} * {muffin_price}", muffins * muffin_price)
    r = s.step("Total sales", f"{x} + {y}", x + y)
    s.step("Profit", f"{r} - {costs}", r - costs)
    return (
        f"In one week, a bakery sells {cakes} cakes at ${cake_price} each and {muffins} muffins at ${muffin_price} "
        f"each. Its costs for the week are ${costs}. What is the bakery's profit for the week in dollars?"
    )


def _l4_school(rng: random.Random, s: _Solution) -> str:
    students, pct, k = 20 * rng.randint(10, 45), rng.choice([40, 45, 50, 55, 60]), rng.randint(2, 5)
    boys = s.step("Boys", f"{students} * {pct} / 100", students * pct // 100)
    girls = s.step("Girls", f"{students} - {boys}", students - boys)
    s.step("Pencils needed", f"{girls} * {k}", girls * k)
    return (
        f"A school has {students} students, and {pct}% of them are boys. Each girl receives {k} new pencils. "
        "How many pencils are needed?"
    )


def _l4_bookstore(rng: random.Random, s: _Solution) -> str:
    p, q = rng.choice(_FRACTIONS)
    books = q * rng.randint(150 // q, 900 // q)
    sold1 = books * p // q
    arrived = rng.randint(20, 200)
    sold2 = rng.randint(10, books - sold1 + arrived - 10)
    x = s.step("Books sold on Saturday", f"{books} * {p} / {q}", sold1)
    y = s.step("Books left after Saturday", f"{books} - {x}", books - x)
    z = s.step("Books after the delivery", f"{y} + {arrived}", y + arrived)
    s.step("Books left after Sunday", f"{z} - {sold2}", z - sold2)
    return (
        f"A bookstore had {books} books. On Saturday it sold {p}/{q} of them. On Sunday morning a delivery of "
        f"{arrived} books arrived, and during Sunday it sold {sold2} books. How many books does the store have now?"
    )


# --- level 5: five or six steps mixing operations, numbers in the thousands ---


def _l5_orchard(rng: random.Random, s: _Solution) -> str:
    while True:
        rows, per_row, kg = rng.randint(8, 25), rng.randint(10, 30), rng.randint(20, 60)
        q, bag, price = rng.choice([4, 5, 10]), rng.choice([5, 10, 20, 25]), rng.randint(3, 12)
        total = rows * per_row * kg
        if total % q == 0 and (total - total // q) % bag == 0:
            break
    trees = s.step("Trees in the orchard", f"{rows} * {per_row}", rows * per_row)
    apples = s.step("Kilograms of apples", f"{trees} * {kg}", trees * kg)
    bruised = s.step("Kilograms used for juice", f"{apples} / {q}", apples // q)
    good = s.step("Kilograms left to sell", f"{apples} - {bruised}", apples - bruised)
    bags = s.step("Bags filled", f"{good} / {bag}", good // bag)
    s.step("Money from the bags", f"{bags} * {price}", bags * price)
    return (
        f"An orchard has {rows} rows of {per_row} apple trees. Each tree gives {kg} kg of apples. 1/{q} of the "
        f"apples are bruised and are made into juice. The rest are sold in {bag} kg bags for ${price} per bag. "
        "How many dollars does the orchard make from the bags?"
    )


def _l5_cupcakes(rng: random.Random, s: _Solution) -> str:
    per_batch = rng.choice([12, 24])
    while True:
        batches, grams = rng.randint(4, 40), rng.choice([200, 250, 400, 500, 600, 750])
        if batches * grams % 1000 == 0:
            break
    cupcakes, bag_price, deco = batches * per_batch, rng.randint(2, 6), rng.randint(1, 3)
    b = s.step("Batches needed", f"{cupcakes} / {per_batch}", batches)
    g = s.step("Grams of flour", f"{b} * {grams}", b * grams)
    bags = s.step("Bags of flour", f"{g} / 1000", g // 1000)
    flour = s.step("Cost of the flour", f"{bags} * {bag_price}", bags * bag_price)
    dec = s.step("Cost of the decorations", f"{cupcakes} * {deco}", cupcakes * deco)
    s.step("Total cost", f"{flour} + {dec}", flour + dec)
    return (
        f"A bakery gets an order for {cupcakes} cupcakes. One batch makes {per_batch} cupcakes and uses {grams} "
        f"grams of flour. Flour comes in 1000-gram bags that cost ${bag_price} each, and decorations cost ${deco} "
        "per cupcake. What is the total cost of the flour and the decorations in dollars?"
    )


def _l5_school_trip(rng: random.Random, s: _Solution) -> str:
    seats, buses, teachers = rng.choice([30, 40, 45, 50]), rng.randint(3, 12), rng.randint(4, 20)
    students = seats * buses - teachers
    rent, ticket = rng.randrange(150, 610, 10), rng.randint(5, 25)
    people = s.step("People on the trip", f"{students} + {teachers}", students + teachers)
    b = s.step("Buses needed", f"{people} / {seats}", buses)
    bus_cost = s.step("Cost of the buses", f"{b} * {rent}", b * rent)
    tickets = s.step("Cost of the tickets", f"{students} * {ticket}", students * ticket)
    s.step("Total cost", f"{bus_cost} + {tickets}", bus_cost + tickets)
    return (
        f"A school takes {students} students and {teachers} teachers on a museum trip. Each bus holds {seats} "
        f"people, and every bus is filled exactly. Renting one bus costs ${rent}. Tickets cost ${ticket} per "
        "student, and teachers enter free. What is the total cost of the buses and tickets in dollars?"
    )


def _l5_savings_plan(rng: random.Random, s: _Solution) -> str:
    name, other = rng.sample(WORDS.names, 2)
    (_, many), parts = rng.choice(WORDS.goods), rng.choice([2, 3, 4])
    while True:
        wage, pct, weeks = 20 * rng.randint(10, 60), rng.choice([10, 15, 20, 25]), rng.randint(8, 30)
        gift, k, price = rng.randrange(50, 510, 10), rng.randint(2, 5), rng.randint(40, 250)
        left = wage * pct // 100 * weeks + gift - k * price
        if left > 0 and left % parts == 0:
            break
    w = s.step("Saved each week", f"{wage} * {pct} / 100", wage * pct // 100)
    saved = s.step(f"Saved in {weeks} weeks", f"{w} * {weeks}", w * weeks)
    total = s.step("Savings with the gift", f"{saved} + {gift}", saved + gift)
    spent = s.step(f"Cost of the {many}", f"{k} * {price}", k * price)
    rest = s.step("Money left", f"{total} - {spent}", total - spent)
    s.step("Money in each account", f"{rest} / {parts}", rest // parts)
    return (
        f"{name} earns ${wage} a week and saves {pct}% of it. After {weeks} weeks, {other} adds a gift of ${gift} "
        f"to the savings. {name} then buys {k} {many} at ${price} each and splits the money that is left equally "
        f"into {parts} accounts. How many dollars go into each account?"
    )


def _l5_shop(rng: random.Random, s: _Solution) -> str:
    stock = rng.choice(WORDS.shop_stock)
    while True:
        p, q = rng.choice(_FRACTIONS)
        n, cost = q * rng.randint(100 // q + 1, 600 // q), rng.randint(4, 30)
        price = cost + rng.randint(5, 25)
        sale = price - rng.randint(2, price - 2)
        sold = n * p // q
        if sold * price + (n - sold) * sale >= n * cost:
            break
    c = s.step("Cost of the stock", f"{n} * {cost}", n * cost)
    a = s.step("Items sold at full price", f"{n} * {p} / {q}", sold)
    r1 = s.step("Money at full price", f"{a} * {price}", a * price)
    b = s.step("Items sold at the sale price", f"{n} - {a}", n - a)
    r2 = s.step("Money at the sale price", f"{b} * {sale}", b * sale)
    s.step("Profit", f"{r1} + {r2} - {c}", r1 + r2 - c)
    return (
        f"A shop buys {n} {stock} for ${cost} each. It sells {p}/{q} of them at ${price} each and the rest at a "
        f"sale price of ${sale} each. How many dollars of profit does the shop make?"
    )


def _l5_journey(rng: random.Random, s: _Solution) -> str:
    s1, t1 = rng.randrange(40, 110, 10), rng.randint(2, 5)
    s2, t2 = rng.randrange(30, 100, 10), rng.randint(1, 4)
    a, b, stop = s1 * t1, s2 * t2, rng.randrange(15, 95, 5)
    h1 = s.step("Hours for the first part", f"{a} / {s1}", t1)
    h2 = s.step("Hours for the second part", f"{b} / {s2}", t2)
    h = s.step("Hours of driving", f"{h1} + {h2}", h1 + h2)
    m = s.step("Minutes of driving", f"{h} * 60", h * 60)
    s.step("Minutes for the whole journey", f"{m} + {stop}", m + stop)
    return (
        f"A coach travels {a} km at {s1} km per hour, then {b} km at {s2} km per hour. Along the way it stops "
        f"for a {stop}-minute break. How many minutes does the whole journey take?"
    )


def _l5_warehouse(rng: random.Random, s: _Solution) -> str:
    while True:
        pallets, boxes, per_box = rng.randint(10, 60), rng.randint(10, 40), rng.choice([6, 12, 24])
        p, q = rng.choice(_FRACTIONS)
        bottles = pallets * boxes * per_box
        if bottles * p % q == 0:
            break
    tuesday = rng.randint(bottles // 10, (bottles - bottles * p // q) * 9 // 10)
    b = s.step("Boxes in the warehouse", f"{pallets} * {boxes}", pallets * boxes)
    n = s.step("Bottles in the warehouse", f"{b} * {per_box}", b * per_box)
    mon = s.step("Bottles shipped on Monday", f"{n} * {p} / {q}", n * p // q)
    after = s.step("Bottles left after Monday", f"{n} - {mon}", n - mon)
    s.step("Bottles left after Tuesday", f"{after} - {tuesday}", after - tuesday)
    return (
        f"A warehouse has {pallets} pallets. Each pallet holds {boxes} boxes, and each box holds {per_box} bottles "
        f"of juice. On Monday it ships {p}/{q} of the bottles, and on Tuesday it ships {tuesday} more bottles. "
        "How many bottles are left in the warehouse?"
    )


def _l5_garden(rng: random.Random, s: _Solution) -> str:
    name = rng.choice(WORDS.names)
    while True:
        length, width, cover = rng.randint(8, 40), rng.randint(5, 30), rng.choice([10, 20, 25, 50])
        if length * width % cover == 0:
            break
    fence_price, seed_price = rng.randint(3, 15), rng.randint(6, 20)
    perim = s.step("Length of fence", f"2 * ({length} + {width})", 2 * (length + width))
    fence = s.step("Cost of the fence", f"{perim} * {fence_price}", perim * fence_price)
    area = s.step("Area of the garden", f"{length} * {width}", length * width)
    bags = s.step("Bags of grass seed", f"{area} / {cover}", area // cover)
    seed = s.step("Cost of the seed", f"{bags} * {seed_price}", bags * seed_price)
    s.step("Total cost", f"{fence} + {seed}", fence + seed)
    return (
        f"{name} has a rectangular garden {length} m long and {width} m wide. Fencing all the way around costs "
        f"${fence_price} per metre. One bag of grass seed covers {cover} square metres and costs ${seed_price}. "
        f"How many dollars does {name} spend on the fence and enough seed to cover the whole garden?"
    )


_MATH_TEMPLATES: dict[int, list[_Template]] = {
    1: [_l1_market, _l1_bus, _l1_class, _l1_piggy, _l1_farm, _l1_bakery, _l1_walk, _l1_shelf],
    2: [_l2_give, _l2_bus, _l2_savings, _l2_trip, _l2_class, _l2_eggs, _l2_garden, _l2_game],
    3: [_l3_supplies, _l3_flour, _l3_groups, _l3_cartons, _l3_drive, _l3_weekly, _l3_share, _l3_museum],
    4: [_l4_sale, _l4_salary, _l4_acres, _l4_road_trip, _l4_factory, _l4_bakery, _l4_school, _l4_bookstore],
    5: [
        _l5_orchard,
        _l5_cupcakes,
        _l5_school_trip,
        _l5_savings_plan,
        _l5_shop,
        _l5_journey,
        _l5_warehouse,
        _l5_garden,
    ],
}

_MATH_INSTRUCTION = "Give the final answer after ####."


def sample_math(n: int = 500, *, seed: int = 0) -> list[dict]:
    """Arithmetic word problems in five graded levels, with step-by-step solutions and integer answers.

    Row ``i`` has level ``i % 5 + 1``, so any ``n`` is balanced across levels (100 each when ``n=500``).
    Level 1 is one small addition or subtraction; level 5 is five or six mixed steps with numbers in the
    thousands. ``prompt`` and the user turn of ``messages`` carry the same text; the assistant turn shows
    one ``<label>: <expression> = <value>.`` line per step and ends with ``#### <answer>``.

    >>> rows = sample_math(5, seed=0)
    >>> [r["level"] for r in rows]
    [1, 2, 3, 4, 5]
    >>> rows[0]["messages"][-1]["content"].endswith("#### " + rows[0]["answer"])
    True
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    # A string seed keeps this stream apart from sample_sft's for the same integer seed; str seeds hash with
    # sha512, so they are stable across processes (unlike hash()).
    rng = random.Random(f"sample-math:{seed}")
    rows: list[dict] = []
    seen: set[str] = set()
    for i in range(n):
        level = i % 5 + 1
        for _ in range(RETRIES):
            solution = _Solution()
            question = rng.choice(_MATH_TEMPLATES[level])(rng, solution)
            if question not in seen:
                break
        seen.add(question)
        answer = str(solution.values[-1])
        user = f"{question} {_MATH_INSTRUCTION}"
        rows.append(
            {
                "id": f"math-{i:05d}",
                "prompt": [{"role": "user", "content": user}],
                "answer": answer,
                "messages": [
                    {"role": "user", "content": user},
                    {"role": "assistant", "content": "\n".join([*solution.lines, f"#### {answer}"])},
                ],
                "level": level,
                "data_source": "sample-math",
            }
        )
    return rows
