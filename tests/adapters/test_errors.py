"""Bad adapter input fails early with a message naming the field, the value and what is allowed,
and writes nothing."""
import json

import numpy as np
import pytest

from llama_jax import adapters
from llama_jax.core.errors import CheckpointError, ConfigError
from llama_jax.interop import peft as peft_io
from llama_jax.model import spec as spec_lib
from llama_jax.training import defaults, validation
from tests.references import peft_reference as ref


def config(**adapter):
  c = defaults.get_config()
  name = adapter.pop("name")
  c.adapter.name = name
  if name in c.adapter:
    c.adapter[name].update(adapter)
  return validation.lock(c)


@pytest.mark.parametrize("adapter,message", [
    (dict(name="lorax"), r"adapter.name='lorax' is not a known adapter; allowed: \['lora', "
                         r"'parallel', 'prefix', 'series'\]"),
    (dict(name="lora", rank=0), r"adapter.lora.rank=0; allowed: an integer >= 1"),
    (dict(name="lora", rank=-3), r"adapter.lora.rank=-3; allowed: an integer >= 1"),
    (dict(name="lora", targets=("q", "qkv")), r"adapter.lora.targets contains 'qkv', which is "
                                              r"not a projection of the model; allowed: \['q', "),
    (dict(name="lora", targets=()), r"adapter.lora.targets=\(\); allowed: a non-empty tuple"),
    (dict(name="lora", dropout=1.5), r"adapter.lora.dropout=1.5; allowed: a number \[0.0, 1.0\)"),
    (dict(name="series", scaling="big"), r"adapter.series.scaling='big'; allowed: a number, or "
                                         r"'learned'"),
    (dict(name="parallel", non_linearity="swishy"), r"adapter.parallel.non_linearity='swishy'; "
                                                    r"allowed: \["),
    (dict(name="series", init="xavier"), r"adapter.series.init='xavier'; allowed: \['bert', "
                                         r"'mam_adapter'\]"),
    (dict(name="prefix", num_virtual_tokens=0), r"adapter.prefix.num_virtual_tokens=0; allowed"),
])
def test_bad_options_are_config_errors(adapter, message):
  with pytest.raises(ConfigError, match=message):
    validation.validate(config(**adapter), check_paths=False)


def test_wrongly_typed_options():
  """The config is typed, so a string for a flag is refused where it is set; the adapter's own
  check (for configs built by hand) names the field too."""
  with pytest.raises(TypeError, match="dora"):
    config(name="lora", dora="yes")
  with pytest.raises(ConfigError, match=r"adapter.lora.dora='yes'; allowed: true or false"):
    adapters.build("lora", dict(dora="yes"))


def test_unknown_option_key_is_an_error():
  c = defaults.get_config()
  c.adapter.name = "lora"
  c.adapter.lora.rnak = 4
  with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['adapter.lora.rnak'\]"):
    validation.validate(c, check_paths=False)
  with pytest.raises(ConfigError, match=r"adapter.lora.rnak does not exist; 'lora' accepts "):
    adapters.build("lora", dict(rnak=4))


def test_prefix_with_a_kernel_that_cannot_take_it():
  c = config(name="prefix")
  with c.unlocked():
    c.model.attention = "cudnn"
  with pytest.raises(ConfigError, match=r"adapter.name='prefix' needs an attention kernel .*"
                                        r"model.attention='cudnn' cannot; allowed: \["):
    validation.validate(c, check_paths=False)


def test_trainable_regex_matching_no_adapter_parameter():
  c = config(name="lora")
  c.optim.trainable = "lm_head"
  with pytest.raises(ConfigError, match=r"optim.trainable='lm_head' matches no adapter "
                                        r"parameter; adapter parameter paths are e.g."):
    validation.validate(c, check_paths=False)


def test_a_good_config_validates():
  tc = validation.validate(config(name="series", scaling="learned", targets=("down",)),
                           check_paths=False)
  assert tc.spec.adapter == adapters.build("series", dict(scaling="learned", targets=("down",)))
  assert 0 < tc.spec.num_params(True) < tc.spec.num_params()


# ------------------------------------------------------------------------------ peft files
def _peft_lora_dir(tmp_path, name="lora", **model_overrides):
  model, _, cfg, _ = ref.base_and_config(**model_overrides)
  ref.peft_lora(model, r=2, target_modules=["q_proj", "down_proj"]).save_pretrained(
      tmp_path / name)
  return tmp_path / name, cfg


def _edit_config(path, **changes):
  file = path / "adapter_config.json"
  hf = json.loads(file.read_text())
  hf.update(changes)
  file.write_text(json.dumps(hf))


@pytest.mark.parametrize("changes,message", [
    (dict(target_modules=["c_attn"]), r"target_modules contains 'c_attn', which is not a LLaMA "
                                      r"projection; allowed: \[.*'q_proj'.*another architecture"),
    (dict(target_modules="transformer.*c_proj"), r"target_modules='transformer.\*c_proj' "
                                                 r"matches no LLaMA projection"),
    (dict(fan_in_fan_out=True), r"fan_in_fan_out=True is not supported"),
    (dict(bias="all"), r"bias='all' is not supported"),
    (dict(rank_pattern={"q_proj": 4}), r"rank_pattern=\{'q_proj': 4\} is not supported"),
    (dict(task_type="SEQ_CLS"), r"task_type='SEQ_CLS'; a LLaMA language-model adapter"),
    (dict(peft_type="IA3"), r"peft_type='IA3'; supported: LORA, PREFIX_TUNING, BOTTLENECK"),
    (dict(r=3), r"tensor base_model.*lora_A.weight has shape \(2, 64\) but the base model needs "
                r"\(3, 64\)"),
])
def test_peft_configs_this_model_cannot_take(tmp_path, changes, message):
  path, cfg = _peft_lora_dir(tmp_path)
  _edit_config(path, **changes)
  with pytest.raises(CheckpointError, match=message):
    peft_io.read_adapter(path, cfg)


def test_an_adapter_for_another_base_shape(tmp_path):
  path, _ = _peft_lora_dir(tmp_path)
  _, _, other, _ = ref.base_and_config(hidden_size=48, head_dim=12)
  with pytest.raises(CheckpointError, match=r"has shape \(2, 64\) but the base model needs "
                                            r"\(2, 48\) \(d_model 48.*does not fit this base"):
    peft_io.read_adapter(path, other)
  _, _, deeper, _ = ref.base_and_config(num_hidden_layers=3)
  with pytest.raises(CheckpointError, match=r"missing \['base_model.model.model.layers.2."):
    peft_io.read_adapter(path, deeper)


def test_a_prefix_for_another_model(tmp_path):
  from peft import PrefixTuningConfig, get_peft_model
  model, _, _, _ = ref.base_and_config()
  get_peft_model(model, PrefixTuningConfig(num_virtual_tokens=2, task_type="CAUSAL_LM")
                 ).save_pretrained(tmp_path / "p")
  _, _, other, _ = ref.base_and_config(num_key_value_heads=4)
  with pytest.raises(CheckpointError, match=r"token_dim=32 but the base model needs 64 .* an "
                                            r"adapter for another model"):
    peft_io.read_adapter(tmp_path / "p", other)


def test_failed_exports_write_nothing(tmp_path):
  _, _, cfg, base = ref.base_and_config()
  spec = spec_lib.ModelSpec.build(cfg)
  with pytest.raises(CheckpointError, match="this model has no adapter to export"):
    peft_io.write_adapter(tmp_path / "none", spec, base)
  series = adapters.build("series", dict(targets=("q", "down"), bottleneck_size=4))
  spec = spec_lib.ModelSpec.build(cfg, adapter=series)
  params = spec.init_params(0)
  with pytest.raises(CheckpointError, match=r"LLM-Adapters' fork places series adapters on "
                                            r"gate_proj, up_proj and down_proj only .*'q_proj'"):
    peft_io.write_adapter(tmp_path / "series", spec, params)
  assert not any(tmp_path.iterdir())


def test_convert_refuses_adapter_exports_of_plain_models(tmp_path):
  from llama_jax.interop import convert, hf
  _, _, cfg, base = ref.base_and_config()
  hf.write_hf(tmp_path / "hf", cfg, dict(base.items()))
  for target, flags in (("peft", {}), ("hf", dict(merge_adapters=True))):
    with pytest.raises(CheckpointError, match=r"needs a training run with an adapter"):
      convert.convert(tmp_path / "hf", tmp_path / "out", "hf", target, **flags)
  assert not (tmp_path / "out").exists()
  assert np.asarray(base["embed"]).shape == (cfg.vocab_size, cfg.d_model)


def test_configs_without_target_modules_take_the_defaults():
  """peft and LLM-Adapters' fork fill in their LLaMA defaults when target_modules is null."""
  _, _, cfg, _ = ref.base_and_config()
  lora = peft_io.adapter_from_config({"peft_type": "LORA", "r": 4, "target_modules": None}, cfg)
  assert lora.targets == ("q", "v")
  series = peft_io.adapter_from_config({"peft_type": "BOTTLENECK", "target_modules": None}, cfg)
  assert series.name == "series" and series.targets == ("gate", "up", "down")
  parallel = peft_io.adapter_from_config(
      {"peft_type": "BOTTLENECK", "use_parallel_adapter": True, "scaling": "learned"}, cfg)
  assert parallel.targets == ("q", "k", "v") and parallel.scaling == "learned"
