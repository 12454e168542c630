"""Triton Python-backend model: logits → the greedy next token (id and text) after each sequence.

Inputs logits [batch, tokens, vocab] FP32 and attention_mask [batch, tokens] INT64 (the last
position with mask 1 is the one predicted from); outputs next_token_id [batch, 1] INT64 and
next_token [batch, 1] BYTES, decoded with the model's tokenizer.json.
"""

import os
import sys

sys.path[:0] = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        folder = os.path.join(args["model_repository"], args["model_version"])
        self.tokenizer = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))

    def execute(self, requests):
        responses = []
        for request in requests:
            logits = pb_utils.get_input_tensor_by_name(request, "logits").as_numpy()
            mask = pb_utils.get_input_tensor_by_name(request, "attention_mask").as_numpy()
            last = np.maximum(mask.sum(axis=1) - 1, 0)
            ids = logits[np.arange(len(last)), last].argmax(axis=-1).astype(np.int64).reshape(-1, 1)
            text = np.array([[self.tokenizer.decode([int(i)], skip_special_tokens=False).encode("utf-8")]
                             for i in ids[:, 0]], dtype=np.object_)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("next_token_id", ids), pb_utils.Tensor("next_token", text)]))
        return responses
