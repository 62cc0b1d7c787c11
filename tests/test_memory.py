"""SketchMemory: faithful mode against a plain-Python re-statement of the released MemoryStore, fixed mode
against the corrected sequential rule, hand-made cases, gradients, state and degenerate inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dsn_lab.memory import SketchMemory


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b) / max(math.sqrt(float(a @ a)) * math.sqrt(float(b @ b)), 1e-12)


class ReferenceStore:
    """The released MemoryStore (src/tool.py), re-stated with Python lists and numpy, float64.

    ``quirk=True``: a replacement overwrites every slot of class number ``slot`` (released);
    ``quirk=False``: it overwrites ``memory[c][slot]`` (the corrected sequential rule).
    """

    def __init__(self, n_classes: int, slots: int, dim: int, quirk: bool) -> None:
        self.n, self.k, self.d, self.quirk = n_classes, slots, dim, quirk
        self.flush()
        self.quirk_writes = 0
        self.replacements = 0

    def flush(self) -> None:
        self.mem = [[np.zeros(self.d) for _ in range(self.k)] for _ in range(self.n)]
        self.fill = [0] * self.n

    def add(self, sketches, s_labels, photos, p_labels) -> None:
        for embed, c in zip(sketches, s_labels):
            if self.fill[c] < self.k:
                self.mem[c][self.fill[c]] = embed.copy()
                self.fill[c] += 1
                continue
            mine = [p for p, lab in zip(photos, p_labels) if lab == c]
            if not mine:
                continue
            q = np.mean(mine, axis=0)
            scores = [_cos(e, q) for e in self.mem[c]]
            worst = int(np.argmin(scores))
            if _cos(q, embed) > scores[worst]:
                self.replacements += 1
                if self.quirk:
                    self.mem[worst] = [embed.copy() for _ in range(self.k)]
                    self.quirk_writes += 1
                else:
                    self.mem[c][worst] = embed.copy()

    def loss(self, photos, p_labels) -> float:
        cos = []
        for p, c in zip(photos, p_labels):
            if self.fill[c]:
                cos.append(_cos(p, np.mean(self.mem[c][: self.fill[c]], axis=0)))
        return 0.0 if not cos else 1.0 - sum(cos) / len(cos)


def _batches(seed: int, n_batches: int, n_classes: int, dim: int, n_s: int = 10, n_p: int = 12):
    rng = np.random.default_rng(seed)
    for _ in range(n_batches):
        yield (
            rng.normal(size=(n_s, dim)),
            rng.integers(0, n_classes, n_s),
            rng.normal(size=(n_p, dim)),
            rng.integers(0, n_classes, n_p),
        )


def _t(x) -> torch.Tensor:
    return torch.as_tensor(x)


def test_faithful_matches_released_restatement():
    c, k, d = 9, 3, 6
    ref = ReferenceStore(c, k, d, quirk=True)
    mem = SketchMemory(c, k, d, faithful=True).to(torch.float64)
    for step, (s, ls, p, lp) in enumerate(_batches(0, 40, c, d)):
        if step == 25:  # a new epoch
            ref.flush()
            mem.flush()
        ref.add(s, ls, p, lp)
        mem.update(_t(s), _t(ls), _t(p), _t(lp))
        np.testing.assert_array_equal(mem.fill.numpy(), np.array(ref.fill))
        np.testing.assert_array_equal(mem.memory.numpy(), np.array(ref.mem))
        assert float(mem.loss(_t(p), _t(lp))) == pytest.approx(ref.loss(p, lp), abs=1e-12)
    assert ref.quirk_writes > 5, "the sequence must exercise the whole-row overwrite"


def test_fixed_matches_corrected_sequential_rule_as_sets():
    c, k, d = 9, 3, 6
    ref = ReferenceStore(c, k, d, quirk=False)
    mem = SketchMemory(c, k, d, faithful=False).to(torch.float64)
    for s, ls, p, lp in _batches(1, 40, c, d):
        ref.add(s, ls, p, lp)
        mem.update(_t(s), _t(ls), _t(p), _t(lp))
        np.testing.assert_array_equal(mem.fill.numpy(), np.array(ref.fill))
        for cls in range(c):
            n = ref.fill[cls]
            got = sorted(map(tuple, mem.memory[cls, :n].numpy()))
            want = sorted(map(tuple, np.array(ref.mem[cls][:n])))
            assert got == want, f"class {cls}: kept entries differ"
            assert np.all(mem.memory[cls, n:].numpy() == 0)
            np.testing.assert_allclose(
                mem.norms[cls].numpy(), np.linalg.norm(mem.memory[cls].numpy(), axis=1)
            )
        centres, valid = mem.centers()
        np.testing.assert_array_equal(valid.numpy(), np.array(ref.fill) > 0)
        for cls in np.flatnonzero(valid.numpy()):
            np.testing.assert_allclose(
                centres[cls].numpy(), np.mean(ref.mem[cls][: ref.fill[cls]], axis=0), rtol=1e-12, atol=1e-12
            )
        assert float(mem.loss(_t(p), _t(lp))) == pytest.approx(ref.loss(p, lp), abs=1e-10)
    assert ref.replacements > 10


def test_fixed_replacement_policy_hand_made():
    mem = SketchMemory(num_classes=3, slots=2, dim=2, faithful=False)
    e1, e2 = [1.0, 0.0], [0.0, 1.0]
    # fill class 0 in arrival order; no photos needed to fill
    mem.update(
        torch.tensor([e1, e2]), torch.tensor([0, 0]), torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)
    )
    assert mem.fill.tolist() == [2, 0, 0]
    assert mem.memory[0].tolist() == [e1, e2]
    photos = torch.tensor([[1.0, 0.2], [1.0, -0.2]])  # class-0 mean (1, 0)
    # (0.9, 0.1) is closer to (1, 0) than e2 -> replaces e2 in place; (-1, 0) is worse than both -> dropped;
    # class 1 has no photo but a free slot -> filled; class 2 sketches beyond its slots, no photo -> dropped
    sk = torch.tensor([[0.9, 0.1], [-1.0, 0.0], [3.0, 3.0], [5.0, 1.0], [6.0, 1.0], [7.0, 1.0]])
    lab = torch.tensor([0, 0, 1, 2, 2, 2])
    mem.update(sk, lab, photos, torch.tensor([0, 0]))
    assert mem.fill.tolist() == [2, 1, 2]
    assert mem.memory[0].tolist() == [e1, pytest.approx([0.9, 0.1])]
    assert mem.memory[1, 0].tolist() == [3.0, 3.0]
    assert mem.memory[2].tolist() == [[5.0, 1.0], [6.0, 1.0]]
    centres, valid = mem.centers()
    assert valid.tolist() == [True, True, True]
    torch.testing.assert_close(centres[0], torch.tensor([0.95, 0.05]))
    torch.testing.assert_close(centres[2], torch.tensor([5.5, 1.0]))
    # two newcomers, both closer to (1, 0) than (0.9, 0.1): the bank keeps the top 2 of all four by cosine,
    # e1 (cos 1) and (1, 0.01); (0.9, 0.1) is evicted and (1, -0.02) never enters
    mem.update(torch.tensor([[1.0, 0.01], [1.0, -0.02]]), torch.tensor([0, 0]), photos, torch.tensor([0, 0]))
    assert mem.memory[0].tolist() == [e1, torch.tensor([1.0, 0.01]).tolist()]
    assert mem.fill.tolist() == [2, 1, 2]


def test_faithful_hand_made_whole_row_quirk():
    mem = SketchMemory(num_classes=3, slots=2, dim=2, faithful=True)
    mem.update(
        torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([2, 2]), torch.zeros(0, 2), torch.zeros(0).long()
    )
    # class 2 is full; slot 1 ([0, 1]) is furthest from the photo mean (1, 0); the newcomer is closer, and the
    # released code writes it into every slot of class *1*, leaving class 2 and class 1's fill count unchanged
    mem.update(torch.tensor([[0.9, 0.1]]), torch.tensor([2]), torch.tensor([[1.0, 0.0]]), torch.tensor([2]))
    assert mem.memory[2].tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert mem.memory[1].tolist() == [pytest.approx([0.9, 0.1])] * 2
    assert mem.fill.tolist() == [0, 0, 2]


def test_gradients_fixed_flow_faithful_none():
    torch.manual_seed(0)
    s, ls = torch.randn(8, 5), torch.tensor([0, 1, 1, 2, 3, 3, 0, 2])  # two per class: no replacement
    p, lp = torch.randn(10, 5, requires_grad=True), torch.randint(0, 4, (10,))
    fixed, faithful = SketchMemory(4, 3, 5), SketchMemory(4, 3, 5, faithful=True)
    for m in (fixed, faithful):
        m.update(s, ls, p, lp)
    loss = fixed.loss(p, lp)
    loss.backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
    assert not fixed.memory.requires_grad
    f_loss = faithful.loss(p, lp)
    assert not f_loss.requires_grad and f_loss.grad_fn is None
    torch.testing.assert_close(f_loss, loss.detach())  # no quirk write yet: same value


@pytest.mark.parametrize("faithful", [False, True])
def test_detach_loss_switches_the_gradient_either_way(faithful):
    """The two released defects apart: the update rule (faithful), the loss without gradient (detach_loss)."""
    torch.manual_seed(1)
    s, ls = torch.randn(6, 5), torch.tensor([0, 1, 2, 0, 1, 2])
    p, lp = torch.randn(7, 5, requires_grad=True), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    values = {}
    for detach in (False, True):
        m = SketchMemory(3, 2, 5, faithful=faithful, detach_loss=detach)
        m.update(s, ls, p.detach(), lp)
        loss = m.loss(p, lp)
        assert loss.requires_grad is not detach
        if not detach:
            (grad,) = torch.autograd.grad(loss, p)
            assert grad.abs().sum() > 0
        values[detach] = float(loss.detach())
    assert values[False] == pytest.approx(values[True], rel=1e-6)  # same value, only the gradient differs
    assert SketchMemory(3, 2, 5, faithful=faithful).detach_loss is faithful  # default: the released pairing


def test_loss_none_valid_is_zero():
    m = SketchMemory(3, 2, 4)
    p = torch.randn(5, 4, requires_grad=True)
    loss = m.loss(p, torch.tensor([0, 1, 2, 0, 1]))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.all(p.grad == 0)
    assert float(SketchMemory(3, 2, 4, faithful=True).loss(p, torch.tensor([0, 1, 2, 0, 1]))) == 0.0


@pytest.mark.parametrize("faithful", [False, True])
def test_state_dict_round_trip_and_dtype_move(faithful):
    torch.manual_seed(1)
    a = SketchMemory(5, 3, 4, faithful=faithful)
    for _ in range(4):
        a.update(torch.randn(6, 4), torch.randint(0, 5, (6,)), torch.randn(8, 4), torch.randint(0, 5, (8,)))
    b = SketchMemory(5, 3, 4, faithful=faithful)
    b.load_state_dict(a.state_dict())
    for name, buf in a.named_buffers():
        assert torch.equal(buf, dict(b.named_buffers())[name]), name
    batch = (torch.randn(6, 4), torch.randint(0, 5, (6,)), torch.randn(8, 4), torch.randint(0, 5, (8,)))
    a.update(*batch)
    b.update(*batch)
    assert torch.equal(a.memory, b.memory) and torch.equal(a.fill, b.fill)
    c = b.to(torch.float64)
    assert c.memory.dtype == torch.float64 and c.fill.dtype == torch.long
    assert torch.equal(c.memory, a.memory.double())
    loss = c.loss(batch[2].double(), batch[3])
    assert loss.dtype == torch.float64
    b.flush()
    assert b.fill.sum() == 0 and b.memory.abs().sum() == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("faithful", [False, True])
def test_cuda_matches_cpu(faithful):
    torch.manual_seed(2)
    cpu = SketchMemory(6, 3, 16, faithful=faithful).double()
    gpu = SketchMemory(6, 3, 16, faithful=faithful).double().to("cuda")
    assert gpu.memory.is_cuda and gpu.fill.is_cuda
    for _ in range(8):
        s, ls = torch.randn(8, 16).double(), torch.randint(0, 6, (8,))
        p, lp = torch.randn(10, 16).double(), torch.randint(0, 6, (10,))
        cpu.update(s, ls, p, lp)
        gs, gls, gp, glp = s.cuda(), ls.cuda(), p.cuda(), lp.cuda()
        torch.cuda.synchronize()
        if not faithful:  # the fixed mode must never wait for the GPU
            torch.cuda.set_sync_debug_mode("error")
        try:
            gpu.update(gs, gls, gp, glp)
            g_loss = gpu.loss(gp, glp)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        torch.testing.assert_close(g_loss.cpu(), cpu.loss(p, lp))
    assert torch.equal(gpu.fill.cpu(), cpu.fill)
    for cls in range(6):
        torch.testing.assert_close(
            gpu.memory[cls].cpu().sort(0).values, cpu.memory[cls].sort(0).values, rtol=0, atol=1e-12
        )


@pytest.mark.parametrize("faithful", [False, True])
def test_degenerate_inputs(faithful):
    m = SketchMemory(4, 2, 3, faithful=faithful)
    empty_f, empty_l = torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)
    m.update(empty_f, empty_l, empty_f, empty_l)  # empty batch: no-op
    assert m.fill.sum() == 0
    assert float(m.loss(empty_f, empty_l)) == 0.0
    # one sketch, one photo of one class
    m.update(
        torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([1]), torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([1])
    )
    assert m.fill.tolist() == [0, 1, 0, 0]
    assert float(m.loss(torch.tensor([[2.0, 4.0, 6.0]]), torch.tensor([1]))) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        m.update(torch.zeros(2, 5), torch.zeros(2).long(), empty_f, empty_l)
    with pytest.raises(ValueError, match="labels"):
        m.update(torch.zeros(2, 3), torch.zeros(3).long(), empty_f, empty_l)
