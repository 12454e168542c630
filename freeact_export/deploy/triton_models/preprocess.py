"""Triton Python-backend model: text → input_ids, attention_mask with the model's tokenizer.json.

Input text [batch, 1] BYTES (UTF-8); outputs input_ids and attention_mask [batch, tokens]
INT64. Special tokens (a BOS) are added as the tokenizer's post-processor says; a batch of
texts of different lengths is padded on the right with mask 0. A text of more tokens than the
parameter max_tokens (--max-tokens) is an error that names that limit (so the ensemble's is too).
"""

import json
import os
import sys

sys.path[:0] = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        folder = os.path.join(args["model_repository"], args["model_version"])
        self.tokenizer = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
        self.pad_id = int(params.get("pad_token_id", "0"))
        self.max_tokens = int(params.get("max_tokens", "0"))

    def execute(self, requests):
        responses = []
        for request in requests:
            texts = pb_utils.get_input_tensor_by_name(request, "text").as_numpy().reshape(-1)
            encoded = [self.tokenizer.encode(_text(t)).ids for t in texts]
            longest = max(len(ids) for ids in encoded)
            if self.max_tokens and longest > self.max_tokens:
                error = pb_utils.TritonError(f"the text is {longest} tokens; this model takes at most "
                                             f"{self.max_tokens} (the repository's --max-tokens)",
                                             pb_utils.TritonError.INVALID_ARG)  # the client's to fix: HTTP 400
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            input_ids = np.full((len(encoded), longest), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(encoded), longest), dtype=np.int64)
            for row, ids in enumerate(encoded):
                input_ids[row, : len(ids)] = ids
                mask[row, : len(ids)] = 1
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("input_ids", input_ids), pb_utils.Tensor("attention_mask", mask)]))
        return responses
