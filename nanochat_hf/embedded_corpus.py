"""A small text corpus that ships with Python itself, for runs with no download.

Tokenizer training, smoke tests and the CPU quickstart need *some* natural-language text, and the
machines we run on may have no internet. Every Python installation carries a few MB of English prose
and code: the pydoc help topics (`pydoc_data.topics.topics`, the text behind `help("FOR")`) and the
docstrings of the standard library. This module walks them in a fixed order and yields one plain-text
document per help topic and per documented module, class, function or method (about 2 MB in all).

Determinism: the same Python build must give the same documents in the same order on every run and
machine, whatever else the process has imported. So

- modules come from a fixed, hand-picked list (not `sys.stdlib_module_names`, which includes modules
  with side effects such as `antigravity` or `this`);
- for modules written in Python, docstrings are read from the *source file* with `ast`, without
  importing the module: live objects can be swapped at run time (pytest replaces `pdb.set_trace`,
  torch and typing_extensions patch parts of `inspect` and `typing`) and lazily-created attributes
  appear or not depending on history. Definitions are taken in source order;
- only modules written in C (`math`, `sys`, `itertools`, ...) are imported and walked live, in sorted
  name order, skipping objects defined outside the standard library and hooks that tools replace;
- only docstrings are used, never signatures (default-value reprs can hold memory addresses).

A module missing from a minimal build (e.g. `sqlite3`) is skipped, so different builds may differ
slightly; `embedded_corpus_fingerprint()` tells corpora apart.
"""

import ast
import hashlib
import importlib
import importlib.util
import inspect
import sys
import warnings
from collections.abc import Iterator
from functools import cache
from pathlib import Path


# Walked in this order. Chosen for documentation volume; none of them has import-time side effects
# (no GUI toolkit, browser, printing or network), which matters for the few that are imported.
# fmt: off
STDLIB_MODULES = (
    "abc", "argparse", "array", "ast", "asyncio", "base64", "bisect", "builtins", "bz2", "calendar",
    "cmath", "cmd", "codecs", "collections", "collections.abc", "colorsys", "concurrent.futures",
    "configparser", "contextlib", "contextvars", "copy", "csv", "ctypes", "dataclasses", "datetime",
    "decimal", "difflib", "dis", "doctest", "email", "email.message", "email.utils", "enum", "filecmp",
    "fileinput", "fnmatch", "fractions", "ftplib", "functools", "gc", "getopt", "gettext", "glob",
    "graphlib", "gzip", "hashlib", "heapq", "hmac", "html", "html.parser", "http", "http.client",
    "http.cookiejar", "http.server", "imaplib", "importlib", "importlib.metadata", "inspect", "io",
    "ipaddress", "itertools", "json", "keyword", "linecache", "locale", "logging", "logging.handlers",
    "lzma", "mailbox", "math", "mimetypes", "multiprocessing", "numbers", "operator", "optparse", "os",
    "os.path", "pathlib", "pdb", "pickle", "pickletools", "pkgutil", "platform", "plistlib", "poplib",
    "pprint", "profile", "pstats", "queue", "quopri", "random", "re", "reprlib", "sched", "secrets",
    "selectors", "shelve", "shlex", "shutil", "signal", "smtplib", "socket", "socketserver", "sqlite3",
    "ssl", "stat", "statistics", "string", "struct", "subprocess", "symtable", "sys", "sysconfig",
    "tarfile", "tempfile", "textwrap", "threading", "time", "timeit", "token", "tokenize", "trace",
    "traceback", "tracemalloc", "types", "typing", "unicodedata", "unittest", "unittest.mock",
    "urllib.parse", "urllib.request", "uuid", "warnings", "wave", "weakref", "xml.dom.minidom",
    "xml.etree.ElementTree", "zipfile", "zlib", "zoneinfo",
    # Submodules and less common modules: more prose, mostly not re-exported above.
    "asyncio.base_events", "asyncio.events", "asyncio.futures", "asyncio.locks", "asyncio.protocols",
    "asyncio.queues", "asyncio.streams", "asyncio.subprocess", "asyncio.tasks", "asyncio.transports",
    "bdb", "code", "codeop", "compileall", "concurrent.futures.process", "concurrent.futures.thread",
    "copyreg", "dbm", "email.charset", "email.contentmanager", "email.feedparser", "email.generator",
    "email.header", "email.headerregistry", "email.mime.multipart", "email.mime.text", "email.parser",
    "email.policy", "errno", "faulthandler", "getpass", "http.cookies", "importlib.abc",
    "importlib.resources", "importlib.util", "json.decoder", "json.encoder", "logging.config",
    "modulefinder", "multiprocessing.connection", "multiprocessing.managers", "multiprocessing.pool",
    "multiprocessing.shared_memory", "netrc", "opcode", "py_compile", "pyclbr", "pydoc", "rlcompleter",
    "runpy", "stringprep", "tabnanny", "tomllib", "unittest.case", "unittest.loader", "unittest.result",
    "unittest.runner", "unittest.suite", "urllib.error", "urllib.robotparser", "wsgiref.handlers",
    "wsgiref.simple_server", "wsgiref.util", "wsgiref.validate", "xml.dom", "xml.dom.pulldom",
    "xml.parsers.expat", "xml.sax", "xml.sax.handler", "xml.sax.saxutils", "xmlrpc.client",
    "xmlrpc.server", "zipapp", "zipimport",
)
# fmt: on

# Docstrings shorter than this are mostly auto-generated one-liners ("Return self==value.").
MIN_DOCSTRING_CHARS = 40

# Hooks of C modules that debuggers, test runners and shells replace at run time.
RUNTIME_REPLACED_MEMBERS = frozenset({"sys.breakpointhook", "sys.displayhook", "sys.excepthook", "sys.unraisablehook"})


def _pydoc_topic_documents(seen: set[str]) -> Iterator[str]:
    from pydoc_data.topics import topics

    for name in sorted(topics):
        text = topics[name].strip()
        if text and text not in seen:  # several topic names share one text (e.g. "if" / "elif")
            seen.add(text)
            yield text


def _clean(doc) -> str | None:
    if not isinstance(doc, str):
        return None
    doc = inspect.cleandoc(doc).strip()
    return doc if len(doc) >= MIN_DOCSTRING_CHARS else None


def _is_walked_name(name: str) -> bool:
    # Private helpers often have good docstrings; dunders other than __init__ are boilerplate.
    return not name.startswith("__") or name == "__init__"


def _source_docstrings(module_name: str, source_path: str) -> Iterator[tuple[str, str | None]]:
    """(dotted name, docstring) for the module, its top-level functions and classes, and their methods."""
    tree = ast.parse(Path(source_path).read_bytes())
    yield module_name, ast.get_docstring(tree, clean=False)
    definitions = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    for node in tree.body:
        if not isinstance(node, definitions) or not _is_walked_name(node.name):
            continue
        yield f"{module_name}.{node.name}", ast.get_docstring(node, clean=False)
        if isinstance(node, ast.ClassDef):
            for child in node.body:
                if isinstance(child, definitions) and _is_walked_name(child.name):
                    yield f"{module_name}.{node.name}.{child.name}", ast.get_docstring(child, clean=False)


def _defined_in_stdlib(obj) -> bool:
    module_name = getattr(obj, "__module__", None)
    if module_name is None:  # e.g. method descriptors of builtin types: they live with their class
        return True
    return isinstance(module_name, str) and module_name.split(".")[0] in sys.stdlib_module_names


def _live_docstrings(module) -> Iterator[tuple[str, str | None]]:
    """(dotted name, docstring) for a module implemented in C, walked in sorted name order."""

    def documentable(obj) -> bool:
        return (inspect.isclass(obj) or inspect.isroutine(obj)) and _defined_in_stdlib(obj)

    module_name = module.__name__
    yield module_name, module.__doc__
    namespace = dict(vars(module))
    for name in sorted(namespace):
        member = namespace[name]
        qualified = f"{module_name}.{name}"
        if not _is_walked_name(name) or qualified in RUNTIME_REPLACED_MEMBERS or not documentable(member):
            continue
        yield qualified, member.__doc__
        if inspect.isclass(member):
            attributes = dict(vars(member))
            for attribute_name in sorted(attributes):
                attribute = attributes[attribute_name]
                if _is_walked_name(attribute_name) and (
                    inspect.isroutine(attribute) or isinstance(attribute, property)
                ):
                    yield f"{qualified}.{attribute_name}", attribute.__doc__


@cache
def _module_docstrings(module_name: str) -> tuple[tuple[str, str], ...]:
    """(dotted name, cleaned docstring) pairs of one module; cached, as parsing the sources takes a moment."""
    try:
        spec = importlib.util.find_spec(module_name)
    except Exception:  # a parent package that fails to import on this build
        spec = None
    if spec is None:
        return ()
    if spec.origin and spec.origin.endswith(".py"):
        docstrings = _source_docstrings(module_name, spec.origin)
    else:
        try:
            docstrings = _live_docstrings(importlib.import_module(module_name))
        except Exception:  # optional C extension missing on this build
            return ()
    cleaned = ((name, _clean(doc)) for name, doc in docstrings)
    return tuple((name, doc) for name, doc in cleaned if doc is not None)


def _module_documents(module_name: str, seen: set[str]) -> Iterator[str]:
    for qualified_name, doc in _module_docstrings(module_name):
        if doc in seen:  # re-exports and aliases share one docstring: keep the first
            continue
        seen.add(doc)
        yield f"{qualified_name}\n\n{doc}"


def iter_embedded_documents(max_docs: int | None = None) -> Iterator[str]:
    """Yield the embedded corpus as plain-text documents (about 2 MB in total), always in the same order.

    First the pydoc help topics (sorted by topic name), then, module by module in `STDLIB_MODULES` order,
    the docstrings of the module and of its classes, functions and methods, each headed by its dotted
    name. Identical texts are yielded once. `max_docs` stops early.
    """
    if max_docs is not None and max_docs <= 0:
        return
    count = 0
    seen: set[str] = set()
    sources = [_pydoc_topic_documents(seen)] + [
        _module_documents(name, seen) for name in STDLIB_MODULES
    ]  # generators: a module is looked at only when the walk reaches it
    for source in sources:
        while True:
            # Finding and importing old modules raises DeprecationWarnings that are not the caller's business.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                document = next(source, None)
            if document is None:
                break
            yield document
            count += 1
            if max_docs is not None and count >= max_docs:
                return


def embedded_corpus_fingerprint(max_docs: int | None = None) -> str:
    """SHA-256 over the documents (with their boundaries): equal fingerprints mean identical corpora."""
    digest = hashlib.sha256()
    for document in iter_embedded_documents(max_docs):
        encoded = document.encode("utf-8", errors="surrogatepass")
        digest.update(len(encoded).to_bytes(8, "little"))
        digest.update(encoded)
    return digest.hexdigest()
