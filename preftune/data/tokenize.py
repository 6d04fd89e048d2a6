"""Token ids for prompt and responses: chat template, the prompt/response boundary on ids, BOS/EOS, truncation."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

from .records import Message, PreferencePair, Text, UnpairedExample

ChatTemplateMode = Literal["auto", "always", "never"]


@dataclass(frozen=True)
class TokenizeSettings:
    """`max_length` bounds prompt + each response; `max_prompt_length` bounds the prompt (its end is kept). Built by
    `DataConfig.tokenize_settings`, which holds the defaults."""

    chat_template: ChatTemplateMode
    max_length: int | None
    max_prompt_length: int | None
    completion_only: bool = True  # SFT: the loss covers the completion only (False: every token after the first)

    def key(self) -> str:
        return f"{self.chat_template}|{self.max_length}|{self.max_prompt_length}|{self.completion_only}"


@dataclass(frozen=True)
class TokenizedPair:
    """Token ids of one pair; the response lists hold exactly the response tokens, EOS last unless truncated."""

    prompt: list[int]
    chosen: list[int]
    rejected: list[int]
    weight: float = 1.0


def common_prefix_length(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class PairTokenizer:
    """Turns examples into `TokenizedPair`s with one tokenizer and one set of settings; counts truncations."""

    def __init__(self, tokenizer: Any, settings: TokenizeSettings):
        self.tok = tokenizer
        self.settings = settings
        self.eos = tokenizer.eos_token_id
        self.bos = tokenizer.bos_token_id
        probe = tokenizer("a").input_ids
        self.adds_bos = self.bos is not None and len(probe) > 0 and probe[0] == self.bos
        self.has_template = getattr(tokenizer, "chat_template", None) is not None
        self.counts: Counter[str] = Counter()

    def __call__(self, ex: PreferencePair) -> TokenizedPair | None:
        """The pair's ids, or None when truncation would leave a response empty (counted as dropped)."""
        prompt, chosen, rejected = ex.prompt, ex.chosen, ex.rejected
        if self._use_template(ex.conversational):
            prompt_msgs, chosen_msgs, rejected_msgs = _as_messages(prompt, "user"), _as_messages(chosen, "assistant"), _as_messages(rejected, "assistant")
            p = self._template(prompt_msgs, generation_prompt=True)
            fc = self._template(prompt_msgs + chosen_msgs)
            fr = self._template(prompt_msgs + rejected_msgs)
        else:
            p = self._encode(_flat(prompt))
            fc = self._encode(_flat(prompt) + _flat(chosen))
            fr = self._encode(_flat(prompt) + _flat(rejected))
        p, fc, fr = self._single_bos(p), self._single_bos(fc), self._single_bos(fr)
        boundary = min(common_prefix_length(p, fc), common_prefix_length(p, fr))
        if boundary < len(p):
            self.counts["prompt end merged into response"] += 1
        return self.truncate(p[:boundary], self._close(fc[boundary:]), self._close(fr[boundary:]), ex.weight)

    def prompt_ids(self, prompt: Text) -> list[int]:
        """The ids a response to `prompt` is generated after: exactly the prompt part of a pair built from it (template
        with generation prompt for message lists, plain text otherwise), with `max_prompt_length` applied."""
        if self._use_template(isinstance(prompt, list)):
            ids = self._single_bos(self._template(_as_messages(prompt, "user"), generation_prompt=True))
        else:
            ids = self._single_bos(self._encode(_flat(prompt)))
        return self._cut_prompt(ids)

    def _cut_prompt(self, prompt: list[int]) -> list[int]:
        """`prompt` with `max_prompt_length` applied: its end is kept, and a leading BOS stays first."""
        limit = self.settings.max_prompt_length
        if limit is None or len(prompt) <= limit:
            return prompt
        keep_bos = self.bos is not None and prompt[:1] == [self.bos]
        return ([self.bos] if keep_bos else []) + prompt[len(prompt) - (limit - int(keep_bos)):]

    def unpaired(self, ex: UnpairedExample) -> TokenizedPair | None:
        """An unpaired example (or an SFT completion) as a pair whose `rejected` is empty. An empty prompt (plain text)
        lends the completion's first token, which nothing predicts; with `completion_only` off, every token after the
        first counts as completion."""
        pair = PreferencePair(ex.prompt, ex.completion, ex.completion if isinstance(ex.completion, str) else list(ex.completion), weight=ex.weight)
        out = self(pair)
        if out is None:
            return None
        prompt, completion = out.prompt, out.chosen
        if not self.settings.completion_only or not prompt:
            prompt, completion = (prompt + completion)[:1], (prompt + completion)[1:]
        if not completion:
            self.counts["dropped: empty response after tokenization"] += 1
            return None
        return TokenizedPair(prompt, completion, [], out.weight)

    def _use_template(self, conversational: bool) -> bool:
        mode = self.settings.chat_template
        if mode == "never":
            return False
        if not self.has_template:
            if mode == "always" or conversational:
                from ..errors import DataError

                raise DataError("the tokenizer has no chat template, but data.chat_template needs one (conversational data, or 'always'). Fix: use a tokenizer with a chat template, or standard (string) data with data.chat_template: never.")
            return False
        return conversational or mode == "always"

    def _template(self, messages: list[Message], generation_prompt: bool = False) -> list[int]:
        out = self.tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=generation_prompt, return_dict=True)
        return list(out["input_ids"])

    def _encode(self, text: str) -> list[int]:
        ids = self.tok(text, add_special_tokens=False).input_ids
        return [self.bos, *ids] if self.adds_bos else list(ids)

    def _single_bos(self, ids: list[int]) -> list[int]:
        if self.bos is not None and len(ids) >= 2 and ids[0] == self.bos and ids[1] == self.bos:
            return ids[1:]
        return ids

    def _close(self, response: list[int]) -> list[int]:
        """End the response at its last EOS (dropping what a template puts after it), adding one if missing."""
        if self.eos is None:
            return response
        if self.eos in response:
            last = len(response) - 1 - response[::-1].index(self.eos)
            return response[: last + 1]
        return [*response, self.eos]

    def truncate(self, prompt: list[int], chosen: list[int], rejected: list[int], weight: float = 1.0) -> TokenizedPair | None:
        """Apply `max_prompt_length` and `max_length` to untruncated ids; None (counted) when the pair must be dropped."""
        s = self.settings
        if s.max_prompt_length is not None and len(prompt) > s.max_prompt_length:
            prompt = self._cut_prompt(prompt)
            self.counts["prompt truncated"] += 1
        if s.max_length is not None:
            room = s.max_length - len(prompt)
            if room < 1:
                self.counts["dropped: prompt fills max_length"] += 1
                return None
            if len(chosen) > room or len(rejected) > room:
                self.counts["response truncated"] += 1
                chosen, rejected = chosen[:room], rejected[:room]
        if not chosen or not rejected:
            self.counts["dropped: empty response after tokenization"] += 1
            return None
        return TokenizedPair(prompt, chosen, rejected, weight)


def _as_messages(value: Text, role: str) -> list[Message]:
    return value if isinstance(value, list) else [{"role": role, "content": value}]


def _flat(value: Text) -> str:
    if isinstance(value, str):
        return value
    return "".join(m["content"] for m in value)


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash that changes when the tokenizer's vocabulary, rules, special tokens or chat template change."""
    import hashlib

    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update(backend.to_str().encode() if backend is not None else repr(sorted(tokenizer.get_vocab().items())).encode())
    h.update(repr((type(tokenizer).__name__, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, getattr(tokenizer, "chat_template", None))).encode())
    return h.hexdigest()[:16]
