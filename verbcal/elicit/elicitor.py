"""Items × template × backend → predictions.

The :class:`Elicitor` renders every item through a prompt template, asks the
backend (which answers from its durable cache when it can), parses each answer
with :func:`verbcal.parse_verbalized` and returns one :class:`Prediction` per
item, in input order. Because every paid-for answer is committed to the cache
before it is parsed, an interrupted run simply runs again: answered items come
back from the cache and only the rest are requested.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from verbcal.calibrators.logits import invert_softmax, softmax
from verbcal.elicit.backend import CompletionResult, OpenAIBackend
from verbcal.elicit.circuit import CircuitBreaker
from verbcal.elicit.parse import FAILED, OK, REPAIRED, parse_verbalized
from verbcal.elicit.probes import content_free_inputs
from verbcal.elicit.retry import RequestFailedError
from verbcal.elicit.templates import Template, load_template, response_format
from verbcal.errors import BackendError, ConfigurationError
from verbcal.labels import LabelSet
from verbcal.predictions import ITEM, Item, Kind, Prediction
from verbcal.validation import Interval, check_param

#: Called after each finished item with (items done, items in all).
ProgressCallback = Callable[[int, int], None]

#: Failures that no other item will escape either (bad key, unknown model, no quota): stop the run.
RUN_STOPPING_FAILURES = frozenset({"401", "403", "404", "quota"})

#: Smoothing used when averaging several samples of one item in estimated-logit space.
SAMPLE_AVERAGING_EPS = 1e-3

#: Token counts recorded per prediction (``usage``) and per run, as the API reports them.
USAGE_KEYS = ("prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens")


@dataclass
class ElicitationSummary:
    """What a run did: items by parse status, and the backend's counters during the run."""

    items: int = 0
    by_status: Counter = field(default_factory=Counter)
    failure_reasons: Counter = field(default_factory=Counter)
    backend: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The summary as plain data."""
        return {
            "items": self.items,
            "by_status": dict(self.by_status),
            "failure_reasons": dict(self.failure_reasons),
            "backend": self.backend,
            "seconds": round(self.seconds, 3),
        }

    def __str__(self) -> str:
        b = self.backend
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(self.by_status.items()))
        lines = [
            f"{self.items} items in {self.seconds:.1f} s: {statuses}",
            f"requests sent {b.get('requests_sent', 0)}, cache hits {b.get('cache_hits', 0)}, "
            f"retries {sum(b.get('retries_by_reason', {}).values())}, "
            f"tokens {b.get('prompt_tokens', 0)} prompt ({b.get('cached_tokens', 0)} cached) + "
            f"{b.get('completion_tokens', 0)} completion "
            f"({b.get('reasoning_tokens', 0)} reasoning), replies without text included",
        ]
        no_text = b.get("no_text") or {}
        if no_text:
            kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(no_text.items()))
            lines.append(f"replies without text (paid, cached, not retried): {kinds}")
        for reason, count in self.failure_reasons.most_common(5):
            lines.append(f"  failed ×{count}: {reason}")
        return "\n".join(lines)


class Elicitor:
    """Ask a chat model for a probability per label on each item.

    Parameters
    ----------
    backend : OpenAIBackend
        Where requests go (with its cache, retries and rate limits).
    labels : sequence of str
        The label set, in the order of the probability columns.
    template : str, path or Template, default "distribution"
        A shipped template name (see :func:`verbcal.elicit.templates.list_templates`)
        or the path of your own.
    json_mode : {"none", "json_object", "json_schema"}, default "none"
        How to constrain the answer: OpenAI structured outputs
        (``json_schema``), the llama.cpp form (``json_object`` with a schema),
        or no constraint.
    samples : int, default 1
        Answers per item, and the parsed distributions are averaged in
        estimated-logit space (the geometric mean of the smoothed rows). Where
        the provider takes ``n`` they come in one request (the prompt is paid
        once); elsewhere each is a request of its own with seed ``seed + j``
        (see :meth:`requests`).
    temperature : float, default 0.0
        Sampling temperature sent with every request (left out for providers
        that accept only their default, such as OpenAI's reasoning models).
    max_tokens : int, optional
        Answer-length cap; None: the provider profile's default (256, or 4096 for
        reasoning models, whose hidden reasoning counts against it).
        Answer length limit (reasoning templates need more).
    seed : int or None, default 0
        Sent with every request (where the provider takes it), so that a rerun
        is the same request (and a cache hit); None sends no seed.
    reasoning_effort : str, optional
        Sent to providers that take it (``"low"``, ``"medium"``, ``"high"``…).
    aliases : mapping of str to str, optional
        Other names the model may use for a label, e.g. ``{"Yes": "True"}``.
    logprobs : bool, default False
        Also ask for the first answer token's ``top_logprobs`` and record the
        label probabilities they imply as ``token_probs``. With ``samples > 1``
        only the first sample's request asks for them.
    circuit_breaker : bool, default True
        Stop a run whose endpoint does not answer at all (nothing listening,
        no reply within the timeout, HTML or 5xx only) with an
        :class:`~verbcal.elicit.circuit.EndpointDownError` within seconds,
        instead of retrying every item (see :class:`~verbcal.elicit.circuit.CircuitBreaker`).

    Examples
    --------
    >>> backend = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1")
    >>> elicitor = Elicitor(backend, ["negative", "positive"], template="top1")
    >>> elicitor.template.name
    'top1'
    """

    def __init__(
        self,
        backend: OpenAIBackend,
        labels: Sequence[str],
        *,
        template: str | Template = "distribution",
        json_mode: str = "none",
        samples: int = 1,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        seed: int | None = 0,
        aliases: Mapping[str, str] | None = None,
        logprobs: bool = False,
        circuit_breaker: bool = True,
        reasoning_effort: str | None = None,
    ) -> None:
        if not (isinstance(samples, int) and samples >= 1):
            raise ConfigurationError(f"samples must be an int >= 1, got {samples!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ConfigurationError(f"seed must be an int or None, got {seed!r}")
        check_param("temperature", temperature, [Interval("real", 0, 2)])
        check_param("max_tokens", max_tokens, [None, Interval("integer", 1, None)])
        fixed = backend.profile.temperature == "default_only"
        if samples > 1 and temperature == 0 and not fixed:
            raise ConfigurationError(
                "samples > 1 needs temperature > 0: at temperature 0 every sample is the same"
            )
        self.backend = backend
        self.label_set = LabelSet(labels, aliases)
        self.labels = self.label_set.labels
        self.template = template if isinstance(template, Template) else load_template(template)
        self.response_format = response_format(self.template, self.labels, json_mode)
        self.samples = samples
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.seed = seed
        self.reasoning_effort = reasoning_effort
        self.logprobs = logprobs
        self.circuit_breaker = circuit_breaker
        self._breaker: CircuitBreaker | None = None

    # ------------------------------------------------------------------ running

    def run(
        self, items: Sequence[Item], *, progress: ProgressCallback | None = None
    ) -> tuple[list[Prediction], ElicitationSummary]:
        """Predictions for ``items`` in input order, and a summary (blocking)."""
        return asyncio.run(self.arun(items, progress=progress))

    async def arun(
        self,
        items: Sequence[Item],
        *,
        kind: Kind = ITEM,
        progress: ProgressCallback | None = None,
    ) -> tuple[list[Prediction], ElicitationSummary]:
        """Predictions for ``items`` in input order, and a summary."""
        started = time.perf_counter()
        stats_before = self.backend.stats.as_dict()
        predictions: list[Prediction | None] = [None] * len(items)
        pending = iter(enumerate(items))  # shared: each item goes to the next free worker
        done = 0

        async def work() -> None:
            nonlocal done
            for index, item in pending:
                predictions[index] = await self._predict(item, kind)
                done += 1
                if progress is not None:
                    progress(done, len(items))

        # Items are prepared as workers free up rather than all at once: rendering
        # and looking up thousands of items before the first request would delay it.
        # Twice the backend's concurrency keeps every slot busy.
        n_workers = min(len(items), 2 * self.backend.max_concurrency)
        if self.circuit_breaker:
            self._breaker = CircuitBreaker(self.backend.base_url)
            self.backend.attempt_observers.append(self._breaker.observe)
        workers = [asyncio.ensure_future(work()) for _ in range(n_workers)]
        try:
            await asyncio.gather(*workers)
        finally:
            for worker in workers:  # after a run-stopping failure, stop the rest
                worker.cancel()
            if self._breaker is not None:
                self.backend.attempt_observers.remove(self._breaker.observe)
                self._breaker = None
        finished = [p for p in predictions if p is not None]
        summary = ElicitationSummary(
            items=len(finished), backend=self.backend.stats.since(stats_before)
        )
        for prediction in finished:
            summary.by_status[prediction.status] += 1
            if prediction.status == FAILED:
                summary.failure_reasons[prediction.detail] += 1
        summary.seconds = time.perf_counter() - started
        return finished, summary

    def probe_items(self, in_domain_texts: Sequence[str] | None = None, **kwargs) -> list[Item]:
        """Content-free probe items ("N/A", "", "[MASK]", random in-domain words).

        Keyword arguments go to :func:`verbcal.elicit.probes.content_free_inputs`.
        Run them with ``arun(items, kind="content_free")``.
        """
        texts = content_free_inputs(in_domain_texts, **kwargs)
        return [Item(id=f"cf{i + 1}", text=text) for i, text in enumerate(texts)]

    # ------------------------------------------------------------------ one item

    def requests(self, item: Item) -> list[tuple[list[dict], dict[str, Any]]]:
        """The requests an item needs: ``(messages, keyword arguments)`` pairs.

        What :meth:`arun` passes to ``backend.complete`` (and the batch path to
        ``backend.prepare``), so both ask for exactly the same requests.

        Samples are numbered from 0; sample ``j`` is asked with seed ``seed + j``.
        Where the provider takes no ``n``, each sample is a request of its own.
        Where it does, the samples come in one request with ``n`` choices, and
        answers already cached are reused: the samples still missing from
        sample ``j`` on are covered by a cached request starting there (the
        smallest holding enough choices, else the largest holding fewer), and
        what no cached request covers is one new request. So a rerun with
        more samples pays only for the new ones, and one with fewer pays nothing.
        """
        messages = self.template.render(item.text, self.labels, item.options)
        common: dict[str, Any] = {
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "response_format": self.response_format,
            "reasoning_effort": self.reasoning_effort,
        }
        if self.samples == 1 or not self.backend.profile.n:
            return [(messages, {**common, **self._samples(j, 1)}) for j in range(self.samples)]
        plan = []
        first = 0
        while first < self.samples:
            need = self.samples - first
            n = self._cached_choices(messages, common, first, need) or need
            plan.append((messages, {**common, **self._samples(first, n)}))
            first += n
        return plan

    def _samples(self, first: int, n: int) -> dict[str, Any]:
        """Request arguments for ``n`` samples from sample ``first`` on."""
        seed = None if self.seed is None else self.seed + first
        # Token probabilities are read from the first sample only, so only its
        # request pays for them (on llama.cpp they cost several seconds each).
        labels = self.label_set if self.logprobs and first == 0 else None
        args: dict[str, Any] = {"seed": seed, "sample": first, "logprob_labels": labels}
        if n > 1:
            args["n"] = n
        return args

    def _cached_choices(
        self, messages: list[dict], common: dict[str, Any], first: int, need: int
    ) -> int | None:
        """Choices of a cached request for samples from ``first`` on (see :meth:`requests`)."""
        if self.backend.cache is None:
            return None
        for n in (*range(need, 2 * need + 1), *range(need - 1, 0, -1)):
            if self.backend.lookup(messages, **common, **self._samples(first, n)) is not None:
                return n
        return None

    async def _predict(self, item: Item, kind: Kind) -> Prediction:
        answers = await asyncio.gather(
            *(self._ask(messages, kwargs) for messages, kwargs in self.requests(item))
        )
        base = Prediction(id=item.id, labels=list(self.labels), probs=None, status=FAILED)
        base.label, base.kind = item.label, kind
        failed = [a for a in answers if isinstance(a, RequestFailedError)]
        results = [a for a in answers if isinstance(a, CompletionResult)]
        if not results:
            base.detail = f"request failed ({failed[0].kind}): {failed[0]}"
            return base
        # The samples in order: each request's choices, as many as the item still needs.
        choices = [choice for r in results for choice in r.choices][: self.samples]
        base.raw = choices[0].text or "" if self.samples == 1 else [c.text or "" for c in choices]
        base.usage = {key: sum(r.usage.get(key, 0) for r in results) for key in USAGE_KEYS}
        base.usage["from_cache"] = all(r.from_cache for r in results)
        if self.logprobs and results[0].label_probabilities is not None:
            base.token_probs = results[0].label_probabilities
        texts = [c.text for c in choices if c.text is not None]
        if not texts:
            # Paid for and cached, but nothing to parse: say why (refusal, content filter…).
            reasons = dict.fromkeys(c.reason for c in choices)
            base.detail = "no answer text: " + "; ".join(reasons)
            return base
        return self._combine(base, texts)

    def _combine(self, base: Prediction, texts: list[str]) -> Prediction:
        parsed = [parse_verbalized(text, self.label_set) for text in texts]
        good = [p for p in parsed if p.probs is not None]
        if not good:
            base.detail = "; ".join(parsed[0].detail)
            return base
        stated = np.array([p.probs for p in good])
        if len(good) == 1:
            probs = stated[0]
        else:
            probs = softmax(invert_softmax(stated, eps=SAMPLE_AVERAGING_EPS).mean(axis=0))
        notes = [d for p in good for d in p.detail if p.status == REPAIRED]
        lost = self.samples - len(good)  # failed requests, replies without text, unparsed
        if lost:
            notes.append(f"{lost} of {self.samples} samples unusable")
        base.probs = {label: float(p) for label, p in zip(self.labels, probs, strict=True)}
        if self.samples > 1:  # each sample's reading, for the spread (multi-signal calibration)
            base.samples = [
                {label: float(p) for label, p in zip(self.labels, row, strict=True)}
                for row in stated
            ]
        base.status = REPAIRED if notes else OK
        base.detail = "; ".join(dict.fromkeys(notes))
        return base

    async def _ask(
        self, messages: list[dict], kwargs: dict[str, Any]
    ) -> CompletionResult | RequestFailedError:
        try:
            return await self.backend.complete(messages, **kwargs)
        except RequestFailedError as exc:
            if exc.kind in RUN_STOPPING_FAILURES:
                raise BackendError(f"stopping the run: {exc}") from None
            if self._breaker is not None:
                self._breaker.request_failed(exc)
            return exc
