"""The calculator tool: a safe evaluator for the expressions a chat model writes between
`<|python_start|>` and `<|python_end|>`, as nanochat's engine evaluates them.

nanochat runs `eval` on the expression with empty builtins after a character filter and a denylist of
substrings. A filter over the text is easy to get wrong, so this module never calls `eval`: it parses
the expression with `ast` and walks the tree itself, allowing only

- numeric literals (int, float) and string literals;
- the operators + - * / // % ** and unary + -, with parentheses;
- calls of a few string methods on a string (`'strawberry'.count('r')`, `.lower()`, ...).

Everything else (names, attributes other than those methods, subscripts, comprehensions, lambdas,
imports, keyword arguments) is refused with a `CalculatorError` saying what was found. Resources are
bounded before any operation runs: the input length, the size of every intermediate integer and string,
the exponent of `**`, and the wall-clock time of the whole evaluation.

What matches nanochat: commas are removed from pure arithmetic ("1,000 * 3"), `/` is true division.
What differs on purpose: `**` is allowed (bounded; nanochat refuses it), and results are written the way
GSM8K writes them in its `<<48/2=24>>` annotations, which is what the model sees in training: a float
with an integral value is written as an integer ("24", where nanochat's `str` gives "24.0"), other
floats with 12 significant digits ("0.3", not "0.30000000000000004").
"""

import ast
import math
import operator
import time

from ..errors import UserInputError


MAX_EXPRESSION_CHARS = 500
MAX_INT_BITS = 4096  # about 1,233 decimal digits; every intermediate integer must fit
MAX_STRING_CHARS = 10_000  # every intermediate string must fit
MAX_EXPONENT = 10_000  # |b| in a ** b
MAX_NODES = 200  # syntax-tree nodes
TIME_LIMIT_SECONDS = 1.0
FLOAT_SIGNIFICANT_DIGITS = 12

# str methods the model may call, with how many positional arguments each accepts.
STRING_METHODS = {
    "count": (1, 3),
    "find": (1, 3),
    "lower": (0, 0),
    "upper": (0, 0),
    "strip": (0, 1),
    "startswith": (1, 3),
    "endswith": (1, 3),
    "replace": (2, 3),
}

_BINARY_OPERATORS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY_OPERATORS = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_ARITHMETIC_CHARACTERS = set("0123456789+-*/%.() \t\n,eE_")


class CalculatorError(UserInputError):
    """An expression the calculator refuses or cannot evaluate; the message says why."""


def _describe(node: ast.AST) -> str:
    names = {
        ast.Name: "a name",
        ast.Attribute: "an attribute",
        ast.Subscript: "indexing",
        ast.Lambda: "a lambda",
        ast.Compare: "a comparison",
        ast.BoolOp: "a boolean operator",
        ast.IfExp: "a conditional expression",
        ast.ListComp: "a comprehension",
        ast.GeneratorExp: "a comprehension",
        ast.List: "a list",
        ast.Tuple: "a tuple",
        ast.Dict: "a dict",
        ast.Set: "a set",
        ast.JoinedStr: "an f-string",
        ast.NamedExpr: "an assignment",
    }
    return names.get(type(node), type(node).__name__)


class _Evaluator:
    def __init__(self, deadline: float):
        self.deadline = deadline

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise CalculatorError(f"took longer than {TIME_LIMIT_SECONDS:g} s")

    def eval(self, node: ast.AST):
        self.check_time()
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise CalculatorError(f"literal {value!r} is not allowed (only numbers and strings)")
            return _bounded(value)
        if isinstance(node, ast.BinOp):
            operation = _BINARY_OPERATORS.get(type(node.op))
            if operation is None:
                raise CalculatorError(f"operator {type(node.op).__name__} is not allowed (only + - * / // % **)")
            left, right = self.eval(node.left), self.eval(node.right)
            return _binary(node.op, operation, left, right)
        if isinstance(node, ast.UnaryOp):
            operation = _UNARY_OPERATORS.get(type(node.op))
            if operation is None:
                raise CalculatorError(f"operator {type(node.op).__name__} is not allowed (only unary + and -)")
            operand = self.eval(node.operand)
            if isinstance(operand, str):
                raise CalculatorError("unary + and - apply to numbers, not strings")
            return operation(operand)
        if isinstance(node, ast.Call):
            return self.call(node)
        raise CalculatorError(
            f"{_describe(node)} is not allowed (only numbers, strings, + - * / // % ** and string methods)"
        )

    def call(self, node: ast.Call):
        function = node.func
        if not isinstance(function, ast.Attribute):
            name = function.id if isinstance(function, ast.Name) else _describe(function)
            raise CalculatorError(f"calling {name} is not allowed (only string methods such as 'word'.count('r'))")
        method = function.attr
        if method not in STRING_METHODS:
            raise CalculatorError(f"method .{method}() is not allowed; allowed: {', '.join(sorted(STRING_METHODS))}")
        if node.keywords or any(isinstance(arg, ast.Starred) for arg in node.args):
            raise CalculatorError(f".{method}() takes positional arguments only")
        low, high = STRING_METHODS[method]
        if not low <= len(node.args) <= high:
            raise CalculatorError(f".{method}() takes {low} to {high} arguments, got {len(node.args)}")
        receiver = self.eval(function.value)
        if not isinstance(receiver, str):
            raise CalculatorError(f".{method}() applies to a string, not to {type(receiver).__name__}")
        args = [self.eval(arg) for arg in node.args]
        if method in ("count", "find", "startswith", "endswith"):
            if not isinstance(args[0], str) or not all(isinstance(a, int) for a in args[1:]):
                raise CalculatorError(f".{method}() takes a string, then optional integer positions")
        elif method == "strip":
            if args and not isinstance(args[0], str):
                raise CalculatorError(".strip() takes an optional string")
        elif method == "replace":
            old, new = args[0], args[1]
            if not isinstance(old, str) or not isinstance(new, str) or not all(isinstance(a, int) for a in args[2:]):
                raise CalculatorError(".replace() takes two strings and an optional integer count")
            occurrences = receiver.count(old)
            if len(args) == 3 and args[2] >= 0:
                occurrences = min(occurrences, args[2])
            if len(receiver) + occurrences * (len(new) - len(old)) > MAX_STRING_CHARS:
                raise CalculatorError(f"the result would be longer than {MAX_STRING_CHARS:,} characters")
        return _bounded(getattr(receiver, method)(*args))


def _bounded(value):
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        raise CalculatorError(f"a number has more than {MAX_INT_BITS} bits")
    if isinstance(value, float) and not math.isfinite(value):
        raise CalculatorError("the result is not a finite number")
    if isinstance(value, str) and len(value) > MAX_STRING_CHARS:
        raise CalculatorError(f"a string is longer than {MAX_STRING_CHARS:,} characters")
    return value


def _binary(op: ast.operator, operation, left, right):
    """Apply a binary operator after checking its result cannot exceed the size bounds."""
    if isinstance(left, str) or isinstance(right, str):
        if isinstance(op, ast.Add) and isinstance(left, str) and isinstance(right, str):
            return _bounded(left + right)
        if isinstance(op, ast.Mult) and {type(left), type(right)} == {str, int}:
            text, times = (left, right) if isinstance(left, str) else (right, left)
            if len(text) * max(times, 0) > MAX_STRING_CHARS:
                raise CalculatorError(f"the result would be longer than {MAX_STRING_CHARS:,} characters")
            return text * times
        raise CalculatorError(f"operator {type(op).__name__} is not defined for these strings")
    if isinstance(op, ast.Pow):
        if abs(right) > MAX_EXPONENT:
            raise CalculatorError(f"exponent {right} is too large (at most {MAX_EXPONENT:,})")
        if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
            if right * math.log2(abs(left)) > MAX_INT_BITS:  # a ** b has about b * log2|a| bits
                raise CalculatorError(f"{left} ** {right} has more than {MAX_INT_BITS} bits")
    if isinstance(op, ast.Mult) and isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > MAX_INT_BITS + 1:
            raise CalculatorError(f"a product has more than {MAX_INT_BITS} bits")
    try:
        result = operation(left, right)
    except ZeroDivisionError:
        raise CalculatorError("division by zero") from None
    except OverflowError:
        raise CalculatorError("the result is too large") from None
    if isinstance(result, complex):
        raise CalculatorError("the result is a complex number")
    return _bounded(result)


def _is_statement(text: str) -> bool:
    try:
        ast.parse(text, mode="exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


def evaluate(expression: str):
    """Evaluate a calculator expression; returns an int, float, str or bool, or raises CalculatorError."""
    if not isinstance(expression, str):
        raise CalculatorError(f"expected the expression as text, got {type(expression).__name__}")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise CalculatorError(
            f"the expression is {len(expression):,} characters long (at most {MAX_EXPRESSION_CHARS})"
        )
    text = expression.strip()
    if not text:
        raise CalculatorError("the expression is empty")
    if set(text) <= _ARITHMETIC_CHARACTERS:
        text = text.replace(",", "")  # "1,000 * 3": thousands separators, as nanochat removes them
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as err:
        if _is_statement(text):
            raise CalculatorError(
                "statements (import, assignment, def, ...) are not allowed; write one expression"
            ) from None
        raise CalculatorError(f"not a valid expression ({err.msg})") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise CalculatorError(f"the expression has more than {MAX_NODES} parts")
    evaluator = _Evaluator(deadline=time.monotonic() + TIME_LIMIT_SECONDS)
    return evaluator.eval(tree.body)


def format_result(value) -> str:
    """The text fed back to the model: integers as digits, integral floats without ".0", others to 12 digits."""
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e16:
            return str(int(value))
        return format(value, f".{FLOAT_SIGNIFICANT_DIGITS}g")
    return str(value)


def run_calculator(expression: str) -> tuple[str, bool]:
    """The tool as the chat engine calls it: (text to feed back, whether it succeeded).

    Never raises for a bad expression: the model wrote it, so the error becomes the tool output
    ("Error: division by zero") and the conversation continues.
    """
    try:
        return format_result(evaluate(expression)), True
    except CalculatorError as err:
        return f"Error: {err}", False
    except (RecursionError, MemoryError, ValueError, TypeError, ArithmeticError) as err:
        # Deeply nested parentheses overflow the parser's stack; anything else the checks above missed
        # still must not take the chat down.
        return f"Error: cannot evaluate ({type(err).__name__})", False
