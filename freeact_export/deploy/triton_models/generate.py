"""Triton Python-backend model: greedy generation of a bounded number of tokens (a BLS loop).

Input text [1] BYTES and optional max_new_tokens [1] INT32; outputs generated_ids [tokens]
INT64 and generated_text [1] BYTES. Each step sends the whole sequence to the language model
named by the parameter lm_model (no KV cache: a prefill per token, fine for short answers) and
stops at an end-of-sequence id.

Limits (parameters max_tokens and max_new_tokens, the repository's --max-tokens and
--max-new-tokens): the prompt and the tokens generated together must fit max_tokens, as they
would in one sequence. A request that cannot be served as asked gets an error naming the limit:
max_new_tokens below 1 or above the cap, or prompt tokens + max_new_tokens above max_tokens.
Without max_new_tokens the answer is at most the cap, shortened to what fits after the prompt;
a prompt that leaves no room for one token is an error.
"""

import json
import os
import sys

sys.path[:0] = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402


class _Refused(Exception):
    """A request beyond the model's limits (the message names the limit)."""


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        folder = os.path.join(args["model_repository"], args["model_version"])
        self.tokenizer = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
        self.lm_model = params["lm_model"]
        self.limit = int(params.get("max_new_tokens", "32"))
        self.max_tokens = int(params.get("max_tokens", "0"))
        self.eos = {int(i) for i in params.get("eos_token_ids", "").split(",") if i.strip()}

    def _next_token(self, ids):
        request = pb_utils.InferenceRequest(
            model_name=self.lm_model, requested_output_names=["logits"],
            inputs=[pb_utils.Tensor("input_ids", np.array([ids], dtype=np.int64)),
                    pb_utils.Tensor("attention_mask", np.ones((1, len(ids)), dtype=np.int64))])
        response = request.exec()
        if response.has_error():
            raise pb_utils.TritonModelException(response.error().message())
        logits = pb_utils.get_output_tensor_by_name(response, "logits").as_numpy()
        return int(logits[0, -1].argmax())

    def _steps(self, prompt, wanted):
        """How many tokens to generate, or raise naming the limit the request exceeds."""
        room = self.max_tokens - prompt if self.max_tokens else None
        if wanted is None:
            if room is not None and room < 1:
                raise _Refused(
                    f"the prompt is {prompt} tokens; this model takes at most {self.max_tokens} tokens "
                    "(the repository's --max-tokens), prompt and generated tokens together: shorten the prompt")
            return self.limit if room is None else min(self.limit, room)
        if wanted < 1:
            raise _Refused(f"max_new_tokens must be at least 1 (got {wanted})")
        if wanted > self.limit:
            raise _Refused(
                f"max_new_tokens {wanted} exceeds this model's cap of {self.limit} "
                "(the repository's --max-new-tokens)")
        if room is not None and wanted > room:
            raise _Refused(
                f"the prompt is {prompt} tokens and max_new_tokens {wanted}: {prompt + wanted} exceeds this "
                f"model's limit of {self.max_tokens} tokens (the repository's --max-tokens); shorten the "
                f"prompt or ask for at most {max(room, 0)} new tokens")
        return wanted

    def _generate(self, request):
        text = pb_utils.get_input_tensor_by_name(request, "text").as_numpy().reshape(-1)[0]
        text = text.decode("utf-8") if isinstance(text, bytes) else str(text)
        wanted = pb_utils.get_input_tensor_by_name(request, "max_new_tokens")
        ids = self.tokenizer.encode(text).ids
        steps = self._steps(len(ids), None if wanted is None else int(wanted.as_numpy().reshape(-1)[0]))
        generated = []
        for _ in range(steps):
            token = self._next_token(ids + generated)
            generated.append(token)
            if token in self.eos:
                break
        decoded = self.tokenizer.decode(generated, skip_special_tokens=True)
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("generated_ids", np.array(generated, dtype=np.int64)),
            pb_utils.Tensor("generated_text", np.array([decoded.encode("utf-8")], dtype=np.object_))])

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(self._generate(request))
            except _Refused as err:  # the client's to fix: HTTP 400, not 500
                error = pb_utils.TritonError(str(err), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
            except pb_utils.TritonModelException as err:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(err))))
        return responses
