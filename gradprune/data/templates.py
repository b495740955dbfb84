"""Named prompt templates that turn an instruction record into a prompt and the response to learn.

``alpaca`` is the template of Stanford Alpaca as alpaca-lora and LLM-Pruner's recovery use it (their
``templates/alpaca.json``): a record with ``instruction``, an optional ``input`` and ``output``. The prompt
is the template filled with the record; the response is ``output``, appended to the prompt unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gradprune.errors import DataError


@dataclass(frozen=True)
class PromptTemplate:
    """A prompt format: which fields a record needs, and the prompt with and without the optional input."""

    name: str
    description: str
    #: the prompt when the record's ``optional`` field is non-empty (``{field}`` placeholders)
    with_input: str
    #: the prompt when it is empty or absent
    without_input: str
    required: tuple[str, ...]
    optional: str
    response: str

    @property
    def fields(self) -> tuple[str, ...]:
        """Every field the template reads, required ones first."""
        return (*self.required, self.optional)

    def missing(self, record: Any) -> list[str]:
        """The required fields ``record`` lacks (or holds as something other than text)."""
        if not isinstance(record, Mapping):
            return list(self.required)
        return [f for f in self.required if not isinstance(record.get(f), str)]

    def prompt(self, record: Mapping[str, Any]) -> str:
        """The prompt of a record (without the response)."""
        extra = record.get(self.optional)
        values = {f: record.get(f) or "" for f in self.fields}
        return (self.with_input if isinstance(extra, str) and extra else self.without_input).format(**values)

    def full_text(self, record: Mapping[str, Any]) -> str:
        """The prompt followed by the response: the text the model is trained on."""
        return self.prompt(record) + record[self.response]


ALPACA = PromptTemplate(
    name="alpaca",
    description="Stanford Alpaca's prompt, as alpaca-lora and LLM-Pruner train with it",
    with_input=("Below is an instruction that describes a task, paired with an input that provides further "
                "context. Write a response that appropriately completes the request.\n\n"
                "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"),
    without_input=("Below is an instruction that describes a task. Write a response that appropriately "
                   "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"),
    required=("instruction", "output"),
    optional="input",
    response="output",
)

TEMPLATES: dict[str, PromptTemplate] = {ALPACA.name: ALPACA}


def get_template(name: str) -> PromptTemplate:
    """The template called ``name``; an unknown name is a DataError listing the known ones."""
    try:
        return TEMPLATES[name]
    except KeyError:
        raise DataError(f"unknown prompt template {name!r}; known: {', '.join(TEMPLATES)}") from None
