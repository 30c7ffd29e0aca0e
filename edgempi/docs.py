"""docs/config.md, the reference of every config key, generated from the settings dataclasses.

``python -m edgempi.docs > docs/config.md`` regenerates it. A key's text is the string literal
on the line after its field (an attribute docstring, which IDEs show too); its allowed values
are what its section's ``check`` says of it (``one_of``, ``x in OPTIONS``, a ``require`` whose
reason starts with "must be"), or a registry's names; a method, compressor, data set or model
is described by its module's docstring when the module registers only it, else by its own
docstring (or ``doc``), and cites its ``paper``. Nothing is written while a key or an entry
has no text.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

from edgempi import config
from edgempi.registry import COMPRESSORS, DATASETS, METHODS, MODELS, Registry, SettingsRegistry
from edgempi.sweep import yaml_value

COMMAND = "python -m edgempi.docs > docs/config.md"
MISSING = "**undocumented**"
REGISTRIES = {r.key: r for r in (METHODS, COMPRESSORS, DATASETS, MODELS)}


def markdown(text: str | None) -> str:
    """A docstring on one Markdown line (``x`` → `x`)."""
    return " ".join((text or "").split()).replace("``", "`")


def first_sentence(text: str | None) -> str:
    return re.split(r"(?<=[.!?])(?<!al\.)(?<!e\.g\.)\s", markdown(text), maxsplit=1)[0] or MISSING


def _tree(obj: Any) -> ast.AST:
    return ast.parse(textwrap.dedent(inspect.getsource(obj)))


def field_docs(cls: type) -> dict[str, str]:
    """Field name → the string literal on the line after it, for the fields ``cls`` declares."""
    body = _tree(cls).body[0].body  # type: ignore[attr-defined]
    return {stmt.target.id: markdown(doc.value.value) for stmt, doc in zip(body, body[1:])
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and isinstance(doc, ast.Expr)
            and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str)}


def _text(node: ast.expr) -> str:
    """A key's or a reason's words: a string, or an f-string with its holes as "…"."""
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "…"
                       for v in node.values)
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else ""


def _options(node: ast.expr, scope: dict[str, Any]) -> str | None:
    """The options an ``x in OPTIONS`` names, if they are constants of the check's module."""
    try:
        options = eval(compile(ast.Expression(node), "<check>", "eval"), scope)  # the package's own source
    except Exception:  # a local variable of the check: not a fixed list
        return None
    return "one of " + ", ".join(f"`{o}`" for o in options)


def rules(cls: type) -> dict[str, str]:
    """Config key → its allowed values, as the ``check`` of ``cls`` and of its bases state them."""
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if "check" not in vars(klass):
            continue
        scope = vars(sys.modules[klass.__module__])
        for call in ast.walk(_tree(vars(klass)["check"])):
            name = getattr(getattr(call, "func", None), "id", "")
            if name not in ("one_of", "require", "_require") or len(call.args) != 3:  # type: ignore[attr-defined]
                continue
            if name == "one_of":
                _, options, key = call.args  # type: ignore[attr-defined]
                allowed = _options(options, scope)
            else:
                test, key, reason = call.args  # type: ignore[attr-defined]
                allowed = _options(test.comparators[0], scope) if isinstance(test, ast.Compare) and \
                    isinstance(test.ops[0], ast.In) else None
                if allowed is None and _text(reason).startswith("must be ") and _text(key) not in found:
                    stated = re.sub(r",? got …$", "", _text(reason).removeprefix("must be "))
                    allowed = re.sub(r" \([^()]*\)$", "", stated)
            if allowed:
                found[_text(key)] = allowed
    return found


def declared(cls: type) -> list[dataclasses.Field]:
    """The fields ``cls`` itself declares (not its bases)."""
    own = vars(cls).get("__annotations__", {})
    return [f for f in dataclasses.fields(cls) if f.name in own]


def type_text(hint: Any) -> str:
    """A field's type in YAML's words (``float | None`` → float or null)."""
    text = hint if isinstance(hint, str) else hint.__name__ if isinstance(hint, type) else repr(hint)
    return text.replace("typing.", "").replace(" | ", " or ").replace("None", "null")


def default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def table(cls: type, section: str, fields: list[dataclasses.Field]) -> Iterator[str]:
    docs = {k: v for klass in reversed(cls.__mro__) if dataclasses.is_dataclass(klass)
            for k, v in field_docs(klass).items()}
    allowed = rules(cls)
    yield "| key | type | default | allowed | meaning |"
    yield "| --- | --- | --- | --- | --- |"
    for f in fields:
        key = f"{section}.{f.name}".lstrip(".")
        registry = REGISTRIES.get(key)
        values = f"{', '.join(f'`{n}`' for n in registry)}, or `package.module:attr`" if registry else \
            allowed.get(key, "")
        value = registry.default if registry else default(f)
        yield f"| `{key}` | {type_text(f.type)} | `{yaml_value(value)}` | {values} | {docs.get(f.name) or MISSING} |"


def summary(registry: Registry[Any], name: str) -> str:
    """What an entry is, in the code's words: its module's docstring when the module registers
    nothing else (a method is one module), else the entry's own docstring (or ``doc``)."""
    entry = registry.get(name)
    if [registry.get(n).__module__ for n in registry].count(entry.__module__) == 1:
        return first_sentence(sys.modules[entry.__module__].__doc__)
    return first_sentence(getattr(entry, "doc", None) or entry.__doc__)


def paper(entry: Any) -> str:
    text = getattr(entry, "paper", "") or "—"
    return re.sub(r"arXiv:([0-9.]+[0-9])", r"[arXiv:\1](https://arxiv.org/abs/\1)", text)


def anchor(name: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^a-z0-9_ -]", "", name.lower()).replace(" ", "-")


def plugins(registry: SettingsRegistry[Any], section: str) -> Iterator[str]:
    """The keys every entry takes, then each settings class once: under the entry whose
    ``Settings`` it is, or among the shared ones; each entry names the classes it adds."""
    classes = {n: registry.settings_class(n) for n in registry}
    base = next(k for k in next(iter(classes.values())).__mro__ if all(issubclass(c, k) for c in classes.values()))
    owner: dict[type, str] = {}
    for name, cls in classes.items():
        owner.setdefault(cls, name)
    chains = {n: [k for k in reversed(c.__mro__) if issubclass(k, base) and k is not base and declared(k)]
              for n, c in classes.items()}
    yield f"Every `{section}.name` takes these keys (`{base.__name__}`):\n"
    yield from table(base, section, flat(base))
    for shared in dict.fromkeys(k for chain in chains.values() for k in chain if k not in owner):
        takers = ", ".join(f"`{n}`" for n, chain in chains.items() if shared in chain)
        yield f"\n### `{shared.__name__}`\n\n{first_sentence(shared.__doc__)} Taken by {takers}.\n"
        yield from table(shared, section, declared(shared))
    for name, cls in classes.items():
        cited = f"\nPaper: {paper(registry.get(name))}\n" if hasattr(registry.get(name), "paper") else ""
        yield f"\n### `{name}`\n\n{summary(registry, name)}\n{cited}"
        others = [owner.get(k, k.__name__) for k in chains[name] if owner.get(k) != name]
        if others:
            yield f"Also takes the keys of {', '.join(f'[`{o}`](#{anchor(o)})' for o in others)}.\n"
        yield from table(cls, section, declared(cls)) if owner[cls] == name and cls in chains[name] else \
            ["No keys of its own."]
    yield from subsections(base, section, "###")


def flat(cls: type) -> list[dataclasses.Field]:
    """The fields of ``cls`` that are keys, not sections of their own (``data.drift``)."""
    return [f for f in dataclasses.fields(cls) if not dataclasses.is_dataclass(default(f))]


def section(cls: type, name: str, level: str = "##") -> Iterator[str]:
    """A fixed section's table, then its subsections (``data.drift``)."""
    yield from table(cls, name, flat(cls))
    yield from subsections(cls, name, level)


def subsections(cls: type, name: str, level: str) -> Iterator[str]:
    """The sections nested in ``cls``: a plug-in's (``algorithm``: its entries and their keys) or
    a fixed one; a registry named by a key of a fixed one (``model.name``) lists its entries."""
    for f in dataclasses.fields(cls):
        if not dataclasses.is_dataclass(default(f)):
            continue
        key = f"{name}.{f.name}".lstrip(".")
        yield f"\n{level} `{key}`\n\n{field_docs(cls).get(f.name) or MISSING}\n"
        if f.metadata.get("registry"):
            yield from plugins(f.metadata["registry"], key)
            continue
        yield from section(type(default(f)), key, level + "#")
        for registry in (DATASETS, MODELS):
            if registry.key.startswith(f"{key}."):
                yield f"\n`{registry.key}`:\n"
                yield from (f"- `{n}`: {summary(registry, n)}" for n in registry)


def page() -> str:
    head = ["# Configuration reference", "",
            f"Generated from the settings dataclasses by `{COMMAND}`: do not edit it by hand.", "",
            "A config is YAML with a top-level `seed` and the sections below; `--set SECTION.KEY=VALUE`",
            "overrides any key. *allowed* is what `edgempi validate` checks.", ""]
    return "\n".join([*head, *section(config.RunConfig, "")]) + "\n"


def undocumented(text: str) -> list[str]:
    """The lines of ``text`` (a page) whose key or entry has no text."""
    return [line for line in text.splitlines() if MISSING in line]


def main() -> None:
    text = page()
    missing = undocumented(text)
    if missing:
        sys.exit("edgempi.docs: no text for:\n" + "\n".join(missing) + "\n(a key's text is the string on the line "
                 "after its field; an entry's its docstring)")
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
