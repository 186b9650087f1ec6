"""RoPE methods against float64 formulas, the reference test vectors, HF, and their invariants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llama_jax import rope
from llama_jax.rope import RopeConfig, embedding, ramp
from tests.references import rope_reference as ref


def freqs(cfg: RopeConfig, d: int, seq_len=1):
  rope.validate(cfg, d)
  inv, att = rope.frequencies(cfg, d, jnp.asarray(seq_len))
  assert inv.dtype == jnp.float32 and att.dtype == jnp.float32
  return np.asarray(inv, np.float64), float(att)


def close(got, want, rtol=1e-6):
  np.testing.assert_allclose(got, want, rtol=rtol, atol=0)


# ----------------------------------------------------------------- float64 formulas
FORMULA_CASES = [
    (RopeConfig("default", 10000.0), lambda: ref.default(1e4, 128)),
    (RopeConfig("default", 500000.0), lambda: ref.default(5e5, 64)),
    (RopeConfig("linear", 1e4, factor=4.0), lambda: ref.linear(1e4, 128, 4.0)),
    (RopeConfig("ntk", 1e4, factor=8.0), lambda: ref.ntk(1e4, 128, 8.0)),
    (RopeConfig("ntk_by_parts", 1e4, factor=16.0, original_max_position_embeddings=4096),
     lambda: ref.ntk_by_parts(1e4, 128, 16.0, 4096)),
    (RopeConfig("ntk_by_parts", 1e4, factor=8.0, original_max_position_embeddings=2048,
                beta_fast=16, beta_slow=2), lambda: ref.ntk_by_parts(1e4, 128, 8.0, 2048, 16, 2)),
    (RopeConfig("yarn", 1e4, factor=16.0, original_max_position_embeddings=4096),
     lambda: ref.yarn(1e4, 128, 16.0, 4096)),
    (RopeConfig("yarn", 1.5e5, factor=32.0, original_max_position_embeddings=4096,
                truncate=False), lambda: ref.yarn(1.5e5, 64, 32.0, 4096, truncate=False)),
    (RopeConfig("yarn", 1e4, factor=40.0, original_max_position_embeddings=4096, mscale=1.0,
                mscale_all_dim=0.707), lambda: ref.yarn(1e4, 64, 40.0, 4096, m=1.0, m_all=0.707)),
    (RopeConfig("yarn", 1e4, factor=4.0, original_max_position_embeddings=2048,
                attention_factor=1.5, beta_fast=24, beta_slow=2),
     lambda: ref.yarn(1e4, 128, 4.0, 2048, 24, 2, attention_factor=1.5)),
    (RopeConfig("llama3", 5e5, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                original_max_position_embeddings=8192),
     lambda: ref.llama3(5e5, 128, 8.0, 1.0, 4.0, 8192)),
]


@pytest.mark.parametrize("cfg,reference", FORMULA_CASES,
                         ids=[f"{c.rope_type}-{i}" for i, (c, _) in enumerate(FORMULA_CASES)])
def test_static_methods_match_float64_formulas(cfg, reference):
  d = 64 if cfg.rope_theta in (5e5, 1.5e5) or cfg.factor == 40.0 else 128
  if cfg.rope_type == "llama3":
    d = 128
  want_inv, want_att = reference()
  got_inv, got_att = freqs(cfg, d)
  close(got_inv, want_inv)
  assert got_att == pytest.approx(want_att, rel=1e-6)


@pytest.mark.parametrize("seq_len", [10, 4096, 5000, 8192, 16384, 100000])
def test_dynamic_ntk_matches_formula(seq_len):
  cfg = RopeConfig("dynamic", 1e4, factor=2.0, max_position_embeddings=4096)
  got, att = freqs(cfg, 128, seq_len)
  want, _ = ref.dynamic(1e4, 128, 2.0, seq_len, 4096)
  close(got, want, rtol=2e-6)
  assert att == 1.0


@pytest.mark.parametrize("seq_len", [100, 4096, 4097, 20000, 65536, 131072])
def test_dynamic_yarn_matches_formula(seq_len):
  cfg = RopeConfig("dynamic_yarn", 1e4, original_max_position_embeddings=4096)
  got, att = freqs(cfg, 128, seq_len)
  want, want_att = ref.dynamic_yarn(1e4, 128, seq_len, 4096)
  close(got, want)
  assert att == pytest.approx(want_att, rel=1e-6)
  # A fine-tuned model starts from its trained factor and only grows beyond it.
  tuned = RopeConfig("dynamic_yarn", 1e4, factor=16.0, original_max_position_embeddings=4096)
  got, att = freqs(tuned, 128, seq_len)
  want, want_att = ref.dynamic_yarn(1e4, 128, seq_len, 4096, factor=16.0)
  close(got, want)
  assert att == pytest.approx(want_att, rel=1e-6)


def test_dynamic_methods_vectorise_over_a_batch_of_lengths():
  cfg = RopeConfig("dynamic_yarn", 1e4, original_max_position_embeddings=64)
  lengths = jnp.array([10, 64, 200, 1000])
  inv, att = rope.frequencies(cfg, 32, lengths)
  assert inv.shape == (4, 16) and att.shape == (4,)
  for i, n in enumerate([10, 64, 200, 1000]):
    want, want_att = ref.dynamic_yarn(1e4, 32, n, 64)
    close(np.asarray(inv[i], np.float64), want)
    assert float(att[i]) == pytest.approx(want_att, rel=1e-6)


def test_longrope_switches_strictly_above_original_length():
  rng = np.random.RandomState(0)
  short = tuple(1 + rng.rand(32))
  long = tuple(1 + 10 * rng.rand(32))
  cfg = RopeConfig("longrope", 1e4, short_factor=short, long_factor=long,
                   original_max_position_embeddings=4096, max_position_embeddings=131072)
  for n in (1, 4096, 4097, 131072):
    got, att = freqs(cfg, 64, n)
    want, want_att = ref.longrope(1e4, 64, short, long, n, 4096, max_len=131072)
    close(got, want)
    assert att == pytest.approx(want_att, rel=1e-6)
  assert freqs(cfg, 64, 4096)[0][5] == pytest.approx(ref.theta(1e4, 64)[5] / short[5], rel=1e-6)
  assert freqs(cfg, 64, 4097)[0][5] == pytest.approx(ref.theta(1e4, 64)[5] / long[5], rel=1e-6)


# ----------------------------------------------------------------- reference test vectors
@pytest.mark.parametrize("s,base", [(2, 20221.26), (4, 40889.94), (8, 82684.62), (16, 167198.74)])
def test_ntk_vectors(s, base):
  inv, _ = freqs(RopeConfig("ntk", 1e4, factor=float(s)), 128)
  assert inv[0] == 1.0
  assert (1e4 ** (-126 / 128)) / inv[63] == pytest.approx(s, rel=1e-5)
  assert inv[1] ** (-64) == pytest.approx(base, rel=1e-5)  # θ_1 = b'^(-2/128)


@pytest.mark.parametrize("seq_len,base", [(4096, 10000.0), (8192, 30527.74), (16384, 72195.86)])
def test_dynamic_ntk_vectors(seq_len, base):
  inv, _ = freqs(RopeConfig("dynamic", 1e4, factor=2.0, max_position_embeddings=4096), 128,
                 seq_len)
  assert inv[1] ** (-64) == pytest.approx(base, rel=1e-4)


def test_yarn_llama2_vectors():
  assert ramp.correction_range(32, 1, 128, 1e4, 4096) == (20, 46)
  raw_low = ramp.correction_dim(32, 128, 1e4, 4096)
  raw_high = ramp.correction_dim(1, 128, 1e4, 4096)
  assert (raw_low, raw_high) == (pytest.approx(20.944, abs=1e-3), pytest.approx(45.027, abs=1e-3))
  w = np.asarray(ramp.extrapolation_weight(
      RopeConfig("yarn", 1e4, factor=2.0, original_max_position_embeddings=4096), 128))
  np.testing.assert_allclose(1 - w[20:25], [0, 0.03846, 0.07692, 0.11538, 0.15385], atol=1e-5)
  assert 1 - w[45] == pytest.approx(0.96154, abs=1e-5) and 1 - w[46] == 1
  table = {
      2: ([1, 1, 1, 1, 1.10638, 1.2381, 1.625, 1.67742, 2], 5.7739099234e-05, 1.069315),
      16: ([1, 1, 1, 1, 1.21994, 1.56391, 3.58621, 4.11881, 16], 7.2173874043e-06, 1.277259),
      32: ([1, 1, 1, 1, 1.22895, 1.59387, 3.92453, 4.59669, 32], 3.6086937022e-06, 1.346574),
  }
  idx = [0, 15, 16, 20, 25, 30, 40, 41, 63]
  base = ref.theta(1e4, 128)
  for s, (ratios, inv63, msc) in table.items():
    inv, att = freqs(RopeConfig("yarn", 1e4, factor=float(s),
                                original_max_position_embeddings=4096), 128)
    np.testing.assert_allclose(base[idx] / inv[idx], ratios, rtol=1e-5)
    assert inv[63] == pytest.approx(inv63, rel=1e-6)
    assert att == pytest.approx(msc, abs=1e-6)


def test_yarn_other_model_vectors():
  # Qwen2.5-style and the DeepSeek-V3 rope part.
  assert ramp.correction_range(32, 1, 128, 1e6, 32768) == (23, 40)
  _, att = freqs(RopeConfig("yarn", 1e6, factor=4.0, original_max_position_embeddings=32768), 128)
  assert att == pytest.approx(1.138629, abs=1e-6)
  assert ramp.correction_range(32, 1, 64, 1e4, 4096) == (10, 23)
  # gpt-oss keeps float bounds (truncate=False).
  low, high = ramp.correction_range(32, 1, 64, 150000, 4096, truncate=False)
  assert low == pytest.approx(8.092779115512402, rel=1e-12)
  assert high == pytest.approx(17.39802450158856, rel=1e-12)
  # DeepSeek-V3: mscale == mscale_all_dim collapses the cos/sin factor to 1.
  _, att = freqs(RopeConfig("yarn", 1e4, factor=40.0, original_max_position_embeddings=4096,
                            mscale=1.0, mscale_all_dim=1.0), 64)
  assert att == 1.0


def test_yarn_high_clamps_at_d_minus_1():
  # d=128, b=1e4, L=131072: raw high = 69.1 > d/2 - 1; the reference clamps at d - 1.
  assert ramp.correction_range(32, 1, 128, 1e4, 131072)[1] == 70


def test_llama3_vectors():
  inv, att = freqs(RopeConfig("llama3", 5e5, factor=8.0, low_freq_factor=1.0,
                              high_freq_factor=4.0, original_max_position_embeddings=8192), 128)
  base = ref.theta(5e5, 128)
  ratio = base / inv
  assert np.allclose(ratio[:29], 1, rtol=1e-6) and np.allclose(ratio[35:], 8, rtol=1e-6)
  assert np.all((ratio[29:35] > 1) & (ratio[29:35] < 8))
  np.testing.assert_allclose(ratio[28:36], [1, 1.20748, 1.55341, 2.02631, 2.69453, 3.68425,
                                            5.25733, 8], rtol=1e-5)
  np.testing.assert_allclose(inv[[0, 20, 40, 63]],
                             [1.0, 1.6560440081e-02, 3.4281021960e-05, 3.0689259889e-07],
                             rtol=1e-6)
  assert att == 1.0


def test_longrope_phi3_attention_factor():
  cfg = RopeConfig("longrope", 1e4, short_factor=(1.0,) * 48, long_factor=(2.0,) * 48,
                   original_max_position_embeddings=4096, max_position_embeddings=131072)
  assert freqs(cfg, 96)[1] == pytest.approx(1.1902381, abs=1e-7)


# ----------------------------------------------------------------- invariants
def test_scale_one_is_plain_rope():
  plain, _ = freqs(RopeConfig("default", 1e4), 128)
  for cfg in [RopeConfig("linear", 1e4, factor=1.0), RopeConfig("ntk", 1e4, factor=1.0),
              RopeConfig("yarn", 1e4, factor=1.0, original_max_position_embeddings=4096),
              RopeConfig("ntk_by_parts", 1e4, factor=1.0, original_max_position_embeddings=4096),
              RopeConfig("llama3", 1e4, factor=1.0, low_freq_factor=1.0, high_freq_factor=4.0,
                         original_max_position_embeddings=4096),
              RopeConfig("longrope", 1e4, short_factor=(1.0,) * 64, long_factor=(1.0,) * 64,
                         original_max_position_embeddings=4096, attention_factor=1.0)]:
    inv, att = freqs(cfg, 128, 8192)
    close(inv, plain, rtol=2e-7)
    assert att == 1.0, cfg
  for seq_len in (1, 100, 4096):  # dynamic methods below the original length
    inv, att = freqs(RopeConfig("dynamic", 1e4, factor=4.0, max_position_embeddings=4096), 128,
                     seq_len)
    close(inv, plain, rtol=2e-7)
    inv, att = freqs(RopeConfig("dynamic_yarn", 1e4, original_max_position_embeddings=4096), 128,
                     seq_len)
    close(inv, plain, rtol=2e-7)
    assert att == 1.0


@pytest.mark.parametrize("rope_type", ["ntk_by_parts", "yarn"])
def test_by_parts_keeps_fast_pairs_and_interpolates_slow_ones(rope_type):
  plain = ref.theta(1e4, 128)
  for s in (2.0, 8.0, 32.0):
    inv, _ = freqs(RopeConfig(rope_type, 1e4, factor=s, original_max_position_embeddings=4096),
                   128)
    close(inv[:21], plain[:21])  # pairs <= low=20 are untouched
    close(inv[46:], plain[46:] / s)  # pairs >= high=46 are θ/s
    assert np.all(np.diff(inv) <= 0)  # still non-increasing


def test_ramp_does_not_depend_on_scale():
  weights = [np.asarray(ramp.extrapolation_weight(
      RopeConfig("yarn", 1e4, factor=s, original_max_position_embeddings=4096), 128))
      for s in (2.0, 16.0, 64.0)]
  assert all(np.array_equal(weights[0], w) for w in weights[1:])


def test_pi_equals_plain_rope_at_divided_positions():
  positions = jnp.array([[0, 1, 5, 100, 4000, 16000]])
  cos, sin = rope.cos_sin(RopeConfig("linear", 1e4, factor=4.0), 64, positions)
  # Plain RoPE at m/s, computed in float64.
  ang = (np.asarray(positions[0], np.float64) / 4.0)[:, None] * ref.theta(1e4, 64)[None]
  ang = np.concatenate([ang, ang], -1)
  np.testing.assert_allclose(np.asarray(cos[0]), np.cos(ang), atol=2e-4)
  np.testing.assert_allclose(np.asarray(sin[0]), np.sin(ang), atol=2e-4)


def test_half_split_equals_interleaved_under_the_meta_permutation():
  """T0: P^T · rope_half(P x) == rope_interleaved(x), P the per-head q/k row permutation."""
  d, t = 16, 7
  rng = np.random.RandomState(0)
  x = rng.randn(t, d)
  positions = rng.randint(0, 5000, size=t).astype(np.float64)
  perm = np.concatenate([np.arange(0, d, 2), np.arange(1, d, 2)])  # HF row c*d/2+j = Meta 2j+c
  cos, sin = rope.cos_sin(RopeConfig("default", 1e4), d, jnp.asarray(positions[None], jnp.int32))
  half = np.asarray(rope.apply(jnp.asarray(x[:, perm][None, :, None], jnp.float32), cos,
                               sin))[0, :, 0]
  back = np.empty_like(half)
  back[:, perm] = half
  np.testing.assert_allclose(back, ref.rope_interleaved(x, positions, ref.theta(1e4, d)),
                             atol=2e-4)


def test_scores_depend_only_on_relative_position():
  rng = np.random.RandomState(1)
  q = jnp.asarray(rng.randn(1, 6, 1, 32), jnp.float32)
  k = jnp.asarray(rng.randn(1, 6, 1, 32), jnp.float32)
  cfg = RopeConfig("yarn", 1e4, factor=4.0, original_max_position_embeddings=64,
                   max_position_embeddings=256)
  scores = []
  for shift in (0, 37):
    pos = jnp.arange(6)[None] + shift
    cos, sin = rope.cos_sin(cfg, 32, pos, seq_len=jnp.array([256]))
    qr, kr = rope.apply(q, cos, sin), rope.apply(k, cos, sin)
    scores.append(np.asarray(jnp.einsum("bthd,bshd->ts", qr, kr)))
  np.testing.assert_allclose(scores[0], scores[1], rtol=1e-4, atol=1e-4)


def test_yarn_temperature_scales_logits_by_mscale_squared():
  rng = np.random.RandomState(2)
  q = jnp.asarray(rng.randn(1, 5, 1, 32), jnp.float32)
  k = jnp.asarray(rng.randn(1, 5, 1, 32), jnp.float32)
  pos = jnp.arange(5)[None]
  yarn = RopeConfig("yarn", 1e4, factor=16.0, original_max_position_embeddings=64)
  parts = RopeConfig("ntk_by_parts", 1e4, factor=16.0, original_max_position_embeddings=64)

  def scores(cfg):
    cos, sin = rope.cos_sin(cfg, 32, pos)
    return np.asarray(jnp.einsum("bthd,bshd->ts", rope.apply(q, cos, sin),
                                 rope.apply(k, cos, sin)))

  np.testing.assert_allclose(scores(yarn), scores(parts) * ref.mscale(16.0) ** 2, rtol=1e-5)


def test_angles_stay_float32_with_bfloat16_activations():
  positions = jnp.array([[131071, 100000, 65535]])
  cos, sin = rope.cos_sin(RopeConfig("default", 1e4), 128, positions)
  assert cos.dtype == sin.dtype == jnp.float32
  ang = np.asarray(positions[0], np.float64)[:, None] * ref.theta(1e4, 128)[None]
  ang = np.concatenate([ang, ang], -1)
  # One float32 ulp of θ costs ~4e-3 rad at 131072; bf16 angles would be off by radians.
  assert np.max(np.abs(np.asarray(cos[0]) - np.cos(ang))) < 1e-2
  x = jnp.ones((1, 3, 2, 128), jnp.bfloat16)
  y = rope.apply(x, cos, sin)
  assert y.dtype == jnp.bfloat16
  want = np.cos(ang) + np.concatenate([-np.sin(ang[:, :64]), np.sin(ang[:, 64:])], -1)
  np.testing.assert_allclose(np.asarray(y[0, :, 0], np.float32), want, atol=2.5e-2)


# ----------------------------------------------------------------- HF as a second reference
HF_CASES = [
    {"rope_type": "linear", "factor": 4.0},
    {"rope_type": "dynamic", "factor": 3.0},
    {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 4096},
    {"rope_type": "yarn", "factor": 32.0, "original_max_position_embeddings": 4096,
     "beta_fast": 20.0, "beta_slow": 2.0, "truncate": False, "mscale": 0.8,
     "mscale_all_dim": 0.5},
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 8192},
    {"rope_type": "longrope", "short_factor": [1.0 + i / 64 for i in range(64)],
     "long_factor": [1.0 + i / 4 for i in range(64)], "original_max_position_embeddings": 4096},
]


@pytest.mark.parametrize("params", HF_CASES, ids=[c["rope_type"] for c in HF_CASES])
@pytest.mark.parametrize("seq_len", [1000, 20000])
def test_inv_freq_matches_hf(params, seq_len):
  pytest.importorskip("torch")
  from transformers import LlamaConfig
  from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
  params = dict(params, rope_theta=10000.0)
  hf = LlamaConfig(hidden_size=1024, num_attention_heads=8, max_position_embeddings=16384,
                   rope_parameters=params)
  inv_hf, att_hf = ROPE_INIT_FUNCTIONS[params["rope_type"]](hf, "cpu", seq_len=seq_len)
  cfg = RopeConfig.from_hf(hf.to_dict())
  inv, att = freqs(cfg, 128, seq_len)
  np.testing.assert_allclose(inv, inv_hf.double().numpy(), rtol=2e-6)
  assert att == pytest.approx(float(att_hf), rel=1e-6)


# ----------------------------------------------------------------- validation
@pytest.mark.parametrize("cfg,match", [
    (RopeConfig("yarn_v2", 1e4), r"rope_type='yarn_v2'.*allowed: \[.*'yarn'"),
    (RopeConfig("linear", 1e4), r"rope\.factor is required for rope_type='linear'"),
    (RopeConfig("linear", 1e4, factor=-2.0), r"rope\.factor=-2\.0 must be > 0"),
    (RopeConfig("default", 0.5), r"rope\.rope_theta=0\.5 must be a number > 1"),
    (RopeConfig("default", 1e4, factor=2.0), r"\['factor'\] are set but rope_type='default'"),
    (RopeConfig("yarn", 1e4, factor=4.0, original_max_position_embeddings=2048, beta_fast=1,
                beta_slow=32), r"beta_fast=1 must be >= rope\.beta_slow=32"),
    (RopeConfig("llama3", 1e4, factor=8.0, low_freq_factor=4.0, high_freq_factor=1.0,
                original_max_position_embeddings=8192), r"high_freq_factor=1\.0 must be >"),
    (RopeConfig("longrope", 1e4, short_factor=(1.0,) * 3, long_factor=(1.0,) * 64,
                original_max_position_embeddings=4096), r"short_factor has 3 entries.*64"),
])
def test_bad_rope_configs_name_the_field(cfg, match):
  with pytest.raises(ValueError, match=match):
    rope.validate(cfg, 128)


def test_unknown_rope_field_is_rejected():
  with pytest.raises(ValueError, match=r"unknown field\(s\) \['scale'\]"):
    RopeConfig.from_dict({"rope_type": "linear", "scale": 2.0})


def test_a_method_is_one_registered_module():
  import pkgutil
  modules = {m.name for m in pkgutil.iter_modules(rope.__path__)}
  assert set(rope.names()) <= modules


def test_yarn_ramp_uses_the_original_length_not_the_extended_one():
  """Known trap: a fine-tuned 64k model (max_position_embeddings = s·L) must keep L's ramp."""
  tuned = RopeConfig("yarn", 1e4, factor=16.0, original_max_position_embeddings=4096,
                     max_position_embeddings=65536)
  inv, _ = freqs(tuned, 128)
  want, _ = ref.yarn(1e4, 128, 16.0, 4096)
  close(inv, want)
  wrong, _ = ref.yarn(1e4, 128, 16.0, 65536)
  assert np.max(np.abs(inv / wrong - 1)) > 0.1


def test_yarn_is_not_applied_to_positions_as_well():
  """Known trap: scaling frequencies and dividing positions too. Angles must be m · inv_freq."""
  cfg = RopeConfig("yarn", 1e4, factor=8.0, original_max_position_embeddings=64)
  positions = jnp.array([[0, 1, 63, 500]])
  cos, _ = rope.cos_sin(cfg, 32, positions)
  inv, att = ref.yarn(1e4, 32, 8.0, 64)
  ang = np.asarray(positions[0], np.float64)[:, None] * inv[None]
  np.testing.assert_allclose(np.asarray(cos[0, :, :16]), att * np.cos(ang), atol=1e-4)


def test_computed_once_returns_the_table_bit_for_bit():
  """The identity product that keeps XLA from re-evaluating cos/sin per consumer is exact."""
  table = np.random.RandomState(0).randn(2, 37, 64).astype(np.float32) * 3.0
  out = np.asarray(jax.jit(embedding.computed_once)(jnp.asarray(table)))
  np.testing.assert_array_equal(out.view(np.uint32), table.view(np.uint32))


def test_covered_length_and_the_past_context_warning():
  from llama_jax.rope.config import covered_length, past_context_warning
  plain = RopeConfig(max_position_embeddings=4096)
  assert covered_length(plain) == 4096
  assert past_context_warning(plain, [2048, 4096], "window") is None
  warning = past_context_warning(plain, [4096, 8192, 5000], "window")
  assert warning.startswith("window length(s) [5000, 8192] go past the model's "
                            "max_position_embeddings=4096, with no RoPE scaling")
  # Scaling at inference stretches the original length; a fine-tuned YaRN model says so itself.
  yarn = RopeConfig(rope_type="yarn", factor=2.0, original_max_position_embeddings=4096,
                    max_position_embeddings=4096)
  assert covered_length(yarn) == 8192 and past_context_warning(yarn, [8192], "w") is None
  assert "rope_type=yarn (factor 2.0, original length 4096) covers" in past_context_warning(
      yarn, [8193], "w")
  llama3 = RopeConfig(rope_type="llama3", factor=8.0, original_max_position_embeddings=8192,
                      low_freq_factor=1.0, high_freq_factor=4.0, max_position_embeddings=131072)
  assert covered_length(llama3) == 131072
  # Dynamic methods rescale with the length: nothing is past them.
  dynamic = RopeConfig(rope_type="dynamic", factor=2.0, max_position_embeddings=4096)
  assert covered_length(dynamic) is None and past_context_warning(dynamic, [10**6], "w") is None
