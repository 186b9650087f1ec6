"""Which kernel `auto` and the fused kernels resolve to, per backend and problem."""
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llama_jax import attention
from llama_jax.model import llama as model_lib
from llama_jax.model import spec as spec_lib
from llama_jax.model.config import preset


@pytest.mark.parametrize("backend,kw,want", [
    ("cpu", {}, "xla_blocked"),
    ("cpu", {"decoding": True}, "xla"),
    ("cpu", {"packed": True}, "xla_blocked"),
    ("cpu", {"seq_len": attention.CPU_BLOCKED_MAX_LEN}, "xla_blocked"),
    ("cpu", {"seq_len": attention.CPU_BLOCKED_MAX_LEN + 1}, "chunked"),  # linear memory
    ("cpu", {"seq_len": 8192, "decoding": True}, "xla"),
    ("gpu", {"dtype": jnp.bfloat16}, "cudnn"),
    ("gpu", {"dtype": jnp.float32}, "chunked"),  # cuDNN flash needs 16-bit inputs
    ("gpu", {"dtype": jnp.bfloat16, "packed": True}, "chunked"),  # never attend across documents
    ("gpu", {"dtype": jnp.bfloat16, "decoding": True}, "chunked"),
    ("tpu", {}, "splash"),
    ("tpu", {"decoding": True}, "chunked"),
])
def test_auto_resolution(backend, kw, want):
  with mock.patch.object(jax, "default_backend", return_value=backend):
    assert attention.resolve("auto", **kw) == want


def test_fused_kernels_hand_decoding_to_chunked():
  assert attention.resolve("cudnn", decoding=True) == "chunked"
  assert attention.resolve("splash", decoding=True) == "chunked"
  assert attention.resolve("xla", decoding=True) == "xla"


def test_unknown_kernel_is_named():
  with pytest.raises(ValueError,
                     match=r"attention='flash' is not a known attention kernel; allowed"):
    attention.get("flash")


def test_cudnn_model_decodes_through_chunked_on_any_backend():
  """A model configured for cuDNN still generates (the fused kernel only trains)."""
  cfg = preset("tiny", attention="cudnn")
  m = model_lib.init(cfg)
  ref = spec_lib.from_params(cfg.replace(attention="xla"), spec_lib.to_params(m))
  tokens = jnp.asarray(np.random.RandomState(0).randint(0, 256, (1, 9)))
  cache = model_lib.KVCache.init(cfg, 1, 16)
  _, cache = m(tokens[:, :8], cache=cache)  # prefill is a decode against the cache
  out, _ = m(tokens[:, 8:], cache=cache)
  np.testing.assert_allclose(np.asarray(out[:, 0]), np.asarray(ref(tokens)[:, 8]), atol=1e-5)
