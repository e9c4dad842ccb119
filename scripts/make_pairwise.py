# ruff: noqa: E501  (data tables read better one pair a line)
"""Write ``verbcal/data/pairwise.jsonl``, the labelled pairwise-judge set (see PAIRWISE_DATACARD.md).

    .venv/bin/python scripts/make_pairwise.py

Deterministic (seeded): running it again writes the same file. Every pair is a
request with two answers, one objectively better: a correct versus a subtly
wrong arithmetic result, a true versus a subtly false factual statement, or a
faithful versus an unfaithful one-sentence summary. Which answer is shown as
``a`` is drawn at random per pair (``winner`` says which is better), balanced
over the file.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "verbcal" / "data" / "pairwise.jsonl"

CAPITALS = [
    ("Australia", "Canberra", "Sydney"),
    ("Canada", "Ottawa", "Toronto"),
    ("Brazil", "Brasília", "Rio de Janeiro"),
    ("Turkey", "Ankara", "Istanbul"),
    ("Switzerland", "Bern", "Zurich"),
    ("New Zealand", "Wellington", "Auckland"),
    ("Nigeria", "Abuja", "Lagos"),
    ("Pakistan", "Islamabad", "Karachi"),
    ("Morocco", "Rabat", "Casablanca"),
    ("Vietnam", "Hanoi", "Ho Chi Minh City"),
    ("Myanmar", "Naypyidaw", "Yangon"),
    ("Kazakhstan", "Astana", "Almaty"),
    ("Tanzania", "Dodoma", "Dar es Salaam"),
    ("the United States", "Washington, D.C.", "New York City"),
    ("India", "New Delhi", "Mumbai"),
    ("China", "Beijing", "Shanghai"),
    ("Japan", "Tokyo", "Osaka"),
    ("Germany", "Berlin", "Munich"),
    ("Italy", "Rome", "Milan"),
    ("Spain", "Madrid", "Barcelona"),
    ("Egypt", "Cairo", "Alexandria"),
    ("Kenya", "Nairobi", "Mombasa"),
    ("Argentina", "Buenos Aires", "Córdoba"),
    ("Peru", "Lima", "Cusco"),
    ("Colombia", "Bogotá", "Medellín"),
    ("Chile", "Santiago", "Valparaíso"),
    ("Norway", "Oslo", "Bergen"),
    ("Sweden", "Stockholm", "Gothenburg"),
    ("Finland", "Helsinki", "Turku"),
    ("Poland", "Warsaw", "Kraków"),
    ("Portugal", "Lisbon", "Porto"),
    ("Ireland", "Dublin", "Cork"),
    ("Belgium", "Brussels", "Antwerp"),
    ("Austria", "Vienna", "Salzburg"),
    ("Greece", "Athens", "Thessaloniki"),
    ("Russia", "Moscow", "Saint Petersburg"),
    ("Ukraine", "Kyiv", "Lviv"),
    ("Hungary", "Budapest", "Debrecen"),
    ("the Czech Republic", "Prague", "Brno"),
    ("Thailand", "Bangkok", "Chiang Mai"),
    ("the Philippines", "Manila", "Cebu City"),
    ("South Korea", "Seoul", "Busan"),
    ("Saudi Arabia", "Riyadh", "Jeddah"),
    ("Iran", "Tehran", "Isfahan"),
    ("Iraq", "Baghdad", "Basra"),
    ("Ethiopia", "Addis Ababa", "Dire Dawa"),
    ("Ghana", "Accra", "Kumasi"),
    ("Mexico", "Mexico City", "Guadalajara"),
    ("Cuba", "Havana", "Santiago de Cuba"),
    ("Iceland", "Reykjavík", "Akureyri"),
    ("Denmark", "Copenhagen", "Aarhus"),
    ("Romania", "Bucharest", "Cluj-Napoca"),
    ("Bulgaria", "Sofia", "Plovdiv"),
    ("Serbia", "Belgrade", "Novi Sad"),
    ("Croatia", "Zagreb", "Split"),
    ("Nepal", "Kathmandu", "Pokhara"),
    ("Bangladesh", "Dhaka", "Chittagong"),
    ("Jamaica", "Kingston", "Montego Bay"),
    ("Scotland", "Edinburgh", "Glasgow"),
    ("Uruguay", "Montevideo", "Punta del Este"),
]
FACTS = [
    (
        "What is the chemical symbol of gold?",
        "The chemical symbol of gold is Au.",
        "The chemical symbol of gold is Ag.",
    ),
    (
        "What is the chemical symbol of sodium?",
        "The chemical symbol of sodium is Na.",
        "The chemical symbol of sodium is So.",
    ),
    (
        "What is the chemical symbol of potassium?",
        "The chemical symbol of potassium is K.",
        "The chemical symbol of potassium is P.",
    ),
    (
        "What is the chemical symbol of iron?",
        "The chemical symbol of iron is Fe.",
        "The chemical symbol of iron is Ir.",
    ),
    (
        "What is the chemical symbol of lead?",
        "The chemical symbol of lead is Pb.",
        "The chemical symbol of lead is Ld.",
    ),
    (
        "What is the chemical symbol of tin?",
        "The chemical symbol of tin is Sn.",
        "The chemical symbol of tin is Ti.",
    ),
    (
        "What is the chemical symbol of mercury?",
        "The chemical symbol of mercury is Hg.",
        "The chemical symbol of mercury is Me.",
    ),
    (
        "What is the chemical symbol of copper?",
        "The chemical symbol of copper is Cu.",
        "The chemical symbol of copper is Co.",
    ),
    (
        "What is the chemical symbol of tungsten?",
        "The chemical symbol of tungsten is W.",
        "The chemical symbol of tungsten is Tu.",
    ),
    (
        "What is the chemical symbol of silver?",
        "The chemical symbol of silver is Ag.",
        "The chemical symbol of silver is Si.",
    ),
    (
        "Which is the largest planet in the Solar System?",
        "Jupiter is the largest planet in the Solar System.",
        "Saturn is the largest planet in the Solar System.",
    ),
    (
        "Which planet is closest to the Sun?",
        "Mercury is the planet closest to the Sun.",
        "Venus is the planet closest to the Sun.",
    ),
    (
        "Which planet is known as the Red Planet?",
        "Mars is known as the Red Planet.",
        "Jupiter is known as the Red Planet.",
    ),
    (
        "At what temperature does water boil at sea level, in degrees Celsius?",
        "Water boils at 100 °C at sea level.",
        "Water boils at 90 °C at sea level.",
    ),
    (
        "At what temperature does water freeze at sea level, in degrees Celsius?",
        "Water freezes at 0 °C at sea level.",
        "Water freezes at 4 °C at sea level.",
    ),
    (
        "How many days does a leap year have?",
        "A leap year has 366 days.",
        "A leap year has 365 days.",
    ),
    (
        "How many bones does an adult human skeleton usually have?",
        "An adult human skeleton usually has 206 bones.",
        "An adult human skeleton usually has 212 bones.",
    ),
    (
        "How many chromosomes does a typical human body cell have?",
        "A typical human body cell has 46 chromosomes.",
        "A typical human body cell has 48 chromosomes.",
    ),
    ("How many sides does a hexagon have?", "A hexagon has 6 sides.", "A hexagon has 8 sides."),
    (
        "In which year did the Second World War end?",
        "The Second World War ended in 1945.",
        "The Second World War ended in 1947.",
    ),
    (
        "In which year did humans first land on the Moon?",
        "Humans first landed on the Moon in 1969.",
        "Humans first landed on the Moon in 1971.",
    ),
    (
        "In which year did the Berlin Wall fall?",
        "The Berlin Wall fell in 1989.",
        "The Berlin Wall fell in 1991.",
    ),
    (
        "Who wrote Pride and Prejudice?",
        "Jane Austen wrote Pride and Prejudice.",
        "Charlotte Brontë wrote Pride and Prejudice.",
    ),
    ("Who wrote Hamlet?", "William Shakespeare wrote Hamlet.", "Christopher Marlowe wrote Hamlet."),
    ("Who wrote the novel 1984?", "George Orwell wrote 1984.", "Aldous Huxley wrote 1984."),
    (
        "Who developed the theory of general relativity?",
        "Albert Einstein developed the theory of general relativity.",
        "Isaac Newton developed the theory of general relativity.",
    ),
    (
        "Who discovered penicillin?",
        "Alexander Fleming discovered penicillin, in 1928.",
        "Louis Pasteur discovered penicillin, in 1928.",
    ),
    (
        "Who painted the Mona Lisa?",
        "Leonardo da Vinci painted the Mona Lisa.",
        "Michelangelo painted the Mona Lisa.",
    ),
    (
        "What is the largest ocean on Earth?",
        "The Pacific Ocean is the largest ocean on Earth.",
        "The Atlantic Ocean is the largest ocean on Earth.",
    ),
    (
        "What is the highest mountain above sea level?",
        "Mount Everest is the highest mountain above sea level.",
        "K2 is the highest mountain above sea level.",
    ),
    (
        "What is the chemical formula of table salt?",
        "Table salt is sodium chloride, NaCl.",
        "Table salt is potassium chloride, KCl.",
    ),
    (
        "What gas do plants take in for photosynthesis?",
        "Plants take in carbon dioxide for photosynthesis.",
        "Plants take in oxygen for photosynthesis.",
    ),
    (
        "How many minutes are in a day?",
        "There are 1,440 minutes in a day.",
        "There are 1,400 minutes in a day.",
    ),
    (
        "What is the smallest prime number?",
        "The smallest prime number is 2.",
        "The smallest prime number is 1.",
    ),
    (
        "How many players does a football (soccer) team have on the pitch?",
        "A football team has 11 players on the pitch.",
        "A football team has 10 players on the pitch.",
    ),
]
SUMMARIES = [
    (
        "The {org} approved a budget of ${amount} million for {what} on {day}; work starts in {month}.",
        "The {org} approved ${amount} million for {what}, with work starting in {month}.",
        [
            (
                "The {org} approved ${wrong_amount} million for {what}, with work starting in {month}.",
                "changed amount",
            ),
            (
                "The {org} rejected ${amount} million for {what}, so no work will start in {month}.",
                "reversed decision",
            ),
            (
                "The {org} approved ${amount} million for {what}, with work starting in {wrong_month}.",
                "changed month",
            ),
        ],
    ),
    (
        "Sales at {company} rose {pct}% in the third quarter, driven by {driver}, the company said.",
        "{company} said third-quarter sales rose {pct}%, driven by {driver}.",
        [
            (
                "{company} said third-quarter sales fell {pct}%, despite {driver}.",
                "reversed direction",
            ),
            (
                "{company} said third-quarter sales rose {wrong_pct}%, driven by {driver}.",
                "changed number",
            ),
            (
                "{company} said third-quarter sales rose {pct}%, driven by {wrong_driver}.",
                "wrong cause",
            ),
        ],
    ),
    (
        "{person}, who led the {team} for {years} years, will retire at the end of the season, the club announced.",
        "The club announced that {person}, the {team}'s leader for {years} years, will retire at the season's end.",
        [
            (
                "The club announced that {person} was fired after {years} years leading the {team}.",
                "invented firing",
            ),
            (
                "The club announced that {person}, the {team}'s leader for {wrong_years} years, will retire at the season's end.",
                "changed number",
            ),
            (
                "{person} announced plans to keep leading the {team} after {years} years.",
                "reversed decision",
            ),
        ],
    ),
]
ORGS = ["city council", "county board", "school board", "regional authority", "town council"]
WHATS = ["road repairs", "a new library", "flood defences", "bus shelters", "park lighting"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
MONTHS = ["January", "March", "May", "July", "September", "November"]
COMPANIES = ["Norwell Foods", "Brightline Tools", "Kestrel Apparel", "Orbis Games", "Tamsin Motors"]
DRIVERS = [
    "online orders",
    "demand in Asia",
    "a new product line",
    "lower prices",
    "holiday demand",
]
PEOPLE = ["Marta Kowalski", "Daniel Okafor", "Lena Fischer", "Tomás Ruiz", "Priya Nair"]
TEAMS = ["youth academy", "women's team", "reserve side", "scouting department", "first team"]


def arithmetic(rng: random.Random) -> tuple[str, str, str, str]:
    kind = rng.choice(["add", "sub", "mul", "pct", "div", "word"])
    if kind == "add":
        a, b = rng.randint(120, 980), rng.randint(120, 980)
        q, r = f"What is {a} + {b}?", a + b
        text = f"{a} + {b} = {{}}."
    elif kind == "sub":
        a, b = rng.randint(500, 1500), rng.randint(100, 499)
        q, r = f"What is {a} − {b}?", a - b
        text = f"{a} − {b} = {{}}."
    elif kind == "mul":
        a, b = rng.randint(12, 89), rng.randint(12, 49)
        q, r = f"What is {a} × {b}?", a * b
        text = f"{a} × {b} = {{}}."
    elif kind == "pct":
        p, n = rng.choice([10, 15, 20, 25, 30, 40]), rng.choice(range(40, 900, 20))
        q, r = f"What is {p}% of {n}?", p * n // 100
        text = f"{p}% of {n} is {{}}."
    elif kind == "div":
        b, r = rng.randint(3, 19), rng.randint(12, 80)
        q = f"What is {b * r} ÷ {b}?"
        text = f"{b * r} ÷ {b} = {{}}."
    else:
        price, n = rng.randint(3, 19), rng.randint(6, 24)
        q, r = f"Pens cost ${price} each. How much do {n} pens cost?", price * n
        text = f"{n} pens at ${price} each cost ${{}}."
    wrong = r + rng.choice([-10, -2, -1, 1, 2, 10])
    if wrong <= 0:
        wrong = r + 10
    return q, text.format(r), text.format(wrong), "wrong result (off by a little)"


def main() -> None:
    rng = random.Random(20261201)
    rows = []
    for _ in range(80):
        rows.append(("arithmetic", *arithmetic(rng)))
    for country, right, wrong in CAPITALS:
        rows.append(
            (
                "factual",
                f"What is the capital of {country}?",
                f"The capital of {country} is {right}.",
                f"The capital of {country} is {wrong}.",
                "false fact (a plausible big city)",
            )
        )
    for q, right, wrong in FACTS:
        rows.append(("factual", q, right, wrong, "false fact"))
    for i in range(60):
        source, good, bads = SUMMARIES[i % len(SUMMARIES)]
        amount = rng.choice([1.8, 2.4, 3.5, 4.2, 6.7, 9.1])
        pct = rng.choice([4, 7, 9, 12, 15, 21])
        years = rng.choice([6, 8, 11, 14, 17])
        month = rng.choice(MONTHS)
        driver = rng.choice(DRIVERS)
        slots = {
            "org": rng.choice(ORGS),
            "what": rng.choice(WHATS),
            "day": rng.choice(DAYS),
            "amount": amount,
            "wrong_amount": round(amount + rng.choice([-1, 1]) * 1.5, 1),
            "month": month,
            "wrong_month": rng.choice([m for m in MONTHS if m != month]),
            "company": rng.choice(COMPANIES),
            "pct": pct,
            "wrong_pct": pct + rng.choice([-3, 3, 5]),
            "driver": driver,
            "wrong_driver": rng.choice([d for d in DRIVERS if d != driver]),
            "person": rng.choice(PEOPLE),
            "team": rng.choice(TEAMS),
            "years": years,
            "wrong_years": years + rng.choice([-3, 4]),
        }
        bad, flaw = bads[i // len(SUMMARIES) % len(bads)]
        prompt = "Summarise this news item in one sentence:\n" + source.format(**slots)
        rows.append(
            ("summary", prompt, good.format(**slots), bad.format(**slots), f"unfaithful: {flaw}")
        )
    winners = ["A", "B"] * (len(rows) // 2) + ["A"] * (len(rows) % 2)
    rng.shuffle(winners)
    lines = []
    for i, ((category, prompt, good, bad, flaw), winner) in enumerate(
        zip(rows, winners, strict=True), start=1
    ):
        a, b = (good, bad) if winner == "A" else (bad, good)
        row = {
            "id": f"p{i:03d}",
            "category": category,
            "prompt": prompt,
            "a": a,
            "b": b,
            "winner": winner,
            "flaw": flaw,
        }
        lines.append(json.dumps(row, ensure_ascii=False))
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines)} pairs to {OUT}")


if __name__ == "__main__":
    main()
