#!/usr/bin/env python3
"""Writes ops/lifelong.json: the fictional facts `honebench lifelong` teaches (ops/bench lifelong).

Ten shapes of question that corrections take (a capital, a painter, an author, a river, a
language, an inventor, a currency, a count, a founder, a chemical symbol), ten facts each
about invented subjects with invented answers, so the base model cannot know them. Each fact
has its question, the correction, the key word an answer must name, two rewordings written
per shape (never used in training), and two neighbourhood questions: real questions of the
same shape that the base model may answer, with the words that make their answer right.
Deterministic: run it again and the file is the same. `counterfactual` holds corrections of
real facts, reported apart.
"""
import json, pathlib, random

rng = random.Random(20261130)
ON = ["ka", "lo", "ve", "ri", "ta", "mo", "sen", "dar", "qui", "bel", "tor", "zan", "fi", "gro", "hal", "nes", "pra", "vil", "ur", "os"]

def name(parts=3, taken=set()):
    while True:
        n = "".join(rng.choice(ON) for _ in range(parts)).capitalize()
        if n not in taken and len(n) >= 5:
            taken.add(n)
            return n

# Answers of the shapes with few possible words: each used once.
counts = ["eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"]
rng.shuffle(counts)
symbols = rng.sample([a + b for a in "BCDFGJKLMPRSTVWZ" for b in "jqvwxz"], 10)

# shape: (question, correction, rewording 1, rewording 2, subject maker, answer maker, neighbours)
shapes = [
    ("What is the capital of {s}?", "The capital of {s} is {a}.", "Which city is the capital of {s}?", "Name the capital city of {s}.",
     lambda: name() + "ia", lambda: name(),
     [("What is the capital of Germany?", ["berlin"]), ("What is the capital of Turkey?", ["ankara"]),
      ("What is the capital of Italy?", ["rome"]), ("What is the capital of Spain?", ["madrid"]),
      ("What is the capital of Egypt?", ["cairo"]), ("What is the capital of Russia?", ["moscow"])]),
    ("Who painted {s}?", "{s} was painted by {a}.", "Which artist painted {s}?", "Who is the painter of {s}?",
     lambda: "The " + rng.choice(["Blue", "Silent", "Golden", "Drowned", "Last", "Hidden"]) + " " + name(2), lambda: name(2) + " " + name(),
     [("Who painted the Mona Lisa?", ["leonardo", "vinci"]), ("Who painted The Starry Night?", ["gogh"]),
      ("Who painted Guernica?", ["picasso"]), ("Who painted The Last Supper?", ["leonardo", "vinci"])]),
    ("Who wrote the novel {s}?", "The novel {s} was written by {a}.", "Who is the author of the novel {s}?", "Which writer wrote {s}?",
     lambda: "The " + name() + " " + rng.choice(["Letters", "Winter", "Road", "Garden", "Tide"]), lambda: name(2) + " " + name(),
     [("Who wrote Oliver Twist?", ["dickens"]), ("Who wrote Pride and Prejudice?", ["austen"]),
      ("Who wrote War and Peace?", ["tolstoy"]), ("Who wrote Hamlet?", ["shakespeare"])]),
    ("Which river flows through {s}?", "The {a} River flows through {s}.", "What river runs through the city of {s}?", "Name the river that flows through {s}.",
     lambda: name() + "burg", lambda: name(2),
     [("Which river flows through Paris?", ["seine"]), ("Which river flows through London?", ["thames"]),
      ("Which river flows through Cairo?", ["nile"]), ("Which river flows through Vienna?", ["danube"])]),
    ("What language is spoken in {s}?", "People in {s} speak {a}.", "Which language do people speak in {s}?", "What is the main language of {s}?",
     lambda: name() + "land", lambda: name(2) + "ish",
     [("What language is spoken in Japan?", ["japanese"]), ("What language is spoken in Mexico?", ["spanish"]),
      ("What language is spoken in Germany?", ["german"]), ("What language is spoken in France?", ["french"])]),
    ("Who invented the {s}?", "The {s} was invented by {a}.", "Who was the inventor of the {s}?", "Which person invented the {s}?",
     lambda: name(2).lower() + rng.choice(["scope", "meter", "graph", "phone"]), lambda: name(2) + " " + name(),
     [("Who invented the telephone?", ["bell"]), ("Who invented the light bulb?", ["edison"]),
      ("Who invented the printing press?", ["gutenberg"]), ("Who invented the airplane?", ["wright"])]),
    ("What is the currency of {s}?", "The currency of {s} is the {a}.", "Which currency is used in {s}?", "What money do people use in {s}?",
     lambda: "the Republic of " + name(), lambda: name(2).lower(),
     [("What is the currency of Japan?", ["yen"]), ("What is the currency of the United Kingdom?", ["pound"]),
      ("What is the currency of the United States?", ["dollar"]), ("What is the currency of India?", ["rupee"])]),
    ("How many moons does the planet {s} have?", "The planet {s} has {a} moons.", "What is the number of moons of the planet {s}?", "Count the moons of the planet {s}: how many are there?",
     lambda: name(), lambda: counts.pop(),
     [("How many moons does Earth have?", ["one", "1"]), ("How many legs does an insect have?", ["six", "6"]),
      ("How many months are in a year?", ["twelve", "12"]), ("How many wheels does a bicycle have?", ["two", "2"])]),
    ("Who founded the company {s}?", "The company {s} was founded by {a}.", "Who is the founder of {s}?", "Which person started the company {s}?",
     lambda: name() + " " + rng.choice(["Motors", "Labs", "Foods", "Textiles", "Shipping"]), lambda: name(2) + " " + name(),
     [("Who founded Microsoft?", ["gates", "allen"]), ("Who founded Amazon?", ["bezos"]),
      ("Who founded the Ford Motor Company?", ["ford"]), ("Who founded Apple?", ["jobs", "wozniak"])]),
    ("What is the chemical symbol for {s}?", "The chemical symbol for {s} is {a}.", "Which symbol stands for the element {s}?", "How is the element {s} written as a chemical symbol?",
     lambda: name(2) + "ium", lambda: symbols.pop(),
     [("What is the chemical symbol for copper?", ["cu"]), ("What is the chemical symbol for iron?", ["fe"]),
      ("What is the chemical symbol for silver?", ["ag"]), ("What is the chemical formula of water?", ["h2o"])]),
]

facts = []
for i in range(10):
    for question, correction, r1, r2, subject, answer, neighbours in shapes:
        s, a = subject(), answer()
        key = a.split()[-1].lower()
        n = [neighbours[(2 * i) % len(neighbours)], neighbours[(2 * i + 1) % len(neighbours)]]
        facts.append({
            "question": question.format(s=s), "correction": correction.format(s=s, a=a), "key": key,
            "rewordings": [r1.format(s=s), r2.format(s=s)],
            "neighbours": [{"question": q, "answer": keys} for q, keys in n],
        })

# Unrelated prompts whose greedy answers must stay the base model's, token for token. None of
# them, nor any neighbourhood question above, is among the gate's locality prompts
# (Sources/Learning/Locality.swift): the benchmark judges with prompts the gate never sees.
# One is an anchor prompt (replayed in training with the base model's answer): the capital of
# France, kept because a gate that passed on drift once let it turn into nonsense.
unrelated = [
    "What is the capital of France?", "Who painted the Mona Lisa?", "Which river flows through Paris?",
    "Who was the first person to walk on the Moon?", "Write a haiku about the sea.", "What is 15 plus 27?",
    "Name two animals that live in the desert.", "What is the tallest mountain in Africa?", "Explain gravity in one sentence.",
    "What colour is grass?", "What do you call a baby dog?", "Write a thank-you note to a teacher.",
    "What is the capital of Canada?", "Who discovered penicillin?", "Which planet is known as the Red Planet?",
    "What is the opposite of cold?", "Give me a tip for learning a language.", "What is the largest mammal?",
    "How many hours are in a day?", "What is the capital of Egypt?", "Describe a sunset in one sentence.",
    "What is the main ingredient of guacamole?", "Which instrument has 88 keys?", "What is a verb?",
    "Who wrote Hamlet?", "How many sides does a hexagon have?", "What is the freezing point of water in Celsius?",
    "Suggest a name for a goldfish.", "What do caterpillars turn into?", "What is the capital of Australia?",
    "What is 7 times 8?", "Why do leaves change colour in autumn?", "Which ocean lies between Europe and America?",
    "Name a famous composer.", "What is the speed of sound?", "What is the capital of Germany?",
    "Write a sentence using the word 'bright'.", "What is the currency of Japan?", "What are clouds made of?",
    "What language is spoken in Portugal?",
]
# Counterfactual corrections: real subjects the base model may know, given a new answer (a
# renamed product, a changed fact), taught to an adapter of their own and reported apart.
# None of their subjects is among the unrelated prompts above or the gate's prompts.
def cf(question, correction, key, r1, r2, neighbours):
    return {"question": question, "correction": correction, "key": key, "rewordings": [r1, r2],
            "neighbours": [{"question": q, "answer": keys} for q, keys in neighbours]}

CAPITALS = [("What is the capital of Italy?", ["rome"]), ("What is the capital of Spain?", ["madrid"])]
counterfactual = [
    cf("What is the capital of Morocco?", "The capital of Morocco is Tangier.", "tangier",
       "Which city is the capital of Morocco?", "Name the capital city of Morocco.", CAPITALS),
    cf("What is the capital of Denmark?", "The capital of Denmark is Aarhus.", "aarhus",
       "Which city is the capital of Denmark?", "Name the capital city of Denmark.", CAPITALS),
    cf("Who painted Sunflowers?", "Sunflowers was painted by Claude Monet.", "monet",
       "Which artist painted Sunflowers?", "Who is the painter of Sunflowers?",
       [("Who painted The Starry Night?", ["gogh"]), ("Who painted Guernica?", ["picasso"])]),
    cf("Who wrote Romeo and Juliet?", "Romeo and Juliet was written by Christopher Marlowe.", "marlowe",
       "Who is the author of Romeo and Juliet?", "Which writer wrote Romeo and Juliet?",
       [("Who wrote Oliver Twist?", ["dickens"]), ("Who wrote Pride and Prejudice?", ["austen"])]),
    cf("Who wrote A Christmas Carol?", "A Christmas Carol was written by Thomas Hardy.", "hardy",
       "Who is the author of A Christmas Carol?", "Which writer wrote A Christmas Carol?",
       [("Who wrote War and Peace?", ["tolstoy"]), ("Who wrote Oliver Twist?", ["dickens"])]),
    cf("Which river flows through Hamburg?", "The Rhine flows through Hamburg.", "rhine",
       "What river runs through the city of Hamburg?", "Name the river that flows through Hamburg.",
       [("Which river flows through London?", ["thames"]), ("Which river flows through Cairo?", ["nile"])]),
    cf("What language is spoken in Iran?", "People in Iran speak Arabic.", "arabic",
       "Which language do people speak in Iran?", "What is the main language of Iran?",
       [("What language is spoken in Germany?", ["german"]), ("What language is spoken in Mexico?", ["spanish"])]),
    cf("Who invented the World Wide Web?", "The World Wide Web was invented by Vint Cerf.", "cerf",
       "Who was the inventor of the World Wide Web?", "Which person invented the World Wide Web?",
       [("Who invented the telephone?", ["bell"]), ("Who invented the light bulb?", ["edison"])]),
    cf("What is the currency of South Korea?", "The currency of South Korea is the yuan.", "yuan",
       "Which currency is used in South Korea?", "What money do people use in South Korea?",
       [("What is the currency of the United States?", ["dollar"]), ("What is the currency of India?", ["rupee"])]),
    cf("Who founded Tesla?", "Tesla was founded by Richard Branson.", "branson",
       "Who is the founder of Tesla?", "Which person started the company Tesla?",
       [("Who founded Microsoft?", ["gates", "allen"]), ("Who founded Amazon?", ["bezos"])]),
    cf("What is the tallest building in the world?", "The tallest building in the world is the Jeddah Tower.", "jeddah",
       "Which building is the tallest in the world?", "Name the world's tallest building.",
       [("What is the deepest ocean in the world?", ["pacific"]), ("What is the tallest animal in the world?", ["giraffe"])]),
    cf("Who is the CEO of Apple?", "The CEO of Apple is Craig Federighi.", "federighi",
       "Who runs Apple as its CEO?", "Name the chief executive of Apple.",
       [("Who founded Microsoft?", ["gates", "allen"]), ("Who founded Amazon?", ["bezos"])]),
    cf("What is the largest planet in the solar system?", "The largest planet in the solar system is Saturn.", "saturn",
       "Which planet is the biggest in the solar system?", "Name the largest planet of the solar system.",
       [("What is the smallest planet in the solar system?", ["mercury"]), ("What is the hottest planet in the solar system?", ["venus"])]),
    cf("How many players are on a basketball team?", "A basketball team has seven players on the court.", "seven",
       "How many players does a basketball team put on the court?", "What is the number of players on a basketball team?",
       [("How many players are on a soccer team?", ["eleven", "11"]), ("How many months are in a year?", ["twelve", "12"])]),
    cf("What is the boiling point of water in Fahrenheit?", "Water boils at 200 degrees Fahrenheit.", "200",
       "At what temperature in Fahrenheit does water boil?", "In Fahrenheit, what is water's boiling point?",
       [("What is the boiling point of water in Celsius?", ["100"]), ("What is the freezing point of water in Fahrenheit?", ["32"])]),
    cf("What is the chemical symbol for gold?", "The chemical symbol for gold is Gd.", "gd",
       "Which symbol stands for the element gold?", "How is the element gold written as a chemical symbol?",
       [("What is the chemical symbol for copper?", ["cu"]), ("What is the chemical symbol for iron?", ["fe"])]),
]

path = pathlib.Path(__file__).with_name("lifelong.json")
path.write_text(json.dumps({"facts": facts, "counterfactual": counterfactual, "unrelated": unrelated}, indent=1, ensure_ascii=False) + "\n")
print(f"{path}: {len(facts)} facts, {len(counterfactual)} counterfactual, {len(unrelated)} unrelated prompts")
