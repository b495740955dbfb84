"""The fixed vocabulary of the small world: people, things, places, animals, goals and activities.

Everything here is written for this project; the generator in `world.py` and the task builders
sample from these lists with a seeded random stream, so the shipped text is ours to license.
"""

from __future__ import annotations

NAMES = (
    "Anna", "Ben", "Cara", "Dan", "Eva", "Finn", "Gina", "Hugo", "Ida", "Jack",
    "Kate", "Leo", "Mia", "Nick", "Olga", "Paul", "Rosa", "Sam", "Tina", "Umar",
    "Vera", "Will", "Yara", "Zoe", "Alan", "Beth", "Carl", "Dora", "Emil", "Fay",
    "Glen", "Hana", "Ivan", "Jill", "Kim", "Lars", "Mona", "Ned", "Omar", "Pia",
)  # fmt: skip

COLOURS = ("red", "blue", "green", "yellow", "black", "white", "brown", "pink", "orange", "purple", "grey")

OBJECTS = (
    "cup", "ball", "book", "hat", "box", "key", "bag", "pen",
    "coat", "lamp", "shoe", "clock", "kite", "bike", "chair", "bowl",
)  # fmt: skip

ROOMS = ("kitchen", "garden", "hall", "bedroom", "office", "library", "garage", "attic", "cellar", "bathroom")

FRUITS = ("apples", "pears", "plums", "eggs", "nuts", "cakes", "shells", "coins", "stamps", "sweets")

# Ordered from smallest to largest; "bigger"/"heavier" follow this order in every sentence.
ANIMALS = ("ant", "mouse", "frog", "rabbit", "cat", "dog", "sheep", "pig", "horse", "cow", "bear", "elephant")

# goal phrase -> the tool that achieves it. Wrong solutions use another goal's tool.
GOALS = {
    "cut the bread": "a knife",
    "dig a hole": "a spade",
    "write a letter": "a pen",
    "sweep the floor": "a broom",
    "boil the water": "a kettle",
    "open the locked door": "a key",
    "cut the paper": "scissors",
    "hammer a nail": "a hammer",
    "water the plants": "a watering can",
    "see in the dark": "a torch",
    "eat the soup": "a spoon",
    "turn the screw": "a screwdriver",
    "carry the shopping": "a basket",
    "dry the dishes": "a towel",
    "measure the table": "a ruler",
    "climb onto the roof": "a ladder",
    "catch a fish": "a fishing rod",
    "paint the fence": "a brush",
    "clean the teeth": "a toothbrush",
    "sew on a button": "a needle",
    "fry the eggs": "a pan",
    "take a photo": "a camera",
    "stay dry in the rain": "an umbrella",
    "comb the hair": "a comb",
    "sharpen the pencil": "a sharpener",
    "call a friend": "a phone",
    "whisk the cream": "a whisk",
    "lock the bike": "a chain",
    "pump up the tyre": "a pump",
    "tie up the parcel": "some string",
}

# Activities as ordered steps (HellaSwag-like continuations); each step follows a person's name.
SCRIPTS = {
    "Making tea": ("boils water in the kettle.", "puts a tea bag in the cup.", "pours the hot water into the cup.",
                   "adds a little milk to the tea.", "drinks the tea slowly."),
    "Planting a tree": ("digs a hole with the spade.", "puts the young tree in the hole.",
                        "fills the hole with soil.", "waters the tree.", "ties the tree to a stick."),
    "Washing the car": ("fills a bucket with water.", "adds soap to the bucket.", "scrubs the car with a sponge.",
                        "rinses the car with the hose.", "dries the car with a cloth."),
    "Baking bread": ("mixes flour and water in a bowl.", "kneads the dough.", "lets the dough rise.",
                     "puts the dough in the oven.", "cuts the warm bread."),
    "Painting a room": ("moves the furniture away from the walls.", "covers the floor with paper.",
                        "opens the tin of paint.", "paints the walls with a roller.", "cleans the roller."),
    "Going to bed": ("puts on pyjamas.", "brushes the teeth.", "gets into bed.", "reads a short story.",
                     "turns off the light."),
    "Writing a letter": ("takes a sheet of paper.", "writes the letter with a pen.", "folds the letter.",
                         "puts the letter in an envelope.", "posts the letter."),
    "Making a sandwich": ("takes two slices of bread.", "spreads butter on the bread.",
                          "adds cheese and tomato.", "puts the slices together.", "eats the sandwich."),
    "Fixing a bike": ("turns the bike upside down.", "takes the wheel off.", "finds the hole in the tyre.",
                      "patches the hole.", "puts the wheel back on."),
    "Washing the dishes": ("fills the sink with hot water.", "adds a drop of soap to the sink.",
                           "scrubs the plates.", "rinses the plates.", "stacks the plates on the rack."),
    "Going swimming": ("packs a towel and a swimsuit.", "walks to the pool.", "changes into the swimsuit.",
                       "swims ten lengths.", "takes a warm shower."),
    "Cooking pasta": ("boils a pot of water.", "adds salt to the pot.", "puts the pasta in the pot.",
                      "drains the pasta.", "serves the pasta with sauce."),
    "Building a snowman": ("rolls a big ball of snow.", "rolls a smaller ball of snow.",
                           "puts the small ball on top.", "adds two stones for eyes.", "puts a carrot for the nose."),
    "Feeding the cat": ("finds the cat bowl.", "opens a tin of cat food.", "spoons the food into the bowl.",
                        "puts the bowl on the floor.", "calls the cat."),
    "Doing the laundry": ("sorts the clothes by colour.", "puts the clothes in the machine.",
                          "adds washing powder.", "starts the machine.", "hangs the clothes to dry."),
    "Flying a kite": ("walks up the windy hill.", "unrolls the string.", "holds the kite up high.",
                      "runs against the wind.", "watches the kite rise."),
    "Going fishing": ("puts a worm on the hook.", "casts the line into the lake.", "waits quietly by the water.",
                      "feels a tug on the line.", "pulls the fish out of the water."),
    "Cleaning a window": ("fills a bowl with warm water.", "wets the cloth.", "wipes the glass.",
                          "polishes the glass with paper.", "steps back to look."),
    "Camping": ("puts up the tent.", "collects dry wood.", "lights a small fire.",
                "cooks dinner over the fire.", "sleeps in the tent."),
    "Going shopping": ("writes a shopping list.", "walks to the shop.", "puts the food in a basket.",
                       "pays at the till.", "carries the bags home."),
}

# Fill-the-blank frames (WinoGrande-like). As in WinoGrande, the option in the blank is resolved by
# world knowledge, not by the sentence itself: which animal is bigger, which tool serves the goal.
# Each frame: (text with {x}, {y} and _, whether the blank is the bigger animal / the right tool).
ANIMAL_FRAMES = (
    ("The {x} and the {y} came to a small door, and only the _ could fit through it.", False),
    ("The {x} and the {y} came to a small door, and the _ was too big to fit through it.", True),
    ("The {x} and the {y} stepped onto the old bridge, and the _ was heavy enough to break it.", True),
    ("The {x} and the {y} stepped onto the old bridge, and the _ was light enough to cross it.", False),
)
TOOL_FRAMES = (
    ("{name} had {x} and {y} and wanted to {goal}. The _ was the right tool for that.", True),
    ("{name} had {x} and {y} and wanted to {goal}. The _ was no use for that.", False),
)
