"""``sample-sft``: instruction/response conversations of eleven kinds, one generator per kind.

Each generator draws from the seeded ``rng`` and returns ``[(user, assistant), ...]`` with every number in the
reply computed, not written; the wording it picks from and the glossary and recipes it explains live in
``data/*.json``. The order of draws inside a generator is part of the dataset: changing it changes the rows of
every seed.
"""

from __future__ import annotations

import json
import operator
import random
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

from curate.samples._data import ARTICLES, GLOSSARY, RECIPES, RETRIES, WORDS

_VOWELS = "aeiou"


def _a(term: str) -> str:
    """The term with its article: 'a cache', 'the median', 'recursion'."""
    return f"{ARTICLES[term]} {term}" if term in ARTICLES else term


def _num(x: Fraction | int | float) -> str:
    """A number as people write it: integers plain, everything else rounded to 2 decimals without trailing zeros."""
    f = Fraction(x)
    if f.denominator == 1:
        return str(f.numerator)
    d = (Decimal(f.numerator) / Decimal(f.denominator)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    text = format(d.normalize(), "f")
    return "0" if text == "-0" else text


def _exact(x: Fraction) -> bool:
    """Whether ``_num`` shows ``x`` without rounding."""
    return (x * 100).denominator == 1


def _approx(x: Fraction) -> str:
    """'= 0.25' when ``_num`` is exact, else '≈ 0.29'."""
    return f"{'=' if _exact(x) else '≈'} {_num(x)}"


def _join(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _plural(k: int, word: str) -> str:
    return f"{k} {word}{'' if k == 1 else 's'}"


def _phrase(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.sample(WORDS.words, rng.randint(lo, hi)))


_Turns = list[tuple[str, str]]


def _sft_arithmetic(rng: random.Random) -> _Turns:
    variant = rng.choice(["short", "add", "sub", "mul", "div", "order", "percent"])
    if variant == "short":
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        sym, value = rng.choice([("+", a + b), ("-", a - b), ("×", a * b)])
        ask = rng.choice(["What is {e}? Reply with just the number.", "Quick: {e} = ?", "Compute {e}. Number only."])
        return [(ask.format(e=f"{a} {sym} {b}"), str(value))]
    if variant in ("add", "sub"):
        a, b = rng.randint(120, 999), rng.randint(12, 899)
        if variant == "sub" and b > a:
            a, b = b, a
        parts = [int(d) * 10**p for p, d in enumerate(reversed(str(b))) if d != "0"][::-1]
        sym, op = ("+", operator.add) if variant == "add" else ("-", operator.sub)
        verb = "add" if variant == "add" else "subtract"
        lines, acc = [], a
        for part in parts:
            lines.append(f"{acc} {sym} {part} = {op(acc, part)}")
            acc = op(acc, part)
        ask = rng.choice(
            ["What is {a} {s} {b}? Show your steps.", "Work out {a} {s} {b} step by step.", "Calculate {a} {s} {b}."]
        )
        split = f"Split {b} into {' + '.join(map(str, parts))} and {verb} one part at a time:"
        body = "\n".join([*([split] if len(parts) > 1 else []), *lines, f"So {a} {sym} {b} = {acc}."])
        return [(ask.format(a=a, s=sym, b=b), body)]
    if variant == "mul":
        a, b = rng.randint(12, 99), rng.randint(12, 99)
        tens, ones = b - b % 10, b % 10
        if ones == 0:
            body = f"{a} × {b} = {a} × {b // 10} × 10 = {a * (b // 10)} × 10 = {a * b}.\nSo {a} × {b} = {a * b}."
        else:
            body = (
                f"Break {b} into {tens} + {ones}, multiply {a} by each part, then add:\n"
                f"{a} × {tens} = {a * tens}\n{a} × {ones} = {a * ones}\n{a * tens} + {a * ones} = {a * b}\n"
                f"So {a} × {b} = {a * b}."
            )
        ask = rng.choice(["Multiply {a} by {b} and explain how.", "What is {a} × {b}? Explain the steps."])
        return [(ask.format(a=a, b=b), body)]
    if variant == "div":
        d, q = rng.randint(3, 12), rng.randint(10, 99)
        r = rng.randint(0, d - 1)
        a = d * q + r
        body = f"The largest multiple of {d} that is not more than {a} is {d} × {q} = {d * q}.\n"
        if r:
            body += (
                f"{a} - {d * q} = {r} is left over.\nSo {a} ÷ {d} = {q} remainder {r}, "
                f"which is about {_num(Fraction(a, d))} as a decimal."
            )
        else:
            body += f"Nothing is left over, so {a} ÷ {d} = {q} exactly."
        return [(rng.choice(["Divide {a} by {d}.", "What is {a} ÷ {d}? Show the working."]).format(a=a, d=d), body)]
    if variant == "order":
        a, b, c, e = rng.randint(2, 30), rng.randint(2, 12), rng.randint(2, 12), rng.randint(2, 9)
        d = e * rng.randint(2, 12)
        bc, de = b * c, d // e
        expr = f"{a} + {b} × {c} - {d} ÷ {e}"
        body = (
            "Multiplication and division come before addition and subtraction.\n"
            f"{b} × {c} = {bc}\n{d} ÷ {e} = {de}\n"
            f"Now work from left to right: {a} + {bc} = {a + bc}, then {a + bc} - {de} = {a + bc - de}.\n"
            f"So {expr} = {a + bc - de}."
        )
        ask = rng.choice(["Evaluate {x}.", "What is the value of {x}? Mind the order of operations."])
        return [(ask.format(x=expr), body)]
    pct, base = rng.choice([5, 10, 12, 15, 20, 25, 30, 40, 75]), 20 * rng.randint(2, 50)
    value = Fraction(base * pct, 100)
    body = (
        f"To find {pct}% of {base}, multiply by {pct} and divide by 100.\n"
        f"{base} × {pct} = {base * pct}\n{base * pct} ÷ 100 = {_num(value)}\n"
        f"So {pct}% of {base} is {_num(value)}."
    )
    return [(rng.choice(["What is {p}% of {b}?", "Calculate {p} percent of {b}."]).format(p=pct, b=base), body)]


def _convert(rng: random.Random) -> tuple[Fraction, str, Fraction, str, str, str]:
    """A random conversion: (value, from unit, result, to unit, fact, operation)."""
    conversion = rng.choice(WORDS.conversions)
    # ``factor`` is a decimal string, so the conversion is exact and the text shows it as written
    src, dst, factor_text, fact = (conversion[k] for k in ("from", "to", "factor", "fact"))
    factor = Fraction(factor_text)
    value = Fraction(rng.choice([rng.randint(2, 60), Fraction(rng.randint(11, 99), 10)]))
    if rng.random() < 0.3 and factor.denominator == 1:  # the reverse direction, from a value that divides nicely
        big = value * factor if value.denominator == 1 else Fraction(rng.randint(2, 40)) * factor
        return big, dst, big / factor, src, fact, f"divide by {factor_text}"
    return value, src, value * factor, dst, fact, f"multiply by {factor_text}"


def _sft_unit_conversion(rng: random.Random) -> _Turns:
    if rng.random() < 0.15:
        c = rng.randint(-20, 40)
        f = Fraction(c * 9, 5) + 32
        body = (
            "To convert Celsius to Fahrenheit, multiply by 9/5 and then add 32.\n"
            f"{c} × 9/5 = {_num(Fraction(c * 9, 5))}\n{_num(Fraction(c * 9, 5))} + 32 = {_num(f)}\n"
            f"So {c} °C is {'' if _exact(f) else 'about '}{_num(f)} °F."
        )
        return [(f"Convert {c} degrees Celsius to Fahrenheit.", body)]
    value, src, result, dst, fact, how = _convert(rng)
    about = "" if _exact(result) else "about "
    if rng.random() < 0.3:
        ask = rng.choice(["Convert {v} {s} to {d}. Answer only.", "{v} {s} in {d}? Just the number and unit."])
        return [(ask.format(v=_num(value), s=src, d=dst), f"{about}{_num(result)} {dst}".capitalize())]
    sym = "×" if how.startswith("multiply") else "÷"
    factor = how.split()[-1]
    body = (
        f"Since {fact}, {how} to go from {src} to {dst}.\n"
        f"{_num(value)} {sym} {factor} = {_num(result)}\n"
        f"So {_num(value)} {src} is {about}{_num(result)} {dst}."
    )
    ask = rng.choice(["How many {d} are in {v} {s}?", "Convert {v} {s} to {d}.", "What is {v} {s} in {d}?"])
    return [(ask.format(v=_num(value), s=src, d=dst), body)]


def _sft_list_ops(rng: random.Random) -> _Turns:
    nums = [rng.randint(1, 99) for _ in range(rng.randint(4, 12))]
    shown = ", ".join(map(str, nums))
    variant = rng.choice(["asc", "desc", "reverse", "minmax", "sum", "mean", "dedupe", "alpha", "bylength", "short"])
    if variant == "asc":
        user = f"Sort these numbers from smallest to largest: {shown}"
        reply = f"From smallest to largest: {', '.join(map(str, sorted(nums)))}."
        return [(user, reply)]
    if variant == "desc":
        user = f"Put these numbers in descending order: {shown}"
        reply = f"In descending order: {', '.join(map(str, sorted(nums, reverse=True)))}."
        return [(user, reply)]
    if variant == "reverse":
        return [(f"Reverse this list: [{shown}]", f"[{', '.join(map(str, nums[::-1]))}]")]
    if variant == "minmax":
        lo, hi = min(nums), max(nums)
        user = f"What are the smallest and largest numbers in this list? {shown}"
        reply = f"The smallest number is {lo} and the largest is {hi}, so the range is {hi} - {lo} = {hi - lo}."
        return [(user, reply)]
    if variant == "sum":
        running, lines = 0, []
        for x in nums:
            lines.append(f"{running} + {x} = {running + x}")
            running += x
        user = f"Add up these numbers and show a running total: {shown}"
        reply = "Running total:\n" + "\n".join(lines[1:]) + f"\nThe sum is {running}."
        return [(user, reply)]
    if variant == "mean":
        total = sum(nums)
        mean = Fraction(total, len(nums))
        about = "" if _exact(mean) else "about "
        user = f"What is the mean of {shown}?"
        reply = (
            f"Add the {len(nums)} numbers: the sum is {total}.\nDivide by how many there are: "
            f"{total} ÷ {len(nums)} = {_num(mean)}.\nThe mean is {about}{_num(mean)}."
        )
        return [(user, reply)]
    if variant == "dedupe":
        nums = nums + rng.sample(nums, rng.randint(1, len(nums) // 2 + 1))
        rng.shuffle(nums)
        unique = list(dict.fromkeys(nums))
        user = (
            f"Remove the duplicates from this list, keeping the first occurrence of each number: "
            f"{', '.join(map(str, nums))}"
        )
        reply = f"{', '.join(map(str, unique))} ({_plural(len(nums) - len(unique), 'duplicate')} removed)."
        return [(user, reply)]
    words = rng.sample(WORDS.words, rng.randint(4, 9))
    if variant == "alpha":
        return [(f"Sort these words alphabetically: {', '.join(words)}", ", ".join(sorted(words)))]
    if variant == "bylength":
        ordered = sorted(words, key=len)
        user = f"Order these words from shortest to longest: {', '.join(words)}"
        reply = "\n".join(f"{w} ({len(w)} letters)" for w in ordered)
        return [(user, reply)]
    return [(f"Largest of {shown}? Number only.", str(max(nums)))]


def _sft_string_ops(rng: random.Random) -> _Turns:
    phrase = _phrase(rng, 2, 6)
    variant = rng.choice(
        [
            "upper",
            "title",
            "vowels",
            "vowels_short",
            "reverse_words",
            "reverse_chars",
            "count_words",
            "count_letter",
            "palindrome",
            "acronym",
        ]
    )
    if variant == "upper":
        ask = rng.choice(["Convert to uppercase: {p}", "Write this in capital letters: {p}"])
        return [(ask.format(p=phrase), phrase.upper())]
    if variant == "title":
        return [(f"Capitalise the first letter of every word: {phrase}", phrase.title())]
    if variant in ("vowels", "vowels_short"):
        counts = [(w, [c for c in w if c in _VOWELS]) for w in phrase.split()]
        total = sum(len(v) for _, v in counts)
        if variant == "vowels_short":
            return [(f"How many vowels are in '{phrase}'? Reply with a number.", str(total))]
        lines = [f"- {w}: {len(v)} ({', '.join(v) if v else 'none'})" for w, v in counts]
        user = f"Count the vowels (a, e, i, o, u) in '{phrase}' word by word."
        reply = "\n".join(lines) + f"\nTotal: {total} vowels."
        return [(user, reply)]
    if variant == "reverse_words":
        return [(f"Reverse the order of the words in: {phrase}", " ".join(phrase.split()[::-1]))]
    if variant == "reverse_chars":
        word = rng.choice(WORDS.words)
        return [(f"Spell '{word}' backwards.", word[::-1])]
    if variant == "count_words":
        words = phrase.split()
        return [(f"How many words are in this phrase? {phrase}", f"There are {len(words)} words: {', '.join(words)}.")]
    if variant == "count_letter":
        letter = rng.choice(sorted(set(phrase.replace(" ", ""))))
        hits = [w for w in phrase.split() if letter in w]
        k = phrase.count(letter)
        where = ", ".join(f"{w} ({w.count(letter)})" for w in hits)
        user = f"How many times does the letter '{letter}' appear in '{phrase}'?"
        reply = f"The letter '{letter}' appears {k} time{'s' if k != 1 else ''}: {where}."
        return [(user, reply)]
    if variant == "palindrome":
        word = rng.choice(WORDS.palindromes + WORDS.words[:10])
        rev = word[::-1]
        verdict = "is a palindrome" if rev == word else "is not a palindrome"
        same = "the same" if rev == word else "different"
        user = f"Is '{word}' a palindrome?"
        reply = f"Reversed, '{word}' reads '{rev}', which is {same}, so '{word}' {verdict}."
        return [(user, reply)]
    return [(f"Make an acronym from the first letters of: {phrase}", "".join(w[0] for w in phrase.split()).upper())]


def _sft_definition(rng: random.Random) -> _Turns:
    term = rng.choice(list(GLOSSARY))
    ask = rng.choice(
        [
            "Define '{t}'.",
            "What does '{t}' mean?",
            "In one sentence, what is {at}?",
            "What is {at}?",
            "Give me a short definition of the term '{t}'.",
        ]
    )
    return [(ask.format(t=term, at=_a(term)), GLOSSARY[term].definition)]


def _explain(term: str, rng: random.Random, *, related: int) -> str:
    t = GLOSSARY[term]
    parts = [f"{t.definition} {t.detail}", f"For example: {t.example}"]
    others = rng.sample(t.related, min(related, len(t.related)))
    if len(others) == 1:
        parts.append(f"A related idea is {_a(others[0])}. {GLOSSARY[others[0]].definition}")
    elif others:
        parts.append("Related ideas:\n" + "\n".join(f"- {o}: {GLOSSARY[o].definition}" for o in others))
    return "\n\n".join(parts)


def _sft_explain_concept(rng: random.Random) -> _Turns:
    term = rng.choice(list(GLOSSARY))
    ask = rng.choice(
        [
            "Explain what {at} is to a beginner.",
            "Can you explain what {at} is and why it matters?",
            "How would you describe {at} to a friend? Include an example.",
            "Explain what {at} is in detail, and mention related ideas.",
        ]
    )
    related = 3 if "detail" in ask else rng.randint(0, 1)
    return [(ask.format(at=_a(term)), _explain(term, rng, related=related))]


def _sft_study_guide(rng: random.Random) -> _Turns:
    category = rng.choice(sorted({t.category for t in GLOSSARY.values()}))
    terms = rng.sample([k for k, t in GLOSSARY.items() if t.category == category], rng.randint(3, 4))
    sections = [f"# Study guide: {category[0].upper() + category[1:]}"]
    for term in terms:
        t = GLOSSARY[term]
        sections.append(f"## {term[0].upper() + term[1:]}\n{t.definition} {t.detail}\nExample: {t.example}")
    sections.append("## Key takeaways\n" + "\n".join(f"- {t}: {GLOSSARY[t].definition}" for t in terms))
    sections.append(
        "## Check yourself\n"
        + "\n".join(
            f"{i}. In your own words, what is {_a(t)}, and where might you meet it?" for i, t in enumerate(terms, 1)
        )
    )
    ask = rng.choice(
        [
            "Write a short study guide on {c} that covers {t}.",
            "I have a test on {c}. Make me a study guide covering {t}.",
            "Create revision notes about {t} ({c}).",
        ]
    )
    return [(ask.format(c=category, t=_join(terms)), "\n\n".join(sections))]


def _record(rng: random.Random) -> tuple[str, dict]:
    """A prose description and the JSON object it describes."""
    kind = rng.choice(["person", "product", "event", "book"])
    if kind == "person":
        name, age, city = (
            f"{rng.choice(WORDS.names)} {rng.choice(WORDS.surnames)}",
            rng.randint(18, 80),
            rng.choice(WORDS.cities),
        )
        return f"{name} is {age} years old and lives in {city}.", {"name": name, "age": age, "city": city}
    if kind == "product":
        name, price, stock = rng.choice(WORDS.products), rng.randint(300, 9999) / 100, rng.randint(0, 200)
        colors = rng.sample(WORDS.colors, rng.randint(1, 3))
        text = f"The {name} costs {price:.2f} dollars, has {stock} units in stock and comes in {_join(colors)}."
        return text, {"name": name, "price": price, "in_stock": stock, "colors": colors}
    if kind == "event":
        event, venue, city = rng.choice(WORDS.events), rng.choice(WORDS.venues), rng.choice(WORDS.cities)
        date, seats = f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}", 10 * rng.randint(3, 60)
        text = f"The {event} takes place on {date} at the {venue} in {city}, with {seats} seats available."
        return text, {"event": event, "date": date, "location": {"venue": venue, "city": city}, "seats": seats}
    title = f"The {rng.choice(WORDS.words).title()} {rng.choice(WORDS.words).title()}"
    author, year = f"{rng.choice(WORDS.names)} {rng.choice(WORDS.surnames)}", rng.randint(1950, 2024)
    tags = rng.sample(WORDS.book_tags, 2)
    return (
        f"'{title}' was written by {author} in {year}; it is tagged {tags[0]} and {tags[1]}.",
        {"title": title, "author": author, "year": year, "tags": tags},
    )


def _sft_json_format(rng: random.Random) -> _Turns:
    if rng.random() < 0.25:
        names = rng.sample(WORDS.names, rng.randint(2, 5))
        scores = [rng.randint(40, 100) for _ in names]
        text = ", ".join(f"{n} scored {s}" for n, s in zip(names, scores, strict=True))
        data: dict | list = [{"name": n, "score": s} for n, s in zip(names, scores, strict=True)]
        ask = f"Turn this into a JSON array of objects with the keys name and score: {text}."
    else:
        text, data = _record(rng)
        ask = rng.choice(
            [
                f"Format this as JSON with the keys {_join(list(data))}: {text}",
                f"Return only a JSON object describing this: {text}",
            ]
        )
    blob = json.dumps(data, indent=2, ensure_ascii=False)
    if "only" in ask or rng.random() < 0.5:
        return [(ask, blob)]
    return [(ask, f"Here is the JSON:\n```json\n{blob}\n```")]


def _ingredient(amount: Fraction, unit: str, item: str | tuple[str, str]) -> str:
    if unit == "":
        singular, plural = item  # type: ignore[misc]
        return f"{_num(amount)} {singular if amount == 1 else plural}"
    return f"{_num(amount)} {unit} {item}"


def _sft_recipe(rng: random.Random) -> _Turns:
    recipe = rng.choice(RECIPES)
    people = rng.randint(1, 8)
    fill = {slot: rng.choice(options) for slot, options in recipe.slots.items()}
    ingredients = [
        _ingredient(Fraction(amount).limit_denominator(100) * people, unit, item.format(**fill) if unit else item)
        for amount, unit, item in recipe.ingredients
    ]
    steps = [f"{i}. {step.format(**fill)}" for i, step in enumerate(recipe.steps, 1)]
    who = "1 person" if people == 1 else f"{people} people"
    dish = recipe.name
    if rng.random() < 0.25:
        return [(f"List just the numbered steps for making {dish}.", "\n".join(steps))]
    ask = rng.choice(
        [
            f"How do I make {dish} for {who}?",
            f"Give me a simple {dish} recipe for {who}, with numbered steps.",
            f"I'm cooking {dish} for {who}. What do I need and what do I do?",
        ]
    )
    body = (
        f"Here is a simple {dish} for {who}, ready in about {recipe.minutes} minutes.\n\n"
        "Ingredients:\n" + "\n".join(f"- {x}" for x in ingredients) + "\n\nSteps:\n" + "\n".join(steps)
    )
    if rng.random() < 0.6:
        body += f"\n\nTip: {rng.choice(recipe.tips)}"
    return [(ask, body)]


def _sft_comparison(rng: random.Random) -> _Turns:
    variant = rng.choice(["fractions", "decimal", "order", "units", "short"])
    if variant == "fractions":
        b, d = rng.randint(2, 12), rng.randint(2, 12)
        a, c = rng.randint(1, b - 1), rng.randint(1, d - 1)
        left, right = a * d, c * b
        if left == right:
            verdict = f"The cross products are equal, so {a}/{b} and {c}/{d} are the same size."
        else:
            big = f"{a}/{b}" if left > right else f"{c}/{d}"
            verdict = f"Since {left} {'>' if left > right else '<'} {right}, {big} is larger."
        body = (
            f"Cross-multiply: {a} × {d} = {left} and {c} × {b} = {right}.\n{verdict}"
            f"\nAs decimals: {a}/{b} {_approx(Fraction(a, b))} and {c}/{d} {_approx(Fraction(c, d))}."
        )
        return [(f"Which is larger, {a}/{b} or {c}/{d}?", body)]
    if variant == "decimal":
        b = rng.randint(3, 12)
        a = rng.randint(1, b - 1)
        x = Fraction(round(Fraction(a, b) * 100 + rng.choice([-3, -1, 1, 2])), 100)
        frac = Fraction(a, b)
        word = "greater" if x > frac else "less"
        body = (
            f"Write {a}/{b} as a decimal: {a} ÷ {b} {_approx(frac)}.\n"
            f"{_num(x)} is {word} than that, so {_num(x)} is {word} than {a}/{b}."
        )
        return [(f"Is {_num(x)} greater or less than {a}/{b}?", body)]
    if variant == "order":
        pairs: set[tuple[int, int]] = set()
        while len({Fraction(*p) for p in pairs}) < 3:
            b = rng.randint(2, 10)
            pairs.add((rng.randint(1, b - 1), b))
        fracs = sorted(pairs, key=lambda p: Fraction(*p))[:3]
        shown = rng.sample(fracs, 3)
        lines = [f"{p}/{q} {_approx(Fraction(p, q))}" for p, q in shown]
        order = ", ".join(f"{p}/{q}" for p, q in fracs)
        ask = f"Order these fractions from smallest to largest: {', '.join(f'{p}/{q}' for p, q in shown)}"
        return [(ask, "Convert each to a decimal:\n" + "\n".join(lines) + f"\nFrom smallest to largest: {order}.")]
    if variant == "units":
        km = Fraction(rng.randint(11, 59), 10)
        m = km * 1000 + rng.choice([-1, 1]) * 100 * rng.randint(1, 5)
        longer = f"{_num(km)} km" if km * 1000 > m else f"{_num(m)} m"
        body = (
            f"Convert to the same unit: {_num(km)} km = {_num(km * 1000)} m.\n"
            f"Compare {_num(km * 1000)} m with {_num(m)} m: {longer} is longer."
        )
        return [(f"Which is longer, {_num(km)} km or {_num(m)} m?", body)]
    # One decimal against a close two-decimal number (0.7 vs 0.65): the pair that trips people who compare digits.
    a = Fraction(rng.randint(1, 9), 10)
    b = a + Fraction(rng.choice([-9, -6, -5, -3, -1, 1, 3, 5, 8, 9]), 100)
    pair = [a, b]
    rng.shuffle(pair)
    return [(f"Which is bigger, {_num(pair[0])} or {_num(pair[1])}? Just the number.", _num(max(pair)))]


def _sft_follow_up(rng: random.Random) -> _Turns:
    variant = rng.choice(["math", "list", "define", "units", "string", "json"])
    if variant == "math":
        a, b, c = rng.randint(3, 40), rng.randint(3, 20), rng.randint(2, 9)
        return [
            (f"What is {a} × {b}?", f"{a} × {b} = {a * b}."),
            (f"Now multiply that by {c}.", f"{a * b} × {c} = {a * b * c}."),
        ]
    if variant == "list":
        nums = [rng.randint(1, 99) for _ in range(rng.randint(5, 10))]
        ordered = sorted(nums)
        evens = [x for x in ordered if x % 2 == 0]
        second = (
            f"The even ones, in order: {', '.join(map(str, evens))}."
            if evens
            else "None of these numbers is even, so the list is empty."
        )
        return [
            (f"Sort these numbers: {', '.join(map(str, nums))}", ", ".join(map(str, ordered))),
            ("Now keep only the even numbers.", second),
        ]
    if variant == "define":
        term = rng.choice(list(GLOSSARY))
        t = GLOSSARY[term]
        return [
            (f"What is {_a(term)}?", t.definition),
            (rng.choice(["Can you give an example?", "Example, please?"]), f"{t.example} {t.detail}"),
        ]
    if variant == "units":
        km = Fraction(rng.randint(11, 99), 10)
        return [
            (
                f"How many metres are in {_num(km)} km?",
                f"{_num(km)} × 1000 = {_num(km * 1000)}, so {_num(km * 1000)} metres.",
            ),
            ("And how many centimetres is that?", f"{_num(km * 1000)} × 100 = {_num(km * 100000)} centimetres."),
        ]
    if variant == "string":
        phrase = _phrase(rng, 3, 6)
        rev = " ".join(phrase.split()[::-1])
        return [(f"Reverse the words in '{phrase}'.", rev), ("Now make it uppercase.", rev.upper())]
    text, data = _record(rng)
    first = json.dumps(data, indent=2, ensure_ascii=False)
    second = json.dumps({**data, "active": True}, indent=2, ensure_ascii=False)
    return [(f"Write this as a JSON object: {text}", first), ('Add a field "active" set to true.', second)]


_SFT_KINDS: dict[str, Callable[[random.Random], _Turns]] = {
    "arithmetic": _sft_arithmetic,
    "unit_conversion": _sft_unit_conversion,
    "list_ops": _sft_list_ops,
    "string_ops": _sft_string_ops,
    "definition": _sft_definition,
    "explain_concept": _sft_explain_concept,
    "study_guide": _sft_study_guide,
    "json_format": _sft_json_format,
    "recipe": _sft_recipe,
    "comparison": _sft_comparison,
    "follow_up": _sft_follow_up,
}

# A quarter of rows open with a system message: enough to teach a model to honour one, few enough that
# most rows look like plain chat.
_SYSTEM_RATE = 0.25


def sample_sft(n: int = 500, *, seed: int = 0) -> list[dict]:
    """Instruction/response conversations of eleven kinds, with computed, correct responses.

    Every block of eleven consecutive rows holds each kind once, in a shuffled order, so even a small ``n``
    covers the kinds. About a quarter of rows start with a system message; ``follow_up`` rows have two
    user/assistant turns. Responses range from a single number to study guides of a few hundred words.

    >>> rows = sample_sft(11, seed=0)
    >>> sorted({r["kind"] for r in rows}) == sorted(SFT_KINDS)
    True
    >>> rows[0]["messages"][-1]["role"]
    'assistant'
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(f"sample-sft:{seed}")  # see sample_math for why the seed is a string
    rows: list[dict] = []
    seen: set[tuple[str, ...]] = set()
    order: list[str] = []
    for i in range(n):
        if not order:
            order = rng.sample(SFT_KINDS, len(SFT_KINDS))
        kind = order.pop()
        for _ in range(RETRIES):
            turns = _SFT_KINDS[kind](rng)
            key = tuple(user for user, _ in turns)
            if key not in seen:
                break
        seen.add(key)
        messages = []
        if rng.random() < _SYSTEM_RATE:
            messages.append({"role": "system", "content": rng.choice(WORDS.system_prompts)})
        for user, assistant in turns:
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        rows.append({"id": f"sft-{i:05d}", "messages": messages, "data_source": "sample-sft", "kind": kind})
    return rows


SFT_KINDS: tuple[str, ...] = tuple(_SFT_KINDS)
"""The ``kind`` values ``sample_sft`` produces."""
