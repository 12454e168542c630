"""smollm2-135m served by a real tritonserver on loopback: text in, the local ONNX Runtime run's outputs out.

The real model goes through the whole path a user takes: fp32 ONNX export, `freeact-export
MODEL.onnx` (QuaRot W4A8 on a small calibration: the method does not matter here, the serving
does), `freeact-export triton`, then the server. About two minutes on 2 cores.
"""

import numpy as np
import pytest
from test_triton import require_local_server

from freeact_export import api
from freeact_export.api import rewrite_onnx
from freeact_export.config import CalibSpec
from freeact_export.deploy import triton_server
from freeact_export.runtime.ort_lm import OrtLogits

pytestmark = [pytest.mark.real_model, pytest.mark.triton_server]
pytest.importorskip("tritonclient.http", reason="tritonclient is not installed (tools/setup.sh installs it)")


def test_smollm2_repository_served_answers_text_like_the_local_run(smollm2_onnx, tmp_path):
    import tritonclient.http as http
    from tokenizers import Tokenizer

    require_local_server()
    rewritten = tmp_path / "quarot-w4a8"
    rewrite_onnx(str(smollm2_onnx[0]), rewritten, method="quarot", bits="w4a8", types="single",
                 calib=CalibSpec(windows=2, seqlen=128, min_tokens=4), progress=False)
    record = api.triton(rewritten, tmp_path / "repo", max_batch=2, max_tokens=256, max_new_tokens=4)
    assert "freeact_generate" in record["models"]

    local = OrtLogits(rewritten / "portable.onnx")
    tokenizer = Tokenizer.from_file(str(rewritten / "tokenizer.json"))
    texts = ["The capital of France is", "Water boils at"]
    with triton_server.running_server(tmp_path / "repo", tmp_path / "server", timeout_s=120) as server, \
            http.InferenceServerClient(server["http"], network_timeout=120) as client:
        for text in texts:
            ids = tokenizer.encode(text).ids
            want = local(np.array([ids])).numpy()
            prompt = http.InferInput("text", [1, 1], "BYTES")
            prompt.set_data_from_numpy(np.array([[text.encode()]], dtype=np.object_))
            result = client.infer("freeact_lm", [prompt])
            assert result.as_numpy("input_ids")[0].tolist() == ids
            np.testing.assert_array_equal(result.as_numpy("logits"), want)

            # Greedy generation on the server against the same loop run locally.
            generated = []
            for _ in range(4):
                generated.append(int(local(np.array([ids + generated])).numpy()[0, -1].argmax()))
            prompt = http.InferInput("text", [1], "BYTES")
            prompt.set_data_from_numpy(np.array([text.encode()], dtype=np.object_))
            answer = client.infer("freeact_generate", [prompt])
            assert answer.as_numpy("generated_ids").tolist() == generated
            assert answer.as_numpy("generated_text")[0].decode() == tokenizer.decode(generated,
                                                                                    skip_special_tokens=True)
