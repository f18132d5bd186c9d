"""The calculator tool: what it computes, and everything it refuses."""

import random

import pytest

from nanochat_hf.chat import calculator
from nanochat_hf.chat.calculator import CalculatorError, evaluate, format_result, run_calculator
from nanochat_hf.errors import UserInputError


@pytest.mark.parametrize(
    "expression, expected",
    [
        ("12 * 3 + 4", "40"),
        ("1,000 * 3", "3000"),  # thousands separators are removed, as nanochat does
        ("10/4", "2.5"),
        ("48/2", "24"),  # an integral float is written as GSM8K writes it, "24"
        ("0.1 + 0.2", "0.3"),
        ("7 // 2", "3"),
        ("-3 % 5", "2"),
        ("2 ** 10", "1024"),
        ("2 ** -2", "0.25"),
        ("-(3 - 5) * +2", "4"),
        ("'strawberry'.count('r')", "3"),
        ("'Mississippi'.lower().count('s')", "4"),
        ("'a,b,c'.count(',')", "2"),  # commas inside strings are kept
        ("'abc'.upper()", "ABC"),
        ("'banana'.replace('a', 'o')", "bonono"),
        ("'banana'.startswith('ban')", "True"),
    ],
)
def test_computes(expression, expected):
    assert run_calculator(expression) == (expected, True)


def test_matches_python_on_random_arithmetic():
    rng = random.Random(0)
    for _ in range(300):
        terms = [str(rng.randint(0, 999)) for _ in range(rng.randint(2, 5))]
        expression = terms[0]
        for term in terms[1:]:
            expression += rng.choice([" + ", " - ", " * ", " // ", " % ", " / "]) + term
        try:
            expected = eval(expression)  # noqa: S307 - the reference for digits and operators only, in a test
        except ZeroDivisionError:
            with pytest.raises(CalculatorError, match="division by zero"):
                evaluate(expression)
            continue
        assert evaluate(expression) == expected, expression


@pytest.mark.parametrize(
    "expression, message",
    [
        ("().__class__", "attribute"),
        ("'a'.__class__", "attribute"),
        ("'a'.__class__.__bases__", "attribute"),
        ("(1).real", "attribute"),
        ("import os", "statements"),
        ("from os import system", "statements"),
        ("__import__('os')", "calling __import__"),
        ("__import__('os').system('ls')", "not allowed"),
        ("x + 1", "a name"),
        ("open('/etc/passwd')", "calling open"),
        ("eval('1+1')", "calling eval"),
        ("'a'.join(['b'])", r"method \.join\(\) is not allowed"),
        ("'a'.count(x='a')", "positional"),
        ("2 ** 100000", "exponent"),
        ("9 ** 9 ** 9", "exponent"),
        ("10 ** 5000", "bits"),
        ("(10 ** 1000) * (10 ** 1000) * (10 ** 1000) * (10 ** 1000)", "bits"),
        ("'a' * 10 ** 7", "longer than"),
        ("'ab'.replace('', 'x' * 9000)", "longer than"),
        ("'%s' % 1", "not defined for these strings"),
        ("1 / 0", "division by zero"),
        ("1e308 * 10", "finite"),
        ("(-8) ** 0.5", "complex"),
        ("lambda: 1", "lambda"),
        ("[c for c in 'abc']", "comprehension"),
        ("1 if 1 else 2", "conditional"),
        ("1 < 2", "comparison"),
        ("True", "not allowed"),
        ("1 +", "not a valid expression"),
        ("", "empty"),
        ("1+" * 300 + "1", "characters long"),
    ],
)
def test_refuses(expression, message):
    with pytest.raises(CalculatorError, match=message):
        evaluate(expression)
    output, ok = run_calculator(expression)
    assert not ok and output.startswith("Error: ")


def test_errors_are_user_input_errors():
    assert issubclass(CalculatorError, UserInputError)


def test_deep_nesting_never_raises():
    assert run_calculator("(" * 200 + "1" + ")" * 200) in (
        ("1", True),
        ("Error: not a valid expression (too many nested parentheses)", False),
    )
    output, ok = run_calculator("-" * 400 + "1")
    assert not ok and "more than" in output


def test_time_is_bounded(monkeypatch):
    monkeypatch.setattr(calculator, "TIME_LIMIT_SECONDS", -1.0)  # the deadline has passed before the first step
    with pytest.raises(CalculatorError, match="took longer"):
        evaluate("1 + 1")


def test_format_result():
    assert format_result(5.0) == "5"
    assert format_result(1e20) == "1e+20"
    assert format_result(2 / 3) == "0.666666666667"
    assert format_result("<|assistant_end|>") == "<|assistant_end|>"
