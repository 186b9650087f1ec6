"""Beam search written directly from HF transformers' two algorithms, one prompt at a time, on an
HF model's uncached forward pass (every step recomputes every beam's whole sequence).

- "legacy": `BeamSearchScorer` of transformers 4.27-4.3x. Candidates are the top 2K of
  running score + log_softmax over all beams x vocabulary. In rank order: an EOS candidate of
  rank < K becomes a hypothesis (the tokens before the EOS; score / (prompt + generated before
  the EOS) ** lp), other EOS candidates are skipped, the first K non-EOS candidates are the next
  beams. `BeamHypotheses` keeps the best K hypotheses; the prompt is done once it holds K and
  its worst >= (best candidate score) / (length after this step) ** lp. At the token budget the
  running beams are added (length prompt + budget); the answer is the best hypothesis.
- "current": `_beam_search` of transformers 5. A candidate hits a stop when it is EOS or the
  budget is reached; hits among the top K ranks become hypotheses (score / generated ** lp,
  generated counting the EOS) unless the prompt is already done; the next beams are the top K
  by score with hits pushed down by 1e9; done once K hypotheses exist and the worst >= the best
  running beam's score / generated ** lp.

Scores are accumulated in float32 like HF's.
"""
from __future__ import annotations

import numpy as np


def _log_softmax(x: np.ndarray) -> np.ndarray:
  x = x.astype(np.float32)
  m = x.max()
  return (x - m - np.log(np.exp(x - m).sum(dtype=np.float32))).astype(np.float32)


class _Hypotheses:
  """The best `k` finished hypotheses, as `BeamHypotheses.add` keeps them."""

  def __init__(self, k: int):
    self.k, self.items = k, []  # (score, new tokens)

  def add(self, score: float, tokens: list[int]) -> None:
    if len(self.items) < self.k or score > self.worst:
      self.items.append((score, tokens))
      if len(self.items) > self.k:
        self.items.remove(min(self.items, key=lambda x: x[0]))

  @property
  def worst(self) -> float:
    return min(s for s, _ in self.items)

  def full(self) -> bool:
    return len(self.items) >= self.k

  def best(self) -> tuple[float, list[int]]:
    return max(self.items, key=lambda x: x[0])


def beam_search(next_logits, prompt: list[int], max_new_tokens: int, num_beams: int,
                eos_id: int | None, length_penalty: float = 1.0,
                convention: str = "legacy") -> tuple[list[int], float]:
  """(new tokens of the best hypothesis, its score). next_logits(sequences) -> float[n, V],
  the next-token logits of each sequence."""
  k, p = num_beams, len(prompt)
  beams = [(list(prompt), np.float32(0.0))] + [(list(prompt), np.float32(-1e9))] * (k - 1)
  hyps = _Hypotheses(k)
  done = False
  for step in range(max_new_tokens):
    scores, origin, token = [], [], []
    logits = next_logits([seq for seq, _ in beams])
    for b, (_, score) in enumerate(beams):
      lp = _log_softmax(np.asarray(logits[b])) + score
      scores.append(lp.astype(np.float32))
      origin += [b] * len(lp)
      token += list(range(len(lp)))
    scores = np.concatenate(scores)
    top = np.argsort(-scores, kind="stable")[:2 * k]
    cands = [(scores[i], origin[i], token[i]) for i in top]
    if convention == "legacy":
      before = p + step
      nxt = []
      for rank, (score, b, t) in enumerate(cands):
        if t == eos_id:
          if rank < k:
            hyps.add(float(score) / before ** length_penalty, beams[b][0][p:] + [t])
        else:
          nxt.append((beams[b][0] + [t], score))
        if len(nxt) == k:
          break
      beams = nxt
      best = float(cands[0][0]) / (before + 1) ** length_penalty
      if hyps.full() and hyps.worst >= best:
        done = True
        break
    else:
      generated = step + 1
      hit = [t == eos_id or generated == max_new_tokens for _, _, t in cands]
      if not done:
        for rank, ((score, b, t), h) in enumerate(zip(cands, hit)):
          if h and rank < k:
            hyps.add(float(score) / generated ** length_penalty, beams[b][0][p:] + [t])
      keyed = [(np.float32(score - 1e9) if h else score, b, t)
               for (score, b, t), h in zip(cands, hit)]
      order = sorted(range(len(keyed)), key=lambda i: -keyed[i][0])[:k]
      beams = [(beams[keyed[i][1]][0] + [keyed[i][2]], keyed[i][0]) for i in order]
      best = float(beams[0][1]) / generated ** length_penalty
      if hyps.full() and hyps.worst >= best:
        done = True
      if done or generated == max_new_tokens:
        break
  if convention == "legacy" and not done:
    for seq, score in beams:
      hyps.add(float(score) / len(seq) ** length_penalty, seq[p:])
  score, tokens = hyps.best()
  return tokens, score


def hf_next_logits(model):
  """next_logits for an HF causal LM: the last position's logits of an uncached forward pass of
  each sequence (sequences of one length run as one batch; results are memoised)."""
  import torch
  memo: dict[tuple[int, ...], np.ndarray] = {}

  def fn(seqs):
    todo = sorted({tuple(s) for s in seqs if tuple(s) not in memo})
    by_length: dict[int, list] = {}
    for s in todo:
      by_length.setdefault(len(s), []).append(s)
    for group in by_length.values():
      with torch.no_grad():
        out = model(torch.as_tensor(group)).logits[:, -1].float().numpy()
      memo.update(zip(group, out))
    return np.stack([memo[tuple(s)] for s in seqs])

  return fn
