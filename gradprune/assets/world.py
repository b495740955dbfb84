"""Seeded small-world facts and the plain narrative sentences built from them.

A `Scene` is a handful of people, each holding one coloured object in one room. The sentence makers
below state scene facts and fixed world knowledge (tool for a goal, animal sizes, small sums); they
are the "encyclopedic" part of the training text, next to the task-shaped text in `task_items.py`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from gradprune.assets.lexicon import ANIMALS, COLOURS, FRUITS, GOALS, NAMES, OBJECTS, ROOMS, SCRIPTS


def rng_for(seed: int, stream: str) -> random.Random:
    """A random stream named by (seed, purpose): str seeds hash with SHA-512, stable across runs."""
    return random.Random(f"gradprune-assets:{seed}:{stream}")


@dataclass(frozen=True)
class Person:
    """One person in a scene: a coloured object and the room they are in."""

    name: str
    colour: str
    obj: str
    room: str


def make_scene(rng: random.Random, n_people: int) -> list[Person]:
    """Draw `n_people` distinct people with distinct (colour, object) pairs and rooms."""
    names = rng.sample(NAMES, n_people)
    colours = rng.sample(COLOURS, n_people)
    objs = [rng.choice(OBJECTS) for _ in names]
    rooms = [rng.choice(ROOMS) for _ in names]
    return [Person(n, c, o, r) for n, c, o, r in zip(names, colours, objs, rooms, strict=True)]


def scene_sentences(rng: random.Random, scene: list[Person]) -> list[str]:
    """State who has what and who is where, in a shuffled order."""
    sentences = []
    for p in scene:
        sentences.append(f"{p.name} has {an(p.colour)} {p.obj}.")
        sentences.append(f"{p.name} is in the {p.room}.")
    rng.shuffle(sentences)
    return sentences


def an(word: str) -> str:
    """The word with its indefinite article ("an orange", "a red")."""
    return ("an " if word[0] in "aeiou" else "a ") + word


def bigger(a: str, b: str) -> bool:
    """Whether animal `a` is bigger (and heavier) than animal `b` in this world."""
    return ANIMALS.index(a) > ANIMALS.index(b)


def animal_sentence(rng: random.Random) -> str:
    """A true comparison of two animals' size or weight."""
    a, b = rng.sample(ANIMALS, 2)
    if bigger(a, b):
        rel = rng.choice(("bigger than", "heavier than"))
    else:
        rel = rng.choice(("smaller than", "lighter than"))
    if rng.random() < 0.5:
        return f"The {a} is {rel} the {b}."
    return f"{an(a).capitalize()} is {rel} {an(b)}."


def tool_sentence(rng: random.Random) -> str:
    """A true statement of which tool serves a goal."""
    goal, tool = rng.choice(list(GOALS.items()))
    name = rng.choice(NAMES)
    forms = (
        f"To {goal}, you need {tool}.",
        f"{name} wants to {goal}, so {name} takes {tool}.",
        f"{name} uses {tool} to {goal}.",
    )
    return rng.choice(forms)


def sum_sentence(rng: random.Random) -> str:
    """A correct small addition, as a fact or a little story."""
    x, y = rng.randint(1, 9), rng.randint(1, 9)
    name, things = rng.choice(NAMES), rng.choice(FRUITS)
    forms = (
        f"{x} plus {y} is {x + y}.",
        f"{name} has {x} {things} and finds {y} more, so {name} has {x + y} {things}.",
    )
    return rng.choice(forms)


def script_sentence(rng: random.Random) -> str:
    """Two consecutive steps of an everyday activity."""
    label, steps = rng.choice(list(SCRIPTS.items()))
    k = rng.randrange(len(steps) - 1)
    name = rng.choice(NAMES)
    return f"When {label.lower()}, {name} {steps[k][:-1]} and then {steps[k + 1]}"


def narrative_doc(rng: random.Random) -> str:
    """A short paragraph mixing scene facts and world knowledge."""
    scene = make_scene(rng, rng.randint(2, 3))
    sentences = scene_sentences(rng, scene)
    makers = (animal_sentence, tool_sentence, sum_sentence, script_sentence)
    for _ in range(rng.randint(2, 4)):
        sentences.insert(rng.randrange(len(sentences) + 1), rng.choice(makers)(rng))
    return " ".join(sentences)
