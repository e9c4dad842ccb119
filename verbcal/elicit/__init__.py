"""Elicitation: ask a chat model for a probability per label and read what comes back.

The flow is template → backend (with the response cache) → parser:

* :mod:`verbcal.elicit.templates` renders chat messages from a prompt template;
* :mod:`verbcal.elicit.backend` sends them to any OpenAI-compatible endpoint,
  with retries (:mod:`~verbcal.elicit.retry`), rate limits
  (:mod:`~verbcal.elicit.ratelimit`) and token probabilities
  (:mod:`~verbcal.elicit.token_probs`), storing every response in the
  :mod:`verbcal.elicit.cache` before it is used; a provider profile
  (:mod:`~verbcal.elicit.providers`) decides what each endpoint is sent, and
  :mod:`~verbcal.elicit.replies` reads replies that hold no text;
* :mod:`verbcal.elicit.parse` reads the answer into probabilities with a status;
* :mod:`~verbcal.elicit.shots` adds few-shot and content-free exemplars to a
  template, and :mod:`~verbcal.elicit.injection` flags item texts that look
  like prompt injections;
* :class:`Elicitor` runs all three over many items; :mod:`~verbcal.elicit.dryrun`
  counts what a run would send and cost without sending it;
  :class:`~verbcal.elicit.batch.BatchJobs` sends the same requests through a
  provider's batch engine (:mod:`~verbcal.elicit.batch`), answering into the same cache.

The HTTP side (``Elicitor``, ``OpenAIBackend``, ``RetryPolicy``,
``ResponseCache``, ``LocalLlamaServer``) is imported on first use, so that
reading templates and parsing answers does not pay for the HTTP client's import.
"""

from __future__ import annotations

import importlib
from typing import Any

from verbcal.elicit.parse import ParseResult, parse_many, parse_verbalized
from verbcal.elicit.probes import content_free_inputs
from verbcal.elicit.templates import Template, list_templates, load_template
from verbcal.labels import check_label_names

_LAZY = {
    "BatchJobs": "verbcal.elicit.batch",
    "Elicitor": "verbcal.elicit.elicitor",
    "ElicitationSummary": "verbcal.elicit.elicitor",
    "OpenAIBackend": "verbcal.elicit.backend",
    "ProviderWarning": "verbcal.elicit.backend",
    "ProviderProfile": "verbcal.elicit.providers",
    "PROFILES": "verbcal.elicit.providers",
    "RetryPolicy": "verbcal.elicit.retry",
    "ResponseCache": "verbcal.elicit.cache",
    "LocalLlamaServer": "verbcal.elicit.local_server",
    "FewShotTemplate": "verbcal.elicit.shots",
    "Shot": "verbcal.elicit.shots",
    "few_shot": "verbcal.elicit.shots",
    "suspect_reasons": "verbcal.elicit.injection",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'verbcal.elicit' has no attribute {name!r}")


__all__ = [
    "PROFILES",
    "BatchJobs",
    "ElicitationSummary",
    "Elicitor",
    "FewShotTemplate",
    "LocalLlamaServer",
    "OpenAIBackend",
    "ParseResult",
    "ProviderProfile",
    "ProviderWarning",
    "ResponseCache",
    "RetryPolicy",
    "Shot",
    "Template",
    "check_label_names",
    "content_free_inputs",
    "few_shot",
    "list_templates",
    "load_template",
    "parse_many",
    "parse_verbalized",
    "suspect_reasons",
]
