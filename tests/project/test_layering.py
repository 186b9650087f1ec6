"""The import graph of llama_jax, derived from the source: no cycles, and no package imports a
package of a higher layer (the model knows nothing of training, interop nothing of the loop ...).
Every import counts, including those inside functions."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "llama_jax"

# Low to high. A package may import packages of lower layers only (and itself).
LAYERS = (
    ("core",),
    ("rope", "attention", "parallel"),
    ("model",),
    ("data", "checkpoints", "inference", "adapters"),
    ("evals",),
    ("training",),
    ("interop",),
    ("perf", "search"),
    ("<cli>",),  # the programs at the top of llama_jax/
    ("<root>",),  # llama_jax/__init__.py: lazy re-exports of the public API
)
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
  parts = ("llama_jax",) + path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def package_of(module: str) -> str:
  parts = module.split(".")
  if len(parts) == 1:
    return "<root>"
  if f"llama_jax.{parts[1]}" in MODULES and (ROOT / parts[1]).is_dir():
    return parts[1]
  return "<cli>"


def imports(module: str) -> set[str]:
  """The llama_jax modules `module` imports (a `from pkg import name` counts as pkg.name when
  that is a module, else pkg)."""
  tree = ast.parse(MODULES[module].read_text())
  is_package = MODULES[module].name == "__init__.py"
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names if a.name.startswith("llama_jax"))
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        base = ".".join(anchor[:len(anchor) - node.level + 1] + ([base] if base else []))
      if not base.startswith("llama_jax"):
        continue
      for alias in node.names:
        sub = f"{base}.{alias.name}"
        found.add(sub if sub in MODULES else base)
  return {m for m in found if m in MODULES and m != module}


GRAPH = {m: imports(m) for m in MODULES}


def test_every_package_has_a_layer():
  packages = {package_of(m) for m in MODULES}
  assert packages <= set(LAYER), f"packages without a layer: {packages - set(LAYER)}"


def test_no_upward_imports():
  bad = []
  for module, targets in GRAPH.items():
    src = package_of(module)
    for target in targets:
      dst = package_of(target)
      if dst != src and LAYER[dst] >= LAYER[src]:
        bad.append(f"{module} ({src}, layer {LAYER[src]}) imports {target} "
                   f"({dst}, layer {LAYER[dst]})")
  assert not bad, "imports that go up (or sideways) a layer:\n" + "\n".join(sorted(bad))


def test_no_import_cycles():
  state, stack, cycles = {}, [], []

  def visit(m):
    state[m] = "active"
    stack.append(m)
    for t in sorted(GRAPH[m]):
      if state.get(t) == "active":
        cycles.append(stack[stack.index(t):] + [t])
      elif t not in state:
        visit(t)
    stack.pop()
    state[m] = "done"

  for m in sorted(GRAPH):
    if m not in state:
      visit(m)
  assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_graph_is_really_read():
  """Guards the test itself: known edges are found, lazy (in-function) imports included."""
  assert "llama_jax.model.spec" in GRAPH["llama_jax.training.validation"]
  assert "llama_jax.training.run_reader" in GRAPH["llama_jax.interop.convert"]
  assert "llama_jax.inference.generate" in GRAPH["llama_jax.training.loop"]  # inside a function
  assert package_of("llama_jax.train") == "<cli>" and package_of("llama_jax.rope.yarn") == "rope"
