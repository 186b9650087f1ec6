"""Prefix tuning against HF peft's PREFIX_TUNING on LlamaForCausalLM (logits, positions after
the virtual tokens, no RoPE on them), packed and padded rows (each document sees the prefix,
as when alone), the KV cache, and kernels that cannot take a prefix."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llama_jax import adapters
from llama_jax.core.errors import ConfigError
from llama_jax.inference import generate
from llama_jax.interop import peft as peft_io
from llama_jax.model import spec as spec_lib
from tests.references import peft_reference as ref

TOKENS = np.random.RandomState(2).randint(0, 128, size=(2, 20))
N = 4


def peft_prefix(tmp_path, **overrides):
  """(peft model, our config, our model with the same virtual tokens)."""
  from peft import PrefixTuningConfig, get_peft_model
  model, _, cfg, base = ref.base_and_config(**overrides)
  pm = get_peft_model(model, PrefixTuningConfig(num_virtual_tokens=N, task_type="CAUSAL_LM"))
  pm.eval()
  pm.save_pretrained(tmp_path / "prefix")
  adapter, params = peft_io.read_adapter(tmp_path / "prefix", cfg)
  return pm, cfg, adapter, spec_lib.combine(base, params)


def ours(cfg, adapter, params, **overrides):
  return spec_lib.from_params(cfg.replace(**overrides), params, adapter=adapter)


@pytest.mark.parametrize("heads", [dict(), dict(num_key_value_heads=4)])  # GQA and MHA
def test_logits_match_peft(tmp_path, heads):
  pm, cfg, adapter, params = peft_prefix(tmp_path, **heads)
  assert adapter == adapters.build("prefix", dict(num_virtual_tokens=N))
  want = ref.torch_logits(pm, TOKENS)
  got = np.asarray(ours(cfg, adapter, params)(jnp.asarray(TOKENS)))
  assert np.max(np.abs(got - want)) <= 1e-4, np.max(np.abs(got - want))
  # The real tokens' positions start after the virtual tokens, as in peft: without the offset
  # the scores against the (unrotated) prefix keys change.
  model = ours(cfg, adapter, params)
  model.position_offset = 0
  assert np.max(np.abs(np.asarray(model(jnp.asarray(TOKENS))) - want)) > 1e-3


@pytest.mark.parametrize("overrides", [
    dict(), dict(attention="xla_blocked"), dict(attention="chunked", attention_block_size=8),
    dict(scan_layers=False, remat="full")])
def test_packed_and_padded_rows_see_the_prefix_as_alone(tmp_path, overrides):
  """Row 0 packs two documents, row 1 is left-padded: each document's logits equal peft's on
  that document alone."""
  pm, cfg, adapter, params = peft_prefix(tmp_path)
  doc1, doc2 = TOKENS[0, :8], TOKENS[1, :12]
  tokens = np.stack([np.concatenate([doc1, doc2]), np.concatenate([[0] * 8, doc2])])
  segments = np.array([[1] * 8 + [2] * 12, [0] * 8 + [1] * 12], np.int32)
  positions = np.array([list(range(8)) + list(range(12)), [0] * 8 + list(range(12))], np.int32)
  got = np.asarray(ours(cfg, adapter, params, **overrides)(
      jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(segments)))
  want1 = ref.torch_logits(pm, doc1[None])[0]
  want2 = ref.torch_logits(pm, doc2[None])[0]
  np.testing.assert_allclose(got[0, :8], want1, atol=1e-4, rtol=0)
  np.testing.assert_allclose(got[0, 8:], want2, atol=1e-4, rtol=0)
  np.testing.assert_allclose(got[1, 8:], want2, atol=1e-4, rtol=0)


@pytest.mark.parametrize("attention", ["xla", "chunked"])
def test_kv_cache_decoding_equals_the_full_forward(tmp_path, attention):
  pm, cfg, adapter, params = peft_prefix(tmp_path)
  model = ours(cfg, adapter, params, attention=attention, attention_block_size=8)
  prompts = [list(TOKENS[0, :7]), list(TOKENS[1, :4])]
  padded = generate.pad_prompts(prompts)
  logits, cache = generate.prefill(model, padded, max_len=12)
  seqs = [list(p) for p in prompts]
  for _step in range(4):
    nxt = np.asarray(jnp.argmax(logits, -1))
    for row in range(2):
      full = ref.torch_logits(pm, np.asarray(seqs[row])[None])[0, -1]
      np.testing.assert_allclose(np.asarray(logits[row]), full, atol=1e-4, rtol=0)
      seqs[row].append(int(nxt[row]))
    positions = np.array([len(s) - 1 for s in seqs])
    logits, cache = generate.decode_step(model, nxt, positions, cache)
  assert generate.generate(model, prompts, 4) == [s[len(p):len(p) + 4] for s, p in
                                                  zip(seqs, prompts)]


def test_gradients_through_every_prefix_kernel():
  _, _, cfg, base = ref.base_and_config()
  adapter = adapters.build("prefix", dict(num_virtual_tokens=N))
  batch = dict(tokens=TOKENS[:, :-1], targets=TOKENS[:, 1:], loss_mask=np.ones((2, 19)),
               segment_ids=np.array([[1] * 9 + [2] * 10, [0] * 3 + [1] * 16], np.int32),
               positions=np.array([list(range(9)) + list(range(10)), [0] * 3 + list(range(16))],
                                  np.int32))
  from llama_jax.model import loss as loss_lib

  def grads(**overrides):
    spec = spec_lib.ModelSpec.build(cfg.replace(**overrides), adapter=adapter)
    params = jax.jit(lambda b: spec.init_params(0, b))(base)
    trainable, frozen = spec.split_trainable(params)
    return jax.grad(lambda t: loss_lib.batch_loss_sums(
        spec.merge(spec_lib.combine(t, frozen)), batch)[0])(trainable)

  want = grads()
  assert float(jnp.max(jnp.abs(want["layers"]["attention"]["prefix"]["key"]))) > 0
  for overrides in (dict(attention="xla_blocked"), dict(attention="chunked",
                                                         attention_block_size=8)):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 grads(**overrides), want)


@pytest.mark.parametrize("kernel", ["cudnn", "splash"])
def test_kernels_that_cannot_take_a_prefix_are_refused(kernel):
  _, _, cfg, _ = ref.base_and_config()
  cfg = cfg.replace(attention=kernel)
  with pytest.raises(ConfigError, match=rf"model.attention='{kernel}' cannot; allowed: \[.*"
                                        r"'chunked'.*'xla'.*'auto'\]"):
    adapters.build("prefix", dict(num_virtual_tokens=N), cfg)
  adapter = adapters.build("prefix", dict(num_virtual_tokens=N))  # no model given: not checked
  with pytest.raises(ConfigError, match="cannot take a shared prefix|cannot; allowed"):
    spec_lib.ModelSpec.build(cfg, adapter=adapter)
