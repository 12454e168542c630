"""Token-type rules: which activation transform a token gets, computable at inference.

A rule set is written `name=kind:arg;name=kind:arg`, e.g. `sink=pos:1`, `mask=ids:126336`,
`image=ids:151655`, `vision=input:token_type_ids`, or combinations `sink=pos:1;mask=ids:126336`.
Type 0 is every token no rule claims ("other"); rule i (1-based) gives type i, and the first
rule that matches a token wins. `single` (or an empty string) means one type for all tokens.
"""

from __future__ import annotations

import dataclasses

import torch

KINDS = ("ids", "pos", "input")
# The attention sink: the first token of every window carries the massive activations of a
# decoder LM, so it is the rule worth having on text (README, token-type rules).
DEFAULT_TYPES = "sink=pos:1"


@dataclasses.dataclass(frozen=True)
class TokenTypeRule:
    """One rule.

    Attributes:
        name: the type's name in reports and plans.
        kind: "ids" (token id in a set), "pos" (position < count: attention sinks) or
            "input" (a non-zero entry of an explicit model input, e.g. a vision mask).
        ids: the id set for "ids".
        count: leading positions for "pos".
        input_name: the model input for "input".
    """

    name: str
    kind: str
    ids: tuple[int, ...] = ()
    count: int = 0
    input_name: str = ""

    def to_text(self) -> str:
        arg = {"ids": ",".join(map(str, self.ids)), "pos": str(self.count), "input": self.input_name}[self.kind]
        return f"{self.name}={self.kind}:{arg}"


@dataclasses.dataclass(frozen=True)
class TokenTypes:
    """An ordered rule set; num_types = len(rules) + 1 (type 0 = other)."""

    rules: tuple[TokenTypeRule, ...] = ()

    @property
    def num_types(self) -> int:
        return len(self.rules) + 1

    @property
    def names(self) -> tuple[str, ...]:
        return ("other", *(r.name for r in self.rules))

    def to_text(self) -> str:
        return ";".join(r.to_text() for r in self.rules) or "single"

    @classmethod
    def parse(cls, text: str) -> TokenTypes:
        """Parse the CLI form; ValueError with the offending part on bad syntax."""
        text = text.strip()
        if text in ("", "single"):
            return cls()
        rules = []
        for part in text.split(";"):
            name, sep, rest = part.strip().partition("=")
            kind, sep2, arg = rest.partition(":")
            if not (sep and sep2 and name and arg) or kind not in KINDS:
                raise ValueError(f"token-type rule '{part}' is not name=ids:1,2 | name=pos:N | name=input:NAME")
            if name in ("other", *(r.name for r in rules)):
                raise ValueError(f"token-type name '{name}' is used twice (or is the reserved 'other')")
            try:
                if kind == "ids":
                    rules.append(TokenTypeRule(name, kind, ids=tuple(int(i) for i in arg.split(","))))
                elif kind == "pos":
                    rules.append(TokenTypeRule(name, kind, count=int(arg)))
                else:
                    rules.append(TokenTypeRule(name, kind, input_name=arg))
            except ValueError:
                raise ValueError(f"token-type rule '{part}' needs integers after '{kind}:'") from None
            if kind == "pos" and rules[-1].count < 1:
                raise ValueError(f"token-type rule '{part}' selects no token: pos:N takes the first N >= 1 positions")
        return cls(tuple(rules))

    def assign(self, input_ids: torch.Tensor, extra_inputs: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Type of every token, int32 [batch, seq], from the model's own inputs."""
        types = torch.zeros(input_ids.shape, dtype=torch.int32, device=input_ids.device)
        positions = torch.arange(input_ids.shape[-1], device=input_ids.device).expand_as(input_ids)
        for index in range(len(self.rules), 0, -1):  # reversed, so the first matching rule wins
            rule = self.rules[index - 1]
            if rule.kind == "ids":
                hit = torch.isin(input_ids, torch.tensor(rule.ids, device=input_ids.device))
            elif rule.kind == "pos":
                hit = positions < rule.count
            else:
                if not extra_inputs or rule.input_name not in extra_inputs:
                    raise ValueError(f"token-type rule '{rule.name}' needs the model input '{rule.input_name}'")
                hit = extra_inputs[rule.input_name] != 0
            types = torch.where(hit, torch.full_like(types, index), types)
        return types
