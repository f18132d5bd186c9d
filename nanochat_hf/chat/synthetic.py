"""Chat data made by code: no download, the same conversations for the same seed on every machine.

Three small tasks in nanochat's chat format, each a function `task(index, seed)` that
builds conversation `index` from its own random generator, so a conversation does not depend on how
many others are drawn (as nanochat seeds its spelling tasks per index):

- `arithmetic_problem`: a word problem whose answer calls the calculator tool, as nanochat renders GSM8K
  (as nanochat renders GSM8K): text parts, `python` parts with the expression and `python_output` parts with its value, and a
  final `#### <number>`. Every output is what `nanochat_hf.chat.calculator` returns for the expression,
  so the model learns outputs it will really see.
- `spelling_bee`: "how many r are in strawberry?", answered by spelling the word with a running count,
  then checking with a `'strawberry'.count('r')` tool call, ending in `#### <count>` (nanochat's SpellingBee).
- `simple_spelling`: `Spell the word: {word}` -> `{word}:{w,o,r,d}` (nanochat's SimpleSpelling, exact format).
- `identity_conversation`: who the assistant is (nanochat mixes ~1K such conversations into its SFT).

`embedded_conversations(n, seed)` interleaves all four; the CPU quickstart and the tests train on it.
"""

import random

from .calculator import evaluate, format_result


# Common English words for the spelling tasks (nanochat draws from a 370K-word list it downloads; pass
# `words=` to use such a list).
WORDS = tuple(
    """
    strawberry apple banana cherry orange grape lemon melon peach pear plum mango papaya coconut raspberry
    blueberry tomato potato carrot onion garlic pepper cabbage lettuce spinach broccoli pumpkin cucumber
    mississippi bookkeeper committee balloon coffee cookie letter little puzzle pizza success address
    necessary occasion possess embarrass accommodate millennium parallel tomorrow yesterday afternoon
    computer keyboard monitor printer program language python science history geography mathematics
    elephant giraffe kangaroo penguin dolphin octopus squirrel rabbit turtle tiger zebra monkey donkey
    butterfly caterpillar grasshopper mosquito hippopotamus crocodile alligator cheetah leopard buffalo
    mountain river ocean island desert forest valley volcano glacier canyon meadow village capital
    teacher student library pencil notebook eraser scissors backpack calendar umbrella window bottle
    chocolate vanilla cinnamon sugar butter bread cheese noodle spaghetti sandwich breakfast dinner
    happiness kindness friendship freedom balance silence patience courage wisdom honesty journey
    rainbow thunder lightning weather summer winter autumn spring morning evening midnight
    bicycle airplane helicopter submarine rocket engine traffic station bridge tunnel highway
    guitar violin trumpet piano drummer orchestra melody rhythm harmony concert
    assessment referee preferred beginning different interesting important beautiful wonderful excellent
    """.split()
)

ASSISTANT_NAME = "nanochat"

# ---------------------------------------------------------------------------------------------------------
# Arithmetic word problems with calculator calls

_PEOPLE = ("Sam", "Maria", "Leo", "Aisha", "Tom", "Yuki", "Omar", "Lena", "Ravi", "Zoe", "Ben", "Ines")
_ITEMS = ("apples", "marbles", "stickers", "books", "cookies", "pencils", "coins", "shells", "cards", "eggs")


def _rng(task: str, index: int, seed: int) -> random.Random:
    # A string seed is hashed with SHA-512 by `random`, the same on every platform and Python run.
    return random.Random(f"{task}:{seed}:{index}")


def _tool(expression: str) -> list[dict]:
    """A calculator call and its output, as the engine would produce them at inference."""
    return [
        {"type": "python", "text": expression},
        {"type": "python_output", "text": format_result(evaluate(expression))},
    ]


def _text(text: str) -> dict:
    return {"type": "text", "text": text}


def _value(expression: str):
    """The value of a calculator expression, as the tool writes it."""
    return format_result(evaluate(expression))


def arithmetic_problem(index: int, seed: int = 0) -> dict:
    """A two-step word problem; the assistant computes each step with the calculator (GSM8K style)."""
    rng = _rng("arithmetic", index, seed)
    person, item = rng.choice(_PEOPLE), rng.choice(_ITEMS)
    kind = rng.randrange(4)
    if kind == 0:  # has some, buys packs
        start, packs, per_pack = rng.randint(2, 60), rng.randint(2, 9), rng.randint(2, 12)
        question = (
            f"{person} has {start} {item}. {person} buys {packs} packs with {per_pack} {item} in each pack. "
            f"How many {item} does {person} have now?"
        )
        step1, step2 = f"{packs}*{per_pack}", f"{start}+{_value(f'{packs}*{per_pack}')}"
        answer = [
            _text(f"The packs hold {packs}*{per_pack} = "),
            *_tool(step1),
            _text(f"{_value(step1)} {item}. Together with the {start} {person} already had, that is {step2} = "),
            *_tool(step2),
            _text(f"{_value(step2)} {item}.\n#### {_value(step2)}"),
        ]
    elif kind == 1:  # shares equally, keeps the rest
        friends, each = rng.randint(2, 8), rng.randint(2, 15)
        left = rng.randint(0, friends - 1)
        total = friends * each + left
        question = (
            f"{person} has {total} {item} and shares them equally among {friends} friends, giving each friend "
            f"as many as possible. How many {item} does each friend get?"
        )
        step = f"{total}//{friends}"
        answer = [
            _text(f"Dividing {total} {item} among {friends} friends gives each friend {total}//{friends} = "),
            *_tool(step),
            _text(f"{_value(step)} {item}.\n#### {_value(step)}"),
        ]
    elif kind == 2:  # earns per hour, spends some
        hours, rate, spent = rng.randint(2, 12), rng.randint(5, 30), rng.randint(1, 40)
        question = (
            f"{person} earns ${rate} per hour and works {hours} hours. Then {person} spends ${spent} on lunch. "
            f"How many dollars does {person} have left?"
        )
        step1 = f"{hours}*{rate}"
        step2 = f"{_value(step1)}-{spent}"
        answer = [
            _text(f"{person} earns {hours}*{rate} = "),
            *_tool(step1),
            _text(f"{_value(step1)} dollars. After lunch, {_value(step1)}-{spent} = "),
            *_tool(step2),
            _text(f"{_value(step2)} dollars are left.\n#### {_value(step2)}"),
        ]
    else:  # rows and columns plus extra
        rows, cols, extra = rng.randint(2, 20), rng.randint(2, 20), rng.randint(1, 30)
        question = (
            f"A box holds {rows} rows of {cols} {item}, and there are {extra} more {item} next to it. "
            f"How many {item} are there in total?"
        )
        step = f"{rows}*{cols}+{extra}"
        answer = [
            _text(f"The box holds {rows}*{cols} {item}, plus {extra} more: {rows}*{cols}+{extra} = "),
            *_tool(step),
            _text(f"{_value(step)} {item} in total.\n#### {_value(step)}"),
        ]
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


# ---------------------------------------------------------------------------------------------------------
# Spelling

_SPELLING_QUESTIONS = (
    "How many {letter} are in the word {word}",
    "How many {letter}s are in {word}",
    "How many times does the letter {letter} appear in {word}",
    "Count the number of {letter} in {word}",
    "How often does {letter} occur in the word {word}",
    "In the word {word}, how many {letter} are there",
    "What is the count of the letter {letter} in {word}",
    "¿Cuántas {letter} hay en la palabra {word}",
    "Combien de {letter} y a-t-il dans le mot {word}",
    "Wie viele {letter} hat das Wort {word}",
    "{word} 这个词里有几个 {letter}",
)


def spelling_bee(index: int, seed: int = 0, words=WORDS) -> dict:
    """Count a letter in a word: spell it out with a running count, then check with `.count` (nanochat's SpellingBee)."""
    rng = _rng("spelling_bee", index, seed)
    word = rng.choice(words)
    # Mostly a letter of the word, sometimes one that may not occur (nanochat: 90% / 10%).
    letter = rng.choice(word) if rng.random() < 0.9 else rng.choice("abcdefghijklmnopqrstuvwxyz")
    template = rng.choice(_SPELLING_QUESTIONS)
    shown_letter, shown_word = letter, word
    if rng.random() < 0.5:
        shown_letter, shown_word = f"'{letter}'", f"'{word}'"
    question = template.format(letter=shown_letter, word=shown_word)
    if rng.random() < 0.3:
        question = question.lower()
    if rng.random() < 0.5:
        question += "?"

    lines, count = [], 0
    for position, char in enumerate(word, start=1):
        if char == letter:
            count += 1
            lines.append(f"{position}:{char} hit! count={count}")
        else:
            lines.append(f"{position}:{char}")
    expression = f"'{word}'.count('{letter}')"
    answer = [
        _text(
            f"We need the number of '{letter}' in '{word}'. Spelling it out:\n{word}:{','.join(word)}\n\n"
            f"Counting '{letter}' letter by letter:\n" + "\n".join(lines) + f"\n\nThat makes {count}. "
            "Let me check with Python:\n\n"
        ),
        *_tool(expression),
        _text(f"\n\nPython agrees: {count}.\n\n#### {count}"),
    ]
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def simple_spelling(index: int, seed: int = 0, words=WORDS) -> dict:
    """nanochat's SimpleSpelling format exactly: `Spell the word: w` -> `w:l,e,t,t,e,r,s`."""
    word = _rng("simple_spelling", index, seed).choice(words)
    return {
        "messages": [
            {"role": "user", "content": f"Spell the word: {word}"},
            {"role": "assistant", "content": f"{word}:{','.join(word)}"},
        ]
    }


# ---------------------------------------------------------------------------------------------------------
# Identity

_IDENTITY_QA = (
    ("Who are you?", "I'm {name}, a small chat model. I was pretrained and fine-tuned with nanochat-hf."),
    ("What is your name?", "My name is {name}."),
    ("Who made you?", "I was built with nanochat-hf, a Hugging Face port of Andrej Karpathy's nanochat."),
    ("Are you ChatGPT?", "No, I'm {name}, a much smaller model trained with nanochat-hf."),
    ("What can you do?", "I can chat, answer simple questions, spell words and do arithmetic with a calculator tool."),
    ("Can you use tools?", "Yes: I can call a Python calculator for arithmetic and for counting letters in words."),
    ("How big are you?", "I'm a small transformer; my size depends on the depth I was trained with."),
    ("Hi!", "Hello! I'm {name}. How can I help you today?"),
    ("Hello, who am I talking to?", "You are talking to {name}, a small chat model."),
    ("Thanks!", "You're welcome!"),
)
_GREETINGS = ("", "Hey. ", "Hi there. ", "Quick question: ", "Hello! ")


def identity_conversation(index: int, seed: int = 0, name: str = ASSISTANT_NAME) -> dict:
    """One or two turns about who the assistant is."""
    rng = _rng("identity", index, seed)
    messages = []
    for _ in range(rng.choice((1, 1, 2))):
        question, answer = rng.choice(_IDENTITY_QA)
        messages.append({"role": "user", "content": rng.choice(_GREETINGS) + question})
        messages.append({"role": "assistant", "content": answer.format(name=name)})
    return {"messages": messages}


# ---------------------------------------------------------------------------------------------------------
# The embedded mixture

SYNTHETIC_TASKS = {
    "arithmetic": arithmetic_problem,
    "spelling_bee": spelling_bee,
    "simple_spelling": simple_spelling,
    "identity": identity_conversation,
}


def synthetic_conversations(task: str, size: int, seed: int = 0, **task_kwargs) -> list[dict]:
    """`size` conversations of one task, indices 0..size-1."""
    if task not in SYNTHETIC_TASKS:
        raise KeyError(f"unknown synthetic task {task!r}; expected one of {sorted(SYNTHETIC_TASKS)}")
    build = SYNTHETIC_TASKS[task]
    return [build(index, seed, **task_kwargs) for index in range(size)]


def embedded_conversations(size: int = 2000, seed: int = 0) -> list[dict]:
    """The embedded synthetic set: the four tasks in turn (arithmetic, spelling bee, spelling, identity)."""
    tasks = list(SYNTHETIC_TASKS.values())
    return [tasks[index % len(tasks)](index // len(tasks), seed) for index in range(size)]
