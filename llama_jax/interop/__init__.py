"""Other projects' checkpoint formats: HF `LlamaForCausalLM` directories (`hf`, with the tensor
layout map in `hf_layout`), Meta `consolidated.*.pth` (`meta`), and `convert`, which reads any
source (HF, Meta, converted, training workdir) and writes any target."""
