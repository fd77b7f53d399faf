"""nginx's configuration read as a tree of directives, enough to check what deploy/ sets (not a
full parser: no `include`, no `*_by_lua` blocks)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TOKEN = re.compile(r"""'[^']*'|"[^"]*"|[{};]|[^\s{};'"#]+|#[^\n]*""")


@dataclass
class Directive:
    name: str
    args: list[str]
    children: list[Directive] = field(default_factory=list)

    def all(self, name: str) -> list[Directive]:
        return [d for d in self.children if d.name == name]

    def one(self, name: str) -> Directive:
        """Raised (AssertionError) unless the block holds exactly one `name`."""
        found = self.all(name)
        assert len(found) == 1, f"{self.name} {self.args}: {len(found)} {name!r}"
        return found[0]

    def walk(self) -> list[Directive]:
        return [self, *(d for child in self.children for d in child.walk())]


def parse(text: str) -> Directive:
    """The file as the children of a root block named "main"."""
    stack = [Directive("main", [])]
    words: list[str] = []
    for token in _TOKEN.findall(text):
        if token.startswith("#"):
            continue
        if token in (";", "{"):
            directive = Directive(words[0], [w.strip("'\"") for w in words[1:]])
            stack[-1].children.append(directive)
            if token == "{":
                stack.append(directive)
            words = []
        elif token == "}":
            assert not words and len(stack) > 1, f"unbalanced '}}' after {words}"
            stack.pop()
        else:
            words.append(token)
    assert len(stack) == 1 and not words, "unclosed block or directive"
    return stack[0]
