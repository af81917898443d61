"""Any OpenAI-compatible ``/v1/completions`` server as a backend.

``OpenAICompletionsBackend`` sends one completion request per segment
(``openai.AsyncOpenAI``), so trajectories advance independently and the
server batches them continuously. It asks for the sampled tokens' log-probs
(``logprobs=1``) and maps ``finish_reason``/``stop_reason`` onto
``FINISH_*``.

Two modes, both covered:

- ``vllm_extensions=True`` (``vllm serve``): the prompt goes as token ids,
  and vLLM's extra request fields make the segment exact: the server returns
  the sampled token ids (``return_token_ids``), keeps the stop string and
  special tokens in the text, stops on the tokenizer's end-of-turn ids and
  honours ``top_k``. The ids then equal those of the in-process
  ``VLLMBackend``.
- ``vllm_extensions=False`` (other servers): only OpenAI's own fields are
  sent, and the ids are recovered by tokenizing the returned text with the
  model's tokenizer. That re-tokenization may split text differently from
  the sampled ids; log-probs are kept only when their count matches. A
  matched stop string that the server cut off is put back, and an EOS id is
  appended when the segment ended at EOS. A server that neither reports the
  matched stop (``stop_reason``/``matched_stop``) nor echoes it makes a stop
  string look like EOS. ``top_k`` cannot be sent and is refused.

Connection errors are retried with exponential backoff (the openai client's
own retry loop); when the server stays unreachable, ``ServerUnavailable``
names the URL. ``health_check`` (``GET /v1/models``) fails within seconds.

Not covered: chat completions, streaming, loading new weights into the
server (``load_weights`` raises; RL weight sync needs the in-process backend).
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.request

from thor_core.models import resolve_model

from .base import FINISH_EOS, FINISH_LENGTH, FINISH_STOP, Backend, Segment, SegmentRequest, eos_ids_of


class ServerUnavailable(RuntimeError):
    """No OpenAI-compatible server answers at the configured URL."""


class OpenAICompletionsBackend(Backend):
    """Segments from ``{base_url}/completions``.

    ``base_url`` is the server's root or its ``/v1`` (``http://host:8000``
    and ``http://host:8000/v1`` are the same). ``tokenizer`` is a local
    folder or any name ``thor_core.models.resolve_model`` knows; it defaults
    to ``model``, the served model name, which is asked from ``/v1/models``
    when not given.
    """

    name = "openai"

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        tokenizer: str | os.PathLike | None = None,
        api_key: str | None = None,
        vllm_extensions: bool = True,
        send_token_ids: bool | None = None,
        timeout: float = 600.0,
        max_retries: int = 3,
    ) -> None:
        from transformers import AutoTokenizer

        if tokenizer is None and model is None:
            raise ValueError("give the tokenizer (a folder or model name) or the served model name")
        self.base_url = base_url.rstrip("/") if base_url.rstrip("/").endswith("/v1") else base_url.rstrip("/") + "/v1"
        self.model = model
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY", "EMPTY")
        self.vllm_extensions = vllm_extensions
        self.send_token_ids = vllm_extensions if send_token_ids is None else send_token_ids
        self.timeout = timeout
        self.max_retries = max_retries
        self.tokenizer = AutoTokenizer.from_pretrained(
            resolve_model(str(tokenizer if tokenizer is not None else model))
        )
        self.eos_token_ids = eos_ids_of(self.tokenizer)
        self._client = None
        self._client_loop = None

    @classmethod
    def from_model_name(cls, name: str, base_url: str, **options) -> OpenAICompletionsBackend:
        """A backend whose tokenizer is ``name`` (e.g. ``embedded:...``); the served model is asked from the server."""
        return cls(base_url, tokenizer=name, **options)

    def health_check(self, timeout: float = 5.0) -> list[str]:
        """The served model names; ``ServerUnavailable`` at once when the server does not answer."""
        url = f"{self.base_url}/models"
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.api_key}"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                models = [m["id"] for m in json.load(response)["data"]]
        except urllib.error.HTTPError as e:
            raise ServerUnavailable(f"{url} answered HTTP {e.code}: {e.read()[:200]!r}") from e
        except (OSError, ValueError, KeyError) as e:  # refused, timed out, not JSON, not a model list
            raise ServerUnavailable(f"no OpenAI-compatible server answers at {url}: {e}") from e
        if not models:
            raise ServerUnavailable(f"{url} serves no model")
        return models

    async def generate(self, request: SegmentRequest) -> Segment:
        import openai

        if request.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {request.max_new_tokens}")
        try:
            client = self._client_for_this_loop()
            if self.model is None:
                self.model = (await client.models.list()).data[0].id
            response = await client.completions.create(**self._completion_args(request))
        except openai.APIConnectionError as e:
            raise ServerUnavailable(
                f"no OpenAI-compatible server answers at {self.base_url} (after {self.max_retries} retries): {e}"
            ) from e
        return self._segment(request, response.choices[0])

    def close(self) -> None:
        self._client = self._client_loop = None

    # -- helpers ---------------------------------------------------------
    def _client_for_this_loop(self):
        """One client per event loop: its connection pool belongs to the loop that made it."""
        import openai

        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = openai.AsyncOpenAI(
                base_url=self.base_url, api_key=self.api_key, timeout=self.timeout, max_retries=self.max_retries
            )
            self._client_loop = loop
        return self._client

    def _completion_args(self, request: SegmentRequest) -> dict:
        sampling = request.sampling
        prompt = (
            list(request.ids) if self.send_token_ids else self.tokenizer.decode(request.ids, skip_special_tokens=False)
        )
        args = dict(
            model=self.model,
            prompt=prompt,
            max_tokens=request.max_new_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            logprobs=1,  # the sampled token's log-prob (plus the top one)
        )
        if request.stop:
            args["stop"] = list(request.stop)
        if request.seed is not None:
            args["seed"] = request.seed
        if self.vllm_extensions:
            args["extra_body"] = dict(
                return_token_ids=True,
                include_stop_str_in_output=True,
                skip_special_tokens=False,
                stop_token_ids=sorted(self.eos_token_ids),
                add_special_tokens=False,  # a text prompt is already complete
                top_k=sampling.top_k,
            )
        elif sampling.top_k:
            raise ValueError("top_k needs a server with vLLM's extensions (vllm_extensions=True)")
        return args

    def _segment(self, request: SegmentRequest, choice) -> Segment:
        text = choice.text
        # vLLM reports the matched stop as stop_reason, SGLang as matched_stop: a string, a token id, or None
        reason = getattr(choice, "stop_reason", None) or getattr(choice, "matched_stop", None)
        if choice.finish_reason == "length":
            finish = FINISH_LENGTH
        elif choice.finish_reason != "stop":
            raise RuntimeError(f"{self.base_url}/completions ended with finish_reason={choice.finish_reason!r}")
        elif isinstance(reason, str) or any(s in text for s in request.stop):
            finish = FINISH_STOP
        else:
            finish = FINISH_EOS

        token_ids = getattr(choice, "token_ids", None)
        if token_ids is not None:
            ids = list(token_ids)
        else:
            if isinstance(reason, str) and not text.endswith(reason):
                text += reason  # OpenAI servers cut the stop string off
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            if finish == FINISH_EOS and (not ids or ids[-1] not in self.eos_token_ids):
                ids.append(reason if isinstance(reason, int) else self.tokenizer.eos_token_id)
        logprobs = choice.logprobs.token_logprobs if choice.logprobs is not None else None
        if logprobs is not None and len(logprobs) != len(ids):
            logprobs = None
        return Segment(ids=ids, logprobs=logprobs, finish=finish)
