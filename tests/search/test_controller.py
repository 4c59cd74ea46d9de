"""The controller policy: exact probabilities and entropies (brute force on tiny decision
lists), sampler/evaluator agreement with a plain step-by-step reference, growth, and
checkpoints."""

from __future__ import annotations

import itertools
import math
import pickle

import numpy as np
import pytest
import torch
from scipy.stats import chisquare
from torch.nn import functional as F

from mnas.decisions import Categorical, Pointer, Subset
from search.controller import Controller


def cat(name: str, k: int, anchor: bool = False) -> Categorical:
    return Categorical(name, tuple(range(k)), anchor=anchor)


MIXED = (cat("a", 3, True), Pointer("p", 2, anchor=True), Subset("s", 3, anchor=True),
         cat("b", 2), Subset("t", 2), Pointer("q", 3))
NASNET_LIKE = (cat("h1", 1, True), cat("h0", 1, True), Pointer("in1", 2), Pointer("in2", 2),
               cat("op", 3), cat("comb", 2, True), Pointer("in3", 3), cat("op3", 2))
NASRL_LIKE = (Subset("L0.in", 0), cat("L0.f", 2, True), Subset("L1.in", 1), cat("L1.f", 3),
              cat("L1.k", 2, True), Subset("L2.in", 2), cat("L2.f", 2, True))
LISTS = {"mixed": MIXED, "nasnet_like": NASNET_LIKE, "nasrl_like": NASRL_LIKE,
         "one": (cat("x", 4),)}


def controller(ds, **kw) -> Controller:
    """A controller for ``ds`` with every parameter, slot offsets included, non-zero."""
    ctl = Controller(**kw)
    ctl.ensure(ds)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in ctl.slot_heads.parameters():
            p.uniform_(-1.0, 1.0, generator=gen)
    return ctl


def all_choices(ds):
    return list(itertools.product(*[range(d.size) for d in ds]))


def reference(ctl: Controller, ds, choices) -> tuple[float, float]:
    """The documented policy written step by step with no batching or tricks."""
    H, L = ctl.hidden, ctl.layers
    h = [torch.zeros(H, dtype=torch.float64) for _ in range(L)]
    c = [torch.zeros(H, dtype=torch.float64) for _ in range(L)]
    P = {k: v.detach().double() for k, v in ctl.named_parameters()}
    x = P["g_emb"]
    anchors: list[torch.Tensor] = []
    logp = ent = 0.0
    prev_anchor = False

    def recent(n):
        real = anchors[-n:] if n else []
        pad = [P[f"start.{k}"] for k in range(n - len(real) - 1, -1, -1)]
        return pad + real

    def score(kind, aj, out, d, j):
        z = float(P[f"{kind}_v.weight"][0] @ torch.tanh(P[f"{kind}_prev.weight"] @ aj
                                                        + P[f"{kind}_curr.weight"] @ out))
        s = ctl._slot.get((kind, d.name, d.n))
        if s is not None:
            z += float(P[f"slot_heads.{s}.weight"][j] @ out + P[f"slot_heads.{s}.bias"][j])
        return z

    for d, a in zip(ds, choices, strict=True):
        for layer in range(L):
            g = (P[f"lstm.weight_ih_l{layer}"] @ x + P[f"lstm.bias_ih_l{layer}"]
                 + P[f"lstm.weight_hh_l{layer}"] @ h[layer] + P[f"lstm.bias_hh_l{layer}"])
            i, f, gg, o = g.chunk(4)
            c[layer] = torch.sigmoid(f) * c[layer] + torch.sigmoid(i) * torch.tanh(gg)
            h[layer] = x = torch.sigmoid(o) * torch.tanh(c[layer])
        out = x
        if prev_anchor:
            anchors.append(out)
        if isinstance(d, Categorical):
            k = ("cat", d.name, d.size)
            hi = ctl._head[k]
            lp = F.log_softmax(P[f"heads.{hi}.weight"] @ out + P[f"heads.{hi}.bias"], -1)
            x = P[f"embs.{ctl._emb[k]}.weight"][a]
        elif isinstance(d, Pointer):
            lp = F.log_softmax(torch.tensor([score("ptr", aj, out, d, j)
                                             for j, aj in enumerate(recent(d.n))],
                                            dtype=torch.float64), -1)
            x = P[f"embs.{ctl._emb[('ptr', d.name, d.n)]}.weight"][a]
        else:
            E = P[f"embs.{ctl._emb[('sub', d.name, d.n)]}.weight"]
            x, k = E[0].clone(), 0
            for j, aj in enumerate(recent(d.n)):
                pj = 1 / (1 + math.exp(-score("sub", aj, out, d, j)))
                bit = (a >> j) & 1
                logp += math.log(pj if bit else 1 - pj)
                ent -= pj * math.log(pj) + (1 - pj) * math.log(1 - pj)
                if bit:
                    x, k = x + E[1 + j], k + 1
            x = x / (1 + k)
            lp = None
        if lp is not None:
            logp += float(lp[a])
            ent -= float((lp.exp() * lp).sum())
        prev_anchor = d.anchor
    return logp, ent


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("name", sorted(LISTS))
def test_exact_probabilities_and_entropy(name, layers):
    ds = LISTS[name]
    ctl = controller(ds, hidden=6, layers=layers, init_range=1.0, seed=3)
    combos = all_choices(ds)
    with torch.no_grad():
        logp, ent = ctl.evaluate(ds, combos)
    lp, en = logp.double(), ent.double()
    p = lp.exp()
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-5)
    joint = float(-(p * lp).sum())
    assert float((p * en).sum()) == pytest.approx(joint, abs=1e-5)   # chain rule
    if len(combos) > 2:  # the weights make the distribution far from uniform
        assert float(p.max() / p.min()) > 2.0
    for choices in combos[:: max(1, len(combos) // 40)]:
        ref_lp, ref_ent = reference(ctl, ds, choices)
        i = combos.index(choices)
        assert float(logp[i]) == pytest.approx(ref_lp, abs=1e-5)
        assert float(ent[i]) == pytest.approx(ref_ent, abs=1e-5)


@pytest.mark.parametrize("name", sorted(LISTS))
def test_sample_matches_evaluate_and_reference(name):
    ds = LISTS[name]
    ctl = controller(ds, hidden=6, layers=2, init_range=1.0, seed=5)
    gen = np.random.default_rng(0)
    for _ in range(30):
        choices, lp, en = ctl.sample(ds, gen)
        assert len(choices) == len(ds)
        with torch.no_grad():
            lp2, en2 = ctl.evaluate(ds, choices)
        assert lp == pytest.approx(float(lp2), abs=1e-5)
        assert en == pytest.approx(float(en2), abs=1e-5)
        ref_lp, ref_ent = reference(ctl, ds, choices)
        assert lp == pytest.approx(ref_lp, abs=1e-9)     # both float64
        assert en == pytest.approx(ref_ent, abs=1e-9)


def test_sampler_draws_from_the_evaluated_distribution():
    ds = NASNET_LIKE + (Subset("s", 2),)
    ctl = controller(ds, hidden=6, layers=1, init_range=1.0, seed=7)
    combos = all_choices(ds)
    with torch.no_grad():
        p = ctl.evaluate(ds, combos)[0].double().exp().numpy()
    gen = np.random.default_rng(1)
    n = 6000
    counts = np.zeros(len(combos))
    index = {c: i for i, c in enumerate(combos)}
    for _ in range(n):
        counts[index[ctl.sample(ds, gen)[0]]] += 1
    assert chisquare(counts, p / p.sum() * n).pvalue > 1e-3


def test_slot_heads_can_be_disabled():
    ds = MIXED
    with_bias = controller(ds, hidden=6, layers=1, init_range=1.0, seed=3)
    plain = controller(ds, hidden=6, layers=1, init_range=1.0, seed=3, slot_head=False)
    assert len(plain.slot_heads) == 0 and len(with_bias.slot_heads) == 4
    combos = all_choices(ds)
    with torch.no_grad():
        lp = plain.evaluate(ds, combos)[0].double()
        assert float(lp.exp().sum()) == pytest.approx(1.0, abs=1e-5)
        assert not torch.allclose(lp, with_bias.evaluate(ds, combos)[0].double())
        for p in with_bias.slot_heads.parameters():
            p.zero_()
        assert torch.allclose(lp, with_bias.evaluate(ds, combos)[0].double(), atol=1e-6)
    choices, slp, _ = plain.sample(ds, np.random.default_rng(0))
    assert slp == pytest.approx(reference(plain, ds, choices)[0], abs=1e-9)


def test_start_anchors_pad_missing_anchors():
    ctl = Controller(hidden=4, layers=1, init_range=0.3, seed=0)
    ds = (Pointer("p", 3), cat("a", 2, True), Subset("s", 4))
    ctl.ensure(ds)
    assert len(ctl.start) == 3          # Pointer(3) with no anchor needs three
    lp, _ = ctl.evaluate(ds, [(0, 0, 0b1011)])
    lp.sum().backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in ctl.start)


def test_gradients_reach_every_used_parameter():
    ctl = Controller(hidden=5, layers=2, init_range=0.5, seed=0)
    ds = MIXED
    logp, ent = ctl.evaluate(ds, all_choices(ds)[:50])
    (logp.sum() + ent.sum()).backward()
    unused = f"embs.{ctl._emb[('ptr', 'q', 3)]}.weight"   # the last token is never fed back
    for name, p in ctl.named_parameters():
        if name == unused:
            assert p.grad is None
            continue
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_growing_lists_reuse_and_add_parameters():
    short = (cat("L0.f", 4, True), Subset("L1.in", 1), cat("L1.f", 4, True))
    long = short + (Subset("L2.in", 2), cat("L2.f", 4, True))
    grown = Controller(hidden=6, layers=2, init_range=0.5, seed=11)
    groups = []
    grown.new_params_hook = groups.append
    grown.ensure(short)
    n_short = sum(p.numel() for p in grown.parameters())
    before = {k: v.clone() for k, v in grown.state_dict().items()}
    new = grown.ensure(long)
    # L2.in's embedding and slot head (2); L2.f's head weight, bias and embedding
    assert len(groups) == 2 and groups[1] is new and len(new) == 6
    assert grown.growth[1] == [("sub", "L2.in", 2), ("cat", "L2.f", 4)]
    assert grown.ensure(long) == []                          # nothing twice
    assert sum(p.numel() for p in grown.parameters()) > n_short
    for k, v in before.items():
        assert torch.equal(grown.state_dict()[k], v)          # old ones untouched
    # a parameter's initial value depends on its key only, not on the growth order
    direct = Controller(hidden=6, layers=2, init_range=0.5, seed=11)
    combos = all_choices(long)[:64]
    with torch.no_grad():
        assert torch.allclose(grown.evaluate(long, combos)[0], direct.evaluate(long, combos)[0])
    # the short list's probabilities sum to one on its own
    with torch.no_grad():
        assert float(grown.evaluate(short, all_choices(short))[0].double().exp().sum()) == \
            pytest.approx(1.0, abs=1e-5)


def test_checkpoint_round_trip_and_mismatch():
    ds = MIXED
    a = Controller(hidden=6, layers=1, init_range=0.5, seed=2)
    a.ensure(ds[:2])
    a.ensure(ds)
    with torch.no_grad():
        for p in a.parameters():
            p.add_(0.01)
    blob = pickle.dumps(a.checkpoint())
    b = Controller(hidden=6, layers=1, init_range=0.5, seed=2)
    groups = []
    b.new_params_hook = groups.append
    b.load_checkpoint(pickle.loads(blob))
    assert len(groups) == 2
    combos = all_choices(ds)[:100]
    with torch.no_grad():
        assert torch.equal(a.evaluate(ds, combos)[0], b.evaluate(ds, combos)[0])
    g = np.random.default_rng(4)
    assert a.sample(ds, np.random.default_rng(4)) == b.sample(ds, g)
    other = Controller(hidden=6, layers=1, init_range=0.5, seed=2)
    other.ensure((cat("zzz", 2),))
    with pytest.raises(ValueError, match="other decisions"):
        other.load_checkpoint(pickle.loads(blob))


def test_sampler_sees_weight_updates():
    ds = MIXED
    ctl = Controller(hidden=6, layers=1, init_range=0.5, seed=0)
    ctl.ensure(ds)
    opt = torch.optim.Adam(ctl.parameters(), lr=0.5)
    choices, lp0, _ = ctl.sample(ds, np.random.default_rng(0))
    loss = -ctl.evaluate(ds, choices)[0]
    opt.zero_grad()
    loss.backward()
    opt.step()
    choices2, lp1, _ = ctl.sample(ds, np.random.default_rng(0))
    assert lp1 == pytest.approx(float(ctl.evaluate(ds, choices2)[0]), abs=1e-5)
    assert choices2 != choices or lp1 != pytest.approx(lp0, abs=1e-3)


def test_per_step_log_probs():
    ds = MIXED
    ctl = controller(ds, hidden=6, layers=2, init_range=1.0, seed=1)
    gen = np.random.default_rng(3)
    batch = []
    for _ in range(5):
        choices, steps, _ = ctl.sample(ds, gen, per_step=True)
        assert steps.shape == (len(ds),) and np.all(steps <= 0)
        batch.append((choices, steps))
    with torch.no_grad():
        per, _ = ctl.evaluate(ds, [c for c, _ in batch], per_step=True)
        total, _ = ctl.evaluate(ds, [c for c, _ in batch])
    assert per.shape == (5, len(ds))
    assert torch.allclose(per.sum(1), total, atol=1e-5)
    assert np.allclose(per.double().numpy(), np.stack([s for _, s in batch]), atol=1e-5)
    # a decision's log-prob depends only on the choices before it
    c0 = list(batch[0][0])
    c1 = c0[:-1] + [(c0[-1] + 1) % ds[-1].size]
    with torch.no_grad():
        a, b = ctl.evaluate(ds, [c0, c1], per_step=True)[0]
    assert torch.allclose(a[:-1], b[:-1]) and a[-1] != b[-1]


def test_double_precision_is_exact():
    ds = MIXED
    ctl = controller(ds, hidden=6, layers=2, init_range=1.0, seed=9).double()
    combos = all_choices(ds)
    with torch.no_grad():
        lp, en = ctl.evaluate(ds, combos)
    assert float(lp.exp().sum()) == pytest.approx(1.0, abs=1e-12)
    assert float((lp.exp() * en).sum()) == pytest.approx(float(-(lp.exp() * lp).sum()),
                                                         abs=1e-12)
    choices, slp, sen = ctl.sample(ds, np.random.default_rng(0))
    assert slp == pytest.approx(float(ctl.evaluate(ds, choices)[0]), abs=1e-12)


def test_edge_cases_and_bad_input():
    ctl = Controller(hidden=4, layers=1, seed=0)
    lp, en = ctl.evaluate((), ())
    assert float(lp) == 0.0 and float(en) == 0.0
    assert ctl.sample((), np.random.default_rng(0)) == ((), 0.0, 0.0)
    with pytest.raises(ValueError, match="out of range"):
        ctl.evaluate(MIXED, (3, 0, 0, 0, 0, 0))
    with pytest.raises(ValueError, match="expected 6 choices"):
        ctl.evaluate(MIXED, (0, 0))
    with pytest.raises(ValueError, match="at most 62"):
        ctl.ensure((Subset("wide", 63),))
    with pytest.raises(TypeError, match="Categorical, Pointer, Subset"):
        ctl.ensure(("not a decision",))
    with pytest.raises(ValueError, match="hidden"):
        Controller(hidden=0)
    with pytest.raises(ValueError, match="init_range"):
        Controller(init_range=0.0)


def test_construction_leaves_global_rng_alone_and_is_seeded():
    state = torch.get_rng_state()
    a = Controller(hidden=8, layers=2, init_range=0.08, seed=1)
    a.ensure(MIXED)
    assert torch.equal(torch.get_rng_state(), state)
    b = Controller(hidden=8, layers=2, init_range=0.08, seed=1)
    b.ensure(MIXED)
    c = Controller(hidden=8, layers=2, init_range=0.08, seed=2)
    c.ensure(MIXED)
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(v, w), k
        assert v.abs().max() <= 0.08
    assert any(not torch.equal(v, u) for v, u in zip(a.state_dict().values(),
                                                    c.state_dict().values(), strict=True))
