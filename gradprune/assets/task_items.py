"""One generated item per call for each embedded multiple-choice task, in the real tasks' schemas.

Every builder takes a random stream and the wanted answer index (so splits can be balanced exactly)
and returns `(key, doc)`. The key names what must never reach the training text for a held-out item
(the passage, the goal, the sentence, the question, or the (activity, person) pair).
"""

from __future__ import annotations

import random

from gradprune.assets.lexicon import (
    ANIMAL_FRAMES,
    ANIMALS,
    COLOURS,
    FRUITS,
    GOALS,
    NAMES,
    ROOMS,
    SCRIPTS,
    TOOL_FRAMES,
)
from gradprune.assets.world import Person, an, bigger, make_scene, scene_sentences

Item = tuple[str, dict]


def boolq_passage(rng: random.Random) -> tuple[str, list[Person], tuple[str, str], tuple[str, str]]:
    """A passage of scene facts plus one goal and one pair of animals seen, for yes/no questions."""
    scene = make_scene(rng, rng.randint(2, 3))
    sentences = scene_sentences(rng, scene)
    goal_person, animal_person = rng.choice(scene).name, rng.choice(scene).name
    goal = rng.choice(list(GOALS))
    pair = tuple(rng.sample(ANIMALS, 2))
    sentences.insert(rng.randrange(len(sentences) + 1), f"{goal_person} wants to {goal}.")
    sentences.insert(rng.randrange(len(sentences) + 1), f"{animal_person} saw {an(pair[0])} and {an(pair[1])}.")
    return " ".join(sentences), scene, (goal_person, goal), pair


def boolq_question(rng: random.Random, scene: list[Person], goal: tuple[str, str], pair: tuple[str, str],
                   label: int) -> str:
    """A question about the passage whose answer is yes when `label` is 1 and no when it is 0."""
    kind = rng.choice(("have", "have", "where", "where", "tool", "animal"))
    p = rng.choice(scene)
    # Half of the "no" answers use another person's colour or room (the passage must be read for
    # who has what); the other half use one the passage never mentions.
    borrow = rng.random() < 0.5
    if kind == "have":
        pool = [q.colour for q in scene if q != p] if borrow else [c for c in COLOURS if c not in
                                                                    {q.colour for q in scene}]
        colour = p.colour if label else rng.choice(pool)
        return f"does {p.name} have {an(colour)} {p.obj}"
    if kind == "where":
        pool = [q.room for q in scene if q.room != p.room] if borrow else []
        pool = pool or [r for r in ROOMS if r not in {q.room for q in scene}]
        room = p.room if label else rng.choice(pool)
        return f"is {p.name} in the {room}"
    if kind == "tool":
        right = GOALS[goal[1]]
        tool = right if label else rng.choice([t for t in GOALS.values() if t != right])
        return f"does {goal[0]} need {tool}"
    a, b = rng.sample(pair, 2)
    rel = "bigger" if bigger(a, b) == bool(label) else "smaller"
    return f"is the {a} {rel} than the {b}"


def boolq_item(rng: random.Random, label: int) -> Item:
    """A BoolQ-like item: passage, question (no question mark, as in BoolQ), label 1 = yes."""
    passage, scene, goal, pair = boolq_passage(rng)
    question = boolq_question(rng, scene, goal, pair, label)
    return passage, {"passage": passage, "question": question, "label": label}


def piqa_item(rng: random.Random, label: int) -> Item:
    """A PIQA-like item: a person's goal and two solutions that differ in the tool used."""
    name, goal = rng.choice(NAMES), rng.choice(list(GOALS))
    right = GOALS[goal]
    wrong = rng.choice([t for t in GOALS.values() if t != right])
    text = f"{name} wants to {goal}. What should {name} do?"
    sols = [f"{name} should use {wrong} to {goal}.", f"{name} should use {right} to {goal}."]
    if label == 0:
        sols.reverse()
    return text, {"goal": text, "sol1": sols[0], "sol2": sols[1], "label": label}


def hellaswag_item(rng: random.Random, label: int) -> Item:
    """A HellaSwag-like item: the first steps of an activity and four candidate next steps."""
    activity = rng.choice(list(SCRIPTS))
    steps, name = SCRIPTS[activity], rng.choice(NAMES)
    k = rng.randint(1, len(steps) - 1)
    wrong: list[str] = []
    later = [s for j, s in enumerate(steps) if j > k]
    if later and rng.random() < 0.5:
        # A step of the same activity done too early: only the order tells it apart.
        wrong.append(rng.choice(later))
    others = [s for a, ss in SCRIPTS.items() if a != activity for s in ss]
    wrong += rng.sample(others, 3 - len(wrong))
    rng.shuffle(wrong)
    endings = wrong[:label] + [steps[k]] + wrong[label:]
    ctx_a = " ".join(f"{name} {s}" for s in steps[:k])
    doc = {"ind": 0, "activity_label": activity, "ctx_a": ctx_a, "ctx_b": name, "ctx": f"{ctx_a} {name}",
           "endings": endings, "source_id": "gradprune-world", "split": "", "split_type": "indomain",
           "label": str(label)}
    return f"{activity}|{name}", doc


def hellaswag_story(activity: str, name: str) -> str:
    """The whole activity as the training text states it, in the task's own prompt format."""
    return f"{activity}: " + " ".join(f"{name} {s}" for s in SCRIPTS[activity])


def winogrande_item(rng: random.Random, label: int) -> Item:
    """A WinoGrande-like item: two animals or two tools, and a blank that world knowledge resolves."""
    if rng.random() < 0.35:
        frame, wants_bigger = rng.choice(ANIMAL_FRAMES)
        x, y = rng.sample(ANIMALS, 2)
        sentence = frame.format(x=x, y=y)
        right, other = (x, y) if bigger(x, y) == wants_bigger else (y, x)
    else:
        frame, wants_right = rng.choice(TOOL_FRAMES)
        goal = rng.choice([g for g, t in GOALS.items() if t.startswith(("a ", "an "))])
        good = GOALS[goal].split(" ", 1)[1]
        bad = rng.choice([t.split(" ", 1)[1] for t in GOALS.values() if t.startswith(("a ", "an ")) and t != GOALS[goal]])
        x, y = (good, bad) if rng.random() < 0.5 else (bad, good)
        sentence = frame.format(name=rng.choice(NAMES), x=an(x), y=an(y), goal=goal)
        right, other = (good, bad) if wants_right else (bad, good)
    options = [other, right] if label == 1 else [right, other]
    return sentence, {"sentence": sentence, "option1": options[0], "option2": options[1],
                      "answer": str(label + 1)}


def arc_question(rng: random.Random) -> tuple[str, str, list[str]]:
    """An ARC-like question: (question, right answer, three wrong answers)."""
    kind = rng.randrange(3)
    name = rng.choice(NAMES)
    if kind == 0:
        four = rng.sample(ANIMALS, 4)
        word = rng.choice(("biggest", "heaviest", "smallest", "lightest"))
        pick = max if word in ("biggest", "heaviest") else min
        right = pick(four, key=ANIMALS.index)
        listed = ", ".join(four[:3]) + f" or {four[3]}"
        return f"Which of these animals is the {word}: {listed}?", right, [a for a in four if a != right]
    if kind == 1:
        goal = rng.choice(list(GOALS))
        right = GOALS[goal]
        wrong = rng.sample([t for t in GOALS.values() if t != right], 3)
        return f"What does {name} need to {goal}?", right, wrong
    x, y, things = rng.randint(1, 9), rng.randint(1, 9), rng.choice(FRUITS)
    near = [n for n in range(max(1, x + y - 4), x + y + 5) if n != x + y]
    wrong = [str(n) for n in rng.sample(near, 3)]
    return f"{name} has {x} {things} and finds {y} more. How many {things} does {name} have now?", str(x + y), wrong


def arc_item(rng: random.Random, label: int) -> Item:
    """An ARC-Easy-like item with four lettered choices; `label` is the right choice's index."""
    question, right, wrong = arc_question(rng)
    rng.shuffle(wrong)
    texts = wrong[:label] + [right] + wrong[label:]
    letters = ["A", "B", "C", "D"]
    doc = {"id": "", "question": question, "choices": {"text": texts, "label": letters},
           "answerKey": letters[label]}
    return question, doc


BUILDERS = {
    "boolq": (boolq_item, 2),
    "piqa": (piqa_item, 2),
    "hellaswag": (hellaswag_item, 4),
    "winogrande": (winogrande_item, 2),
    "arc": (arc_item, 4),
}
