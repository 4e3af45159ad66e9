"""Contract tests of every registered attack, known answers on a linear model, EOT and BPDA.

Cross-checks against torchattacks and foolbox live in ``test_attacks_crosscheck.py``.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from torch import nn

from neurorobust.attacks import (
    ATTACKS,
    BPDA,
    EOT,
    PGD,
    Attack,
    AttackResult,
    CarliniWagnerL2,
    DeepFool,
    EOTModel,
    FGSMMin,
    auto_wrap,
    input_gradient,
)
from neurorobust.errors import InvalidParameterError

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_cnn(seed: int = 0, classes: int = 10) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, classes))


def fast_attack(name: str) -> Attack:
    """Each registered attack with settings small enough for a unit test."""
    overrides = {
        "pgd": {"steps": 5},
        "apgd-ce": {"steps": 8},
        "apgd-dlr": {"steps": 8},
        "bim": {"steps": 4},
        "ill": {"steps": 4},
        "cw": {"steps": 15, "binary_search_steps": 2},
        "deepfool": {"steps": 10},
        "jsma": {"max_iter": 15},
        "boundary": {"steps": 10, "candidates": 4, "init_attempts": 20},
        "square": {"queries": 30},
        "fgsm-min": {"grid_step": 0.05, "refine_steps": 3},
        "transfer": {"source_model": tiny_cnn(7), "attack": PGD(steps=3)},
        "eot": {"attack": PGD(steps=3), "draws": 2},
        "bpda": {"attack": PGD(steps=3), "surrogate": tiny_cnn(0)},
    }
    return ATTACKS.create(name, **overrides.get(name, {}))


def batch(n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


NAMES = ATTACKS.names()


def test_registry_lists_all_attacks_and_wrappers() -> None:
    assert (
        sorted(
            [
                "fgsm",
                "fgsm-min",
                "bim",
                "ill",
                "bim-kubo",
                "ill-kubo",
                "pgd",
                "apgd-ce",
                "apgd-dlr",
                "apgd-t",
                "fab-t",
                "square",
                "deepfool",
                "jsma",
                "cw",
                "boundary",
                "transfer",
                "eot",
                "bpda",
            ]
        )
        == NAMES
    )
    for entry in ATTACKS:
        assert entry.paper and entry.summary, entry.name
        assert ":math:" in (entry.constructor.__doc__ or "") or ".. math::" in (entry.constructor.__doc__ or "")


@pytest.mark.parametrize("name", NAMES)
def test_contract(name: str) -> None:
    attack = fast_attack(name)
    model = tiny_cnn()
    x, y = batch()
    eps = 0.1
    res = attack(model, x, y, eps=eps, generator=torch.Generator().manual_seed(0))
    assert isinstance(res, AttackResult)
    assert res.x_adv.shape == x.shape and res.x_adv.dtype == x.dtype
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    norm = attack.norm
    assert norm in ("linf", "l2", "l0")
    # inside its budget: the eps ball, or steps x eps for an attack whose eps is a step size (a paper's protocol)
    assert float(res.distances[norm].max()) <= attack.budget(eps) * (1 + 1e-5) + 1e-6
    assert attack.within_eps == (attack.budget(eps) == eps)
    with torch.no_grad():
        expected = model(res.x_adv).argmax(1) != y
    assert torch.equal(res.success, expected)
    assert set(res.distances) == {"l0", "l2", "linf"}
    assert all(d.shape == (x.shape[0],) for d in res.distances.values())
    assert res.queries.dtype == torch.int64 and res.queries.shape == (x.shape[0],)
    assert res.eps == eps and res.clean_correct is not None
    assert repr(attack).startswith(type(attack).__name__ + "(")


@pytest.mark.parametrize("name", NAMES)
def test_seeded_repeatability(name: str) -> None:
    x, y = batch()
    runs = [fast_attack(name)(tiny_cnn(), x, y, eps=0.1, generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(runs[0].x_adv, runs[1].x_adv)
    assert torch.equal(runs[0].queries, runs[1].queries)


class _Raising(nn.Module):
    """A model that raises on its ``after``-th forward call (the first is the clean check)."""

    def __init__(self, after: int = 2) -> None:
        super().__init__()
        self.net = tiny_cnn()
        self.calls, self.after = 0, after

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls >= self.after:
            raise RuntimeError("boom")
        return self.net(x)


@pytest.mark.parametrize("name", NAMES)
def test_state_restored_even_when_the_attack_raises(name: str) -> None:
    model = _Raising()
    model.train()
    first = next(model.parameters())
    first.requires_grad_(False)  # a mixed state must come back exactly
    flags = [p.requires_grad for p in model.parameters()]
    x, y = batch()
    with pytest.raises(RuntimeError, match="boom"):
        fast_attack(name)(model, x, y, eps=0.1)
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == flags
    # and after a normal run
    model.after = 10**9
    fast_attack(name)(model, x, y, eps=0.1)
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == flags


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    ("make", "param", "match"),
    [
        (lambda x, y: (x.clone().fill_(float("nan")), y), "x", r"finite values .* Got a tensor with \d+ NaN"),
        (lambda x, y: (x[:, 0], y), "x", r"float tensor of shape \(N, C, H, W\)"),
        (lambda x, y: (x * 2.0 + 0.1, y), "x", r"values in \[0, 1\]"),
        (lambda x, y: (x.double().mul(255).round().to(torch.uint8), y), "x", "float tensor"),
        (lambda x, y: (x, y.int()), "y", "int64 tensor of labels"),
        (lambda x, y: (x, y[:-1]), "y", r"of shape \(6,\)"),
        (lambda x, y: (x, y + 10), "y", r"labels in \[0, 9\]"),
    ],
    ids=["nan", "3d", "range", "uint8", "int32-labels", "label-count", "label-range"],
)
def test_bad_input_raises_one_clear_error(name: str, make, param: str, match: str) -> None:
    x, y = batch()
    bx, by = make(x, y)
    with pytest.raises(InvalidParameterError, match=rf"The '{param}' parameter of \w+\.__call__ must be .*{match}"):
        fast_attack(name)(tiny_cnn(), bx, by, eps=0.1)


def test_bad_eps_and_generator() -> None:
    x, y = batch()
    with pytest.raises(InvalidParameterError, match=r"'eps' parameter of PGD\.__call__"):
        PGD(steps=1)(tiny_cnn(), x, y)
    with pytest.raises(InvalidParameterError, match="'eps' parameter"):
        PGD(steps=1)(tiny_cnn(), x, y, eps=-0.1)
    with pytest.raises(InvalidParameterError, match="'generator' parameter"):
        PGD(steps=1)(tiny_cnn(), x, y, eps=0.1, generator=3)


@pytest.mark.parametrize("name", NAMES)
def test_constraints_match_signature_and_reject_bad_values(name: str) -> None:
    entry = ATTACKS.get(name)
    cls = entry.constructor
    params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    assert set(cls.constraints) | ({"model_mode"} & set(params)) == set(params)
    for p in inspect.signature(cls.__init__).parameters.values():
        assert p.name == "self" or p.kind is p.KEYWORD_ONLY, (name, p.name)
    base = {"transfer": {"source_model": tiny_cnn()}, "eot": {"attack": PGD()}, "bpda": {"attack": PGD()}}
    for param in params:
        kwargs = {**base.get(name, {}), param: "bad!"}
        with pytest.raises(InvalidParameterError, match=rf"The '{param}' parameter of {cls.__name__} must be"):
            cls(**kwargs)


def test_multi_eps_returns_one_result_per_eps() -> None:
    x, y = batch()
    model = tiny_cnn()
    res = PGD(steps=3)(model, x, y, eps=[0.0, 0.05, 0.2])
    assert isinstance(res, list) and [r.eps for r in res] == [0.0, 0.05, 0.2]
    assert float(res[0].distances["linf"].max()) == 0.0
    # minimal attacks run once and are projected onto each ball
    out = DeepFool(steps=10)(model, x, y, eps=[0.01, 1.0])
    assert [r.eps for r in out] == [0.01, 1.0]
    assert torch.equal(out[0].queries, out[1].queries)
    assert float(out[0].distances["l2"].max()) <= 0.01 + 1e-6


def test_repr_shows_non_defaults_only() -> None:
    assert repr(PGD()) == "PGD()"
    assert repr(PGD(steps=7, random_start=False)) == "PGD(steps=7, random_start=False)"
    assert repr(EOT(attack=PGD(steps=2), draws=5)) == "EOT(attack=PGD(steps=2), draws=5)"


def test_pgd_step_options_are_exclusive_and_dlr_needs_three_classes() -> None:
    with pytest.raises(InvalidParameterError, match="'rel_step_size' parameter of PGD must be None"):
        PGD(step_size=0.01, rel_step_size=0.1)
    x, y = batch()
    two = tiny_cnn(classes=2)
    with pytest.raises(InvalidParameterError, match=r"at least 3 classes for loss='dlr'\. Got a model with 2"):
        ATTACKS.create("apgd-dlr", steps=2)(two, x, y % 2, eps=0.1)
    with pytest.raises(InvalidParameterError, match="at least 3 classes"):
        PGD(steps=2, loss="dlr")(two, x, y % 2, eps=0.1)


# ------------------------------------------------------------------------------------------
# Known answers on a linear classifier
# ------------------------------------------------------------------------------------------


class Linear2(nn.Module):
    """Two-class linear classifier ``z = W x + b`` on (1, 4, 4) inputs."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.lin = nn.Linear(16, 2)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(2, 16, generator=g) * 2.0)
            # the decision boundary passes near the centre of the box
            self.lin.bias.copy_(-self.lin.weight.sum(1) * 0.5 + torch.randn(2, generator=g) * 0.05)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1))


def _linear_case(n: int = 24) -> tuple[Linear2, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    model = Linear2()
    g = torch.Generator().manual_seed(1)
    x = 0.5 + 0.3 * (torch.rand(n, 1, 4, 4, generator=g) - 0.5)  # in [0.35, 0.65]
    with torch.no_grad():
        y = model(x).argmax(1)
    w = model.lin.weight.detach()
    w_diff = w[1] - w[0]
    margin = (x.flatten(1) @ w_diff + (model.lin.bias[1] - model.lin.bias[0]).detach()).abs()
    l2 = margin / w_diff.norm(p=2)
    linf = margin / w_diff.norm(p=1)
    # every coordinate moves by at most the L2 distance: the box never binds
    assert float(linf.max()) < 0.35 and float(l2.max()) < 0.35
    keep = l2 > 0.02  # DeepFool's 1e-4 absolute push stays below 0.5%
    return model, x[keep], y[keep], l2[keep], linf[keep]


def test_known_answer_deepfool_l2() -> None:
    model, x, y, l2, _ = _linear_case()
    res = DeepFool(overshoot=0.02)(model, x, y)
    assert bool(res.success.all())
    ratio = res.distances["l2"] / l2
    assert float(ratio.min()) >= 1.0 - 1e-4 and float(ratio.max()) <= 1.03


def test_known_answer_cw_l2() -> None:
    model, x, y, l2, _ = _linear_case()
    res = CarliniWagnerL2(steps=300, binary_search_steps=10, lr=0.01, initial_const=1.0)(model, x, y)
    assert bool(res.success.all())
    ratio = res.distances["l2"] / l2
    assert float(ratio.min()) >= 1.0 - 1e-3 and float(ratio.max()) <= 1.05


def test_known_answer_fgsm_min_linf() -> None:
    model, x, y, _, linf = _linear_case()
    res = FGSMMin(refine_steps=12)(model, x, y)
    tol = 0.005 / 2**12
    assert bool(res.success.all())
    assert torch.allclose(res.extra["min_eps"], linf, atol=2 * tol)
    assert torch.allclose(res.distances["linf"], linf, atol=2 * tol)


def test_fgsm_min_flags_misclassified_and_unreachable() -> None:
    model, x, y, _, linf = _linear_case(8)
    y_bad = y.clone()
    y_bad[0] = 1 - y_bad[0]  # misclassified before the attack
    res = FGSMMin(max_eps=float(linf[1:].min()) / 2)(model, x, y_bad)
    assert bool(res.extra["clean_misclassified"][0]) and float(res.extra["min_eps"][0]) == 0.0
    assert bool(torch.isinf(res.extra["min_eps"][1:]).all())
    assert not bool(res.success[1:].any()) and float(res.distances["linf"][1:].max()) == 0.0


def test_deepfool_multiplicative_overshoot_as_the_sleep_code() -> None:
    model, x, y, l2, _ = _linear_case()
    res = DeepFool(overshoot=0.05, overshoot_mode="multiplicative", steps=99, clip=False)(model, x, y)
    assert bool(res.success.all())
    assert float((res.distances["l2"] / l2).max()) <= 1.06


# ------------------------------------------------------------------------------------------
# Behaviour
# ------------------------------------------------------------------------------------------


def test_early_stop_never_lowers_success() -> None:
    x, y = batch(16)
    model = tiny_cnn()
    plain = PGD(steps=10, random_start=False)(model, x, y, eps=0.05)
    early = PGD(steps=10, random_start=False, early_stop=True)(model, x, y, eps=0.05)
    assert bool((early.success | ~plain.success).all())
    assert int(early.queries.sum()) <= int(plain.queries.sum())


def test_restarts_keep_the_best() -> None:
    x, y = batch(16)
    model = tiny_cnn()
    one = PGD(steps=3, step_size=0.01)(model, x, y, eps=0.03, generator=torch.Generator().manual_seed(0))
    many = PGD(steps=3, step_size=0.01, restarts=4)(model, x, y, eps=0.03, generator=torch.Generator().manual_seed(0))
    assert bool((many.success | ~one.success).all())
    # a point fooled by the first restart is not attacked again; one never fooled gets all four
    assert bool((many.queries[one.success] == 3 + 1).all())
    assert bool((many.queries[~many.success] == 4 * (3 + 1)).all())
    assert bool((~many.success).any()) and bool(one.success.any())


def test_train_mode_keeps_dropout_and_restores_buffers() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Flatten(), nn.Linear(144, 10))
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = batch()
    seen = []
    model.register_forward_pre_hook(lambda m, inp: seen.append(m.training))
    PGD(steps=2, model_mode="train")(model, x, y, eps=0.1)
    assert True in seen and not model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_transfer_queries_target_only_for_the_check() -> None:
    x, y = batch()
    res = ATTACKS.create("transfer", source_model=tiny_cnn(5), attack=PGD(steps=3))(tiny_cnn(), x, y, eps=0.1)
    assert int(res.queries.sum()) == 0
    assert res.extra["source_success"].dtype == torch.bool


def test_jsma_changes_few_pixels_and_pair_mode_runs() -> None:
    x, y = batch(4)
    model = tiny_cnn()
    with torch.no_grad():
        y = model(x).argmax(1)
    single = ATTACKS.create("jsma", max_iter=30)(model, x, y)
    assert float(single.distances["l0"].max()) <= 30
    pair = ATTACKS.create("jsma", max_iter=10, mode="pair")(model, x, y)
    assert float(pair.distances["l0"].max()) <= 20
    capped = ATTACKS.create("jsma", max_iter=30)(model, x, y, eps=2)
    assert float(capped.distances["l0"].max()) <= 2


def test_boundary_and_square_find_adversarials_on_a_linear_model() -> None:
    model, x, y, l2, linf = _linear_case(8)
    bnd = ATTACKS.create("boundary", steps=200)(model, x, y, generator=torch.Generator().manual_seed(0))
    assert bool(bnd.success.all())
    assert float((bnd.distances["l2"] / l2).median()) < 3.0
    sq = ATTACKS.create("square", queries=300)(model, x, y, eps=float(linf.max()) * 1.5)
    assert float(sq.success.float().mean()) >= 0.75


# ------------------------------------------------------------------------------------------
# EOT and BPDA
# ------------------------------------------------------------------------------------------


class NoisyNet(nn.Module):
    """Adds Gaussian noise to the hidden pre-activations at test time: a random forward pass."""

    is_stochastic = True

    def __init__(self, sigma: float = 2.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.l1, self.l2 = nn.Linear(64, 32), nn.Linear(32, 10)
        self.sigma = sigma
        self.gen = torch.Generator().manual_seed(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.l1(x.flatten(1))
        h = h + self.sigma * torch.randn(h.shape, generator=self.gen)
        return self.l2(torch.relu(h))


def test_eot_averages_gradients_over_draws() -> None:
    model = NoisyNet()
    x, y = batch(4)
    for p in model.parameters():
        p.requires_grad_(False)

    def grad(m: nn.Module) -> torch.Tensor:
        return input_gradient(m, x, y, "ce")[0].flatten(1)

    reference = grad(EOTModel(model, 2000))
    single = grad(model)
    eot = grad(EOTModel(model, 50))
    cos = nn.functional.cosine_similarity
    assert float(cos(eot, reference).mean()) > float(cos(single, reference).mean()) + 0.1
    assert float(cos(eot, reference).mean()) > 0.9


def test_eot_wrapper_counts_draws_and_auto_wrap_reads_declarations() -> None:
    model = NoisyNet()
    x, y = batch(4)
    attack = auto_wrap(PGD(steps=3), model, draws=5)
    assert isinstance(attack, EOT) and attack.draws == 5
    res = attack(model, x, y, eps=0.1)
    assert int(res.queries[0]) == (3 + 1) * 5  # 3 gradient steps and the final iterate judged on the draws, 5 each
    assert auto_wrap(PGD(), tiny_cnn()).__class__ is PGD


class Quantised(nn.Module):
    """Input quantisation (zero gradient almost everywhere) before a CNN; declares a surrogate."""

    def __init__(self, net: nn.Module, levels: int = 4) -> None:
        super().__init__()
        self.net, self.levels = net, levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.round(x * self.levels) / self.levels)

    def bpda_surrogate(self) -> nn.Module:
        return self.net


def test_bpda_breaks_input_quantisation_where_plain_pgd_fails() -> None:
    net = tiny_cnn()
    model = Quantised(net)
    x, y = batch(16)
    with torch.no_grad():
        y = model(x).argmax(1)  # all correct by construction
    plain = PGD(steps=10, random_start=False)(model, x, y, eps=0.3)
    assert float(plain.success.float().mean()) == 0.0  # zero gradients: the attack never moves
    wrapped = auto_wrap(PGD(steps=10, random_start=False), model)
    assert isinstance(wrapped, BPDA)
    res = wrapped(model, x, y, eps=0.3)
    assert float(res.success.float().mean()) >= 0.9


def test_bpda_without_surrogate_raises() -> None:
    x, y = batch()
    with pytest.raises(InvalidParameterError, match=r"'model' parameter of BPDA\.__call__ must be a model declaring"):
        BPDA(attack=PGD(steps=1))(tiny_cnn(), x, y, eps=0.1)


def test_min_eps_is_finite_or_inf_never_nan() -> None:
    x, y = batch()
    res = FGSMMin(grid_step=0.1, refine_steps=2)(tiny_cnn(), x, y)
    assert not bool(torch.isnan(res.extra["min_eps"]).any())
    assert all(math.isfinite(float(v)) or math.isinf(float(v)) for v in res.extra["min_eps"])


def test_micro_batching_does_not_change_deterministic_results() -> None:
    x, y = batch(10)
    model = tiny_cnn()
    whole, chunked = PGD(steps=4, random_start=False), PGD(steps=4, random_start=False)
    whole.chunk_size, chunked.chunk_size = None, 3
    a, b = whole(model, x, y, eps=0.1), chunked(model, x, y, eps=0.1)
    assert torch.allclose(a.x_adv, b.x_adv, atol=1e-6) and torch.equal(a.queries, b.queries)
    fm = FGSMMin(grid_step=0.05, refine_steps=3)
    fm.chunk_size = 4
    res = fm(model, x, y)
    assert res.extra["min_eps"].shape == (10,)
