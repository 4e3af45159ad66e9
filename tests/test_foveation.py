"""Foveation front-ends (Vuyyuru et al. 2020; Burhanpurkar 2021): geometry, samplers, models, declarations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neurorobust.attacks import PGD, auto_wrap
from neurorobust.attacks.wrappers import BPDA
from neurorobust.errors import InvalidParameterError
from neurorobust.evaluation.metrics import adversarial_accuracy
from neurorobust.mechanisms.foveation import (
    CorticalSampler,
    FixationNet,
    MultiGazeNet,
    ParallelSTN,
    RetinalSampler,
    bilinear_sample,
    coarse_crop,
    coarse_size,
    cortical_geometry,
    crop_theta,
    discrete_sample,
    five_points,
    fixation_offset,
    retinal_constants,
    retinal_radii,
    retinal_source,
    stn_theta,
)
from neurorobust.models import MODELS, create_model
from neurorobust.store import ResultsStore


def _tiny(frontend: str, size: int = 32, **kw):
    torch.manual_seed(0)
    return create_model("foveated", input_shape=(3, size, size), frontend=frontend, backbone="resnet20", width=4, **kw)


# ----------------------------------------------------------------------------- retinal geometry


def test_constants_match_the_recomputed_values_of_notes():
    a, b = retinal_constants(320)
    assert a == pytest.approx(0.003040, abs=2e-6) and b == pytest.approx(0.4924, abs=2e-4)
    a, b = retinal_constants(32)
    assert a == pytest.approx(0.03449, abs=2e-5) and b == pytest.approx(0.5264, abs=2e-4)


@pytest.mark.parametrize("size", [32, 128, 320])
def test_fovea_is_magnified_about_twice_and_the_last_radius_reaches_the_edge(size):
    a, b = retinal_constants(size)
    assert 1.8 < 1 / b < 2.1  # g'(0) = B: two output pixels per source pixel at the fovea
    r = retinal_radii(size)
    assert len(r) == size // 2 and r[0] == 0 and r[-1] == pytest.approx(size / 2, rel=1e-6)  # Brent's root
    g_edge = a * (size // 2 - 1) ** 2 + b * (size // 2 - 1)
    assert g_edge == pytest.approx(size / 2, rel=0.08)  # the fitted quadratic maps the last output radius near the edge


@pytest.mark.parametrize("size", [32, 128])
def test_sampling_density_falls_monotonically_with_radius(size):
    a, b = retinal_constants(size)
    rp = np.arange(size // 2)
    spacing = 2 * a * rp + b  # source pixels per output pixel, g'(r'), grows with r'
    assert np.all(np.diff(spacing) > 0)
    assert np.all(np.diff(retinal_radii(size), 2) > 0)  # the coded radii spread out too
    # measured on the grid: along a ray from the fovea, the source step between output pixels grows
    src = retinal_source(size, torch.zeros(1, 2))[0]
    row = src[size // 2, size // 2 :, 1].numpy()  # columns right of the centre
    steps = np.diff(row)
    assert np.all(steps > 0) and steps[-2] > 1.5 * steps[0]


def test_grid_stays_inside_the_padded_image_for_every_test_fixation():
    size = 128
    gazes = five_points(fixation_offset("retinal", size))
    src = retinal_source(size, gazes)
    assert src.shape == (5, size, size, 2)
    assert float(src.min()) >= 0 and float(src.max()) <= size + 2
    # centre gaze: as coded, output pixel (N-1)/2 reads padded (N/2, N/2), i.e. image pixel N/2 - 2
    centre = retinal_source(size, torch.tensor([[0.0, 0.0]]))[0]
    a, b = retinal_constants(size)
    d = torch.tensor([0.5, 0.5])  # output pixel (N/2, N/2) is half a pixel from the centre (N-1)/2
    r = float(d.norm())
    assert torch.allclose(centre[size // 2, size // 2], size / 2 + (a * r**2 + b * r) * d / r)
    assert torch.allclose(centre[0, 0], torch.zeros(2))  # the corners clip to the padded border


# ----------------------------------------------------------------------------- samplers


def test_bilinear_equals_the_thesis_hand_formula():
    gen = torch.Generator().manual_seed(0)
    img = torch.rand(1, 2, 9, 11, generator=gen)
    pts = [(2.3, 4.7), (0.5, 0.5), (7.9, 9.01), (4.0, 6.25)]  # (row y, col x)
    coords = torch.tensor(pts).view(1, 1, len(pts), 2)
    got = bilinear_sample(img, coords)[0, :, 0]
    for k, (y, x) in enumerate(pts):
        x0, y0 = math.floor(x), math.floor(y)
        p11, p12 = img[0, :, y0, x0], img[0, :, y0 + 1, x0]  # (floor x, floor y), (floor x, floor y + 1)
        p21, p22 = img[0, :, y0, x0 + 1], img[0, :, y0 + 1, x0 + 1]
        p1 = (x0 + 1 - x) * p11 + (x - x0) * p21
        p2 = (x0 + 1 - x) * p12 + (x - x0) * p22
        want = (y0 + 1 - y) * p1 + (y - y0) * p2
        assert torch.allclose(got[:, k], want, atol=1e-6)


def test_bilinear_equals_discrete_on_integer_coordinates():
    gen = torch.Generator().manual_seed(1)
    img = torch.rand(2, 3, 12, 12, generator=gen)
    coords = torch.randint(0, 12, (2, 5, 6, 2), generator=gen).float()
    for rounding in ("round", "floor"):
        assert torch.allclose(bilinear_sample(img, coords), discrete_sample(img, coords, rounding), atol=1e-6)


def test_discrete_rounds_half_to_even_as_coded_and_truncates_as_an_option():
    img = torch.arange(10.0).view(1, 1, 1, 10)
    coords = torch.tensor([[[[0.0, 2.5], [0.0, 3.5], [0.0, 4.6]]]])
    assert discrete_sample(img, coords, "round").flatten().tolist() == [2.0, 4.0, 5.0]
    assert discrete_sample(img, coords, "floor").flatten().tolist() == [2.0, 3.0, 4.0]
    with pytest.raises(InvalidParameterError, match="'rounding' parameter"):
        discrete_sample(img, coords, "ceil")


def test_retinal_sampler_discrete_is_the_rounded_bilinear_grid():
    x = torch.rand(2, 3, 32, 32)
    gaze = torch.tensor([[0.0, 0.0], [-8.0, 8.0]])
    d = RetinalSampler(32, "discrete")(x, gaze)
    src = retinal_source(32, gaze).round()
    b = bilinear_sample(F.pad(x, (2, 2, 2, 2)), src)
    assert torch.allclose(d, b, atol=1e-5)  # grid_sample's float32 normalisation


def test_cortical_scales_are_blurred_subsampled_crops_of_equal_side():
    sides, radii = cortical_geometry(128)
    assert sides == (16, 32, 64, 96) and radii == (1, 2, 4, 6)
    assert cortical_geometry(320) == ((40, 80, 160, 240), (1, 2, 4, 6))
    assert cortical_geometry(32) == ((15, 30), (1, 2))
    sampler = CorticalSampler(128)
    out = sampler(torch.rand(2, 3, 128, 128), [16, -16])
    assert [tuple(o.shape[-2:]) for o in out] == [(16, 16)] * 4
    flat = torch.full((1, 3, 128, 128), 0.5)
    inner = sampler(flat, [0, 0])[3][..., 4:-4, 4:-4]  # away from the zero-padded border: blur keeps a flat image
    assert torch.allclose(inner, torch.full_like(inner, 0.5), atol=1e-5)
    # radius 1: sigma 0.5 blur of the 16-px crop, every pixel kept
    x = torch.rand(1, 3, 128, 128)
    assert torch.allclose(sampler(x, [0, 0])[0], _blur_ref(coarse_crop(x, [0, 0], 16), 0.5), atol=1e-5)


def _blur_ref(img, sigma):
    t = torch.arange(-4 * sigma, 4 * sigma + 1)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    k2 = (k[:, None] * k[None, :]).expand(3, 1, -1, -1)
    return F.conv2d(img, k2, padding=len(k) // 2, groups=3)


def test_coarse_crop_and_the_five_points():
    assert five_points(5).tolist() == [[0, 0], [-5, 5], [5, -5], [-5, -5], [5, 5]]
    assert coarse_size(128) == 90 and coarse_size(32) == 24 and coarse_size(320) == 224
    assert [fixation_offset(f, 320) for f in ("coarse", "retinal", "cortical")] == [48, 80, 40]
    assert [fixation_offset(f, 128) for f in ("coarse", "retinal", "cortical")] == [19, 32, 16]
    assert [fixation_offset(f, 32) for f in ("coarse", "retinal", "cortical")] == [4, 8, 1]
    x = torch.rand(1, 3, 128, 128)
    assert torch.equal(coarse_crop(x, [-19, 19], 90), x[..., 0:90, 38:128])
    assert torch.equal(coarse_crop(x, [0, 0], 90), x[..., 19:109, 19:109])


@pytest.mark.parametrize("frontend", ["coarse", "retinal", "cortical"])
def test_test_logits_average_the_five_fixed_points(frontend):
    net = _tiny(frontend).eval()
    x = torch.rand(3, 3, 32, 32)
    g = net.g
    with torch.no_grad():
        each = [net._glimpse_logits(x, p) for p in ([0, 0], [-g, g], [g, -g], [-g, -g], [g, g])]
        assert torch.allclose(net(x), torch.stack(each).mean(0), atol=1e-6)


def test_training_draws_random_fixations_in_the_central_box():
    net = _tiny("retinal")
    torch.manual_seed(3)
    gaze = net._random_gaze(2000)
    assert gaze.min() == -net.g and gaze.max() == net.g - 1  # U{-g..g-1} per image, as coded
    net.train()
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(net(x), net(x))  # random in training
        net.eval()
        assert torch.equal(net(x), net(x))  # fixed points at test time: deterministic, no EOT needed
    assert not getattr(net, "is_stochastic", False)


# ----------------------------------------------------------------------------- gradients


def test_front_ends_are_differentiable_gradcheck():
    torch.manual_seed(0)
    x = torch.rand(1, 1, 16, 16, dtype=torch.float64, requires_grad=True)
    gaze = torch.tensor([[2.0, -3.0]], dtype=torch.float64)
    bil = RetinalSampler(16, "bilinear")
    assert torch.autograd.gradcheck(lambda t: bil(t, gaze), (x,), eps=1e-6, atol=1e-5)
    disc = RetinalSampler(16, "discrete")
    assert torch.autograd.gradcheck(lambda t: disc(t, gaze), (x,), eps=1e-6, atol=1e-5)  # a selection
    cort = CorticalSampler(16, sides=(4, 8), radii=(1, 2)).double()
    assert torch.autograd.gradcheck(lambda t: torch.cat([o.flatten() for o in cort(t, [1, -1])]), (x,), eps=1e-6)
    # bilinear retinal sampling is differentiable in the gaze too (multi-gaze learns it)
    g = gaze.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda gz: bil(x.detach(), gz), (g,), eps=1e-6, atol=1e-4)
    theta = torch.tensor([[[0.6, 0.1, 0.2], [-0.1, 0.7, -0.1]]], dtype=torch.float64, requires_grad=True)
    grid = lambda th: F.affine_grid(th, [1, 1, 6, 6], align_corners=False)  # noqa: E731
    assert torch.autograd.gradcheck(
        lambda t, th: F.grid_sample(t, grid(th), align_corners=False), (x, theta), eps=1e-6, atol=1e-5
    )


@pytest.mark.parametrize(
    "frontend,kw",
    [
        ("coarse", {}),
        ("retinal", {"sampling": "discrete"}),
        ("retinal", {"sampling": "bilinear"}),
        ("cortical", {}),
        ("stn", {"transform": "affine"}),
        ("stn", {"transform": "attention"}),
        ("multigaze", {}),
        ("retinal", {"combine": "concat"}),
    ],
)
def test_every_model_has_finite_nonzero_input_gradients(frontend, kw):
    net = _tiny(frontend, **kw).eval()
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    out = net(x)
    assert out.shape == (2, 10)
    (g,) = torch.autograd.grad(F.cross_entropy(out, torch.tensor([1, 2])), x)
    assert torch.isfinite(g).all() and (g.abs().sum(dim=(1, 2, 3)) > 0).all()


def test_discrete_declares_a_straight_through_bpda_surrogate_and_the_engine_uses_it():
    disc, bil = _tiny("retinal", sampling="discrete", bpda=True).eval(), _tiny("retinal", sampling="bilinear").eval()
    assert getattr(bil, "bpda_surrogate", None) is None and getattr(_tiny("coarse"), "bpda_surrogate", None) is None
    plain = _tiny("retinal", sampling="discrete")  # default: exact (sparse) gradients, no surrogate
    assert getattr(plain, "bpda_surrogate", None) is None and isinstance(auto_wrap(PGD(steps=2), plain), PGD)
    surrogate = disc.bpda_surrogate()
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    with torch.no_grad():
        assert torch.allclose(surrogate(x), disc(x))  # forward: the discrete network itself
    (g_st,) = torch.autograd.grad(surrogate(x).sum(), x)
    (g_exact,) = torch.autograd.grad(disc(x).sum(), x)
    assert (g_st != 0).sum() > (g_exact != 0).sum()  # backward: bilinear weights spread to neighbours
    assert isinstance(auto_wrap(PGD(steps=2), disc), BPDA) and isinstance(auto_wrap(PGD(steps=2), bil), PGD)


# ----------------------------------------------------------------------------- STN and multi-gaze


def test_stn_identity_returns_the_input_and_crop_parameters_return_the_crop():
    net = ParallelSTN((3, 32, 32), 10, backbone="resnet20", backbone_params={"width": 4}, glimpse=32)
    x = torch.rand(2, 3, 32, 32)
    ident = torch.tensor([1.0, 0, 0, 0, 1, 0]).expand(2, 5, 6)
    out = net.glimpses(x, stn_theta(ident, "affine"))
    assert torch.allclose(out, x[:, None].expand_as(out), atol=1e-5)
    net24 = ParallelSTN((3, 32, 32), 10, transform="attention", backbone="resnet20", backbone_params={"width": 4})
    assert net24.glimpse == 24
    for offset in ([0, 0], [-4, 4], [4, 4]):
        p = torch.tensor(crop_theta(32, 24, offset)).expand(2, 5, 4)
        got = net24.glimpses(x, stn_theta(p, "attention"))[:, 0]
        assert torch.allclose(got, coarse_crop(x, offset, 24), atol=1e-5)
    # untrained, the transforms are the five fixed crops (zero-initialised localisation head)
    with torch.no_grad():
        theta = net24.thetas(x)
    assert torch.allclose(theta[0, 1], stn_theta(torch.tensor(crop_theta(32, 24, [-4, 4])), "attention"), atol=1e-6)
    assert net.n_params == 6 and net24.n_params == 4


def test_multigaze_starts_at_the_five_points_and_learns_its_gazes():
    net = MultiGazeNet((3, 32, 32), 10, backbone="resnet20", backbone_params={"width": 4}, gaze_l2=0.01, glimpse=16)
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        gaze = net.gaze(x)
    assert torch.allclose(gaze[0], five_points(8), atol=1e-4)
    net.train()
    logits = net(x)
    loss = F.cross_entropy(logits, torch.arange(4)) + net.training_penalty(x, logits)
    loss.backward()
    assert net.training_penalty(x, logits) > 0
    assert net.loc.net.head.weight.grad.abs().sum() > 0  # the gaze network gets a gradient through the sampler


# ----------------------------------------------------------------------------- cortical auxiliary losses


def test_cortical_auxiliary_losses_are_the_coded_five_cross_entropies_and_reach_every_head():
    # caltech10's 128 px: 4 scales, so main + 4 auxiliary = the coded 5 cross-entropies (seeds/NOTES.md §2)
    torch.manual_seed(0)
    net = create_model(
        "foveated", input_shape=(3, 128, 128), frontend="cortical", backbone="resnet18", width=4, auxiliary=True
    )
    assert len(net.aux_heads) == len(net.scales) == 4
    x, y = torch.rand(3, 3, 128, 128), torch.tensor([0, 4, 9])
    net.train()
    logits = net(x)
    feats = net._scale_feats  # the forward pass's own pooled features, cached: no second pass
    assert [f.shape for f in feats] == [(3, h.in_features) for h in net.aux_heads]
    aux = net.training_penalty(x, logits, y)
    expected = sum(F.cross_entropy(h(f), y) for h, f in zip(net.aux_heads, feats, strict=True))  # weights 1
    assert aux > 0 and torch.allclose(aux, expected)
    assert net._scale_feats is None  # used once: the graph goes with the batch
    (F.cross_entropy(logits, y) + aux).backward()
    for head in net.aux_heads:
        assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    # training on the five points (combine="concat"): their features, the labels repeated
    cat = _tiny("cortical", combine="concat", auxiliary=True).train()
    x, y = torch.rand(2, 3, 32, 32), torch.tensor([1, 2])
    logits = cat(x)
    assert cat._scale_feats[0].shape[0] == 10 and cat.training_penalty(x, logits, y) > 0


def test_auxiliary_heads_do_not_change_the_attacked_function_and_keep_no_graph_at_eval():
    plain, aux = _tiny("cortical"), _tiny("cortical", auxiliary=True)
    trunk = {k: v for k, v in aux.state_dict().items() if not k.startswith("aux_heads.")}
    # the heads are built last: the same seed gives the same trunk weights as a model without them
    assert trunk.keys() == plain.state_dict().keys()
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in trunk.items())
    plain.eval(), aux.eval()
    x = torch.rand(3, 3, 32, 32, requires_grad=True)
    out_plain, out_aux = plain(x), aux(x)
    assert torch.equal(out_plain, out_aux)
    (g_plain,) = torch.autograd.grad(F.cross_entropy(out_plain, torch.tensor([0, 1, 2])), x)
    (g_aux,) = torch.autograd.grad(F.cross_entropy(out_aux, torch.tensor([0, 1, 2])), x)
    assert torch.equal(g_plain, g_aux)
    res = PGD(steps=2)(aux, x.detach(), torch.tensor([0, 1, 2]), eps=0.01, generator=torch.Generator())
    assert aux._scale_feats is None and res.x_adv.shape == x.shape  # attacks cache nothing
    aux.train()
    aux(x.detach())
    assert aux._scale_feats is not None
    aux.eval()
    with torch.no_grad():
        aux(x)
    assert aux._scale_feats is None  # a training batch's graph does not outlive an evaluation pass
    assert aux.training_penalty(x, out_aux, torch.tensor([0, 1, 2])) == 0


def test_fit_passes_labels_to_the_penalty_and_auxiliary_off_trains_exactly_as_before():
    from neurorobust.training import fit
    from neurorobust.training.loop import _takes_labels

    x, y = torch.rand(24, 3, 32, 32), torch.randint(0, 10, (24,))
    kw = {"epochs": 1, "batch_size": 8, "optimizer": "adam", "lr": 1e-3, "seed": 0}

    def trained(net, old_hook=False):
        if old_hook:  # the loop as it was for this model: no training_penalty, no penalty call
            net.training_penalty = None
        torch.manual_seed(5)  # the cortical fixation of each batch is drawn from the global generator
        _, history = fit(net, x, y, **kw)
        return net, history

    new, h_new = trained(_tiny("cortical"))
    old, h_old = trained(_tiny("cortical"), old_hook=True)
    assert [e["loss"] for e in h_new.epochs] == [e["loss"] for e in h_old.epochs]
    assert all(torch.equal(v, old.state_dict()[k]) for k, v in new.state_dict().items())
    aux, h_aux = trained(_tiny("cortical", auxiliary=True))
    assert _takes_labels(aux.training_penalty) and not _takes_labels(lambda xb, logits: 0)
    assert h_aux.epochs[0]["loss"] > h_new.epochs[0]["loss"]  # the auxiliary cross-entropies are in the loss
    assert aux._scale_feats is None and all(torch.isfinite(p).all() for p in aux.parameters())


def test_auxiliary_is_refused_unless_it_is_a_bool_on_the_cortical_model():
    with pytest.raises(InvalidParameterError, match="'auxiliary' parameter of FixationNet must be a bool"):
        _tiny("cortical", auxiliary="yes")
    with pytest.raises(InvalidParameterError, match="'auxiliary' parameter of foveated must be False unless"):
        _tiny("retinal", auxiliary=True)
    with pytest.raises(InvalidParameterError, match="'auxiliary' parameter of foveated"):
        _tiny("stn", auxiliary=True)  # STN would silently drop it
    with pytest.raises(InvalidParameterError, match="'auxiliary' parameter of FixationNet must be False unless"):
        FixationNet((3, 32, 32), 10, frontend="coarse", backbone="resnet20", auxiliary=True)


def test_caltech10_config_trains_the_auxiliary_variant_as_the_plain_cortical_one():
    from pathlib import Path

    from neurorobust.experiments.sweep import expand_sweep
    from neurorobust.specs import load_spec

    path = Path(__file__).resolve().parents[1] / "configs" / "foveation_caltech10.toml"
    for full in (False, True):
        variants = {v.spec.label: v.spec for v in expand_sweep(load_spec(path, full=full))}
        aux, plain = variants["cortical + auxiliary losses"], variants["cortical"]
        assert aux.model.params == {**plain.model.params, "auxiliary": True}
        assert aux.train == plain.train and aux.evaluate == plain.evaluate


# ----------------------------------------------------------------------------- errors and registry


def test_bad_parameters_give_one_clear_error():
    with pytest.raises(InvalidParameterError, match="'offset' parameter of FixationNet"):
        FixationNet((3, 32, 32), 10, frontend="retinal", backbone="resnet20", offset=16)  # fixation outside
    with pytest.raises(InvalidParameterError, match="'offset' parameter of FixationNet"):
        FixationNet((3, 32, 32), 10, frontend="coarse", backbone="resnet20", offset=5)  # crops leave the image
    with pytest.raises(InvalidParameterError, match="'offset' parameter of coarse_crop"):
        coarse_crop(torch.rand(1, 3, 32, 32), [5, 0], 24)
    with pytest.raises(InvalidParameterError, match="no zero scales"):
        CorticalSampler(32, sides=(8, 16), radii=(0, 2))
    with pytest.raises(InvalidParameterError, match="'sides' parameter"):
        CorticalSampler(32, sides=(8, 64), radii=(1, 2))
    with pytest.raises(InvalidParameterError, match="'frontend' parameter of foveated"):
        create_model("foveated", frontend="fovea")
    with pytest.raises(InvalidParameterError, match="'sampling' parameter of FixationNet"):
        create_model("foveated", input_shape=(3, 32, 32), backbone="resnet20", sampling="nearest")
    with pytest.raises(InvalidParameterError, match="'g' parameter of five_points"):
        five_points(float("nan"))
    with pytest.raises(InvalidParameterError, match="'glimpse' parameter of MultiGazeNet"):
        MultiGazeNet((3, 32, 32), 10, backbone="resnet20", glimpse=12)
    with pytest.raises(InvalidParameterError, match="'x' parameter"):
        _tiny("retinal")(torch.rand(2, 3, 28, 28))
    with pytest.raises(InvalidParameterError, match="'size' parameter"):
        retinal_constants(0)


def test_registry_and_the_control():
    assert "foveated" in MODELS and "resnet18_s1" in MODELS
    plain = _tiny("none")
    assert type(plain).__name__ == "ResNet"
    cort = _tiny("cortical")
    assert len(cort.scales) == 2 and cort.scales[0].features[1].out_channels == round(22 / 16 * 4)


def test_adversarial_accuracy_is_the_stored_robust_accuracy():
    net = _tiny("retinal", sampling="bilinear").eval()
    x, y = torch.rand(20, 3, 32, 32), torch.randint(0, 10, (20,))
    res = PGD(steps=3, random_start=False, early_stop=True)(net, x, y, eps=0.01, generator=torch.Generator())
    with torch.no_grad():
        clean_ok = net(x).argmax(1) == y
    m, a = int((~clean_ok).sum()), int((res.success & clean_ok).sum())
    assert adversarial_accuracy(m, a, len(y)) == pytest.approx(res.robust_accuracy)


@pytest.mark.parametrize("sampling,straight", [("bilinear", False), ("discrete", False), ("discrete", True)])
def test_cached_fixed_gaze_path_equals_the_per_image_geometry(sampling, straight):
    x = torch.rand(6, 3, 32, 32)
    gaze = five_points(8)[torch.tensor([3, 1, 0, 4, 2, 0])]
    s = RetinalSampler(32, sampling)
    s.straight_through = straight
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    fast = s(xa, gaze)  # few distinct gazes: cached tables
    slow = s(xb, gaze.clone().requires_grad_(True))  # a gaze needing gradients: per-image geometry
    weights = torch.arange(32.0)
    (ga,) = torch.autograd.grad((fast * weights).sum(), xa)
    (gb,) = torch.autograd.grad((slow * weights).sum(), xb)
    assert torch.allclose(fast, slow, atol=1e-5) and torch.allclose(ga, gb, atol=1e-3)


@pytest.mark.parametrize("frontend", ["stn", "multigaze"])
def test_a_training_batch_of_one_image_works(frontend):
    # the last batch of an epoch can hold one image (caltech10: 2433 = 38 x 64 + 1): batch norm must cope
    net = create_model("foveated", input_shape=(3, 128, 128), frontend=frontend, backbone="resnet18", width=4)
    net.train()
    assert net(torch.rand(1, 3, 128, 128)).shape == (1, 10)


def test_repro_report_has_the_thesis_tables_and_the_stn_and_gaze_figures(tmp_path):
    """`neurorobust repro` of a foveation config writes Tables 1-2 (ours / thesis) and draws the fixation
    grids, the trained transformers' boxes and the trained multi-gaze points into the report."""
    from test_pipeline import nr

    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "fov_tiny.toml").write_text(
        'description = "tiny foveation"\n[data]\nname = "cifar10"\ntrain_subset = 100\n'
        '[model]\nname = "foveated"\nparams = { frontend = "none", backbone = "resnet20", width = 4 }\n'
        "[train]\nepochs = 1\nbatch_size = 50\n"
        '[evaluate]\nsuite = "seed-paper"\nchecklist = false\nn = 10\nnoise_sigmas = []\nblur_sigmas = []\n'
        'attacks = [{ name = "pgd", label = "pgd20", eps = [0.01], params = { steps = 2 } }]\n'
        "[sweep]\nseeds = [0]\n"
        '[[sweep.variants]]\nlabel = "standard"\n'
        '[[sweep.variants]]\nlabel = "retinal-discrete"\n'
        'model.params = { frontend = "retinal", sampling = "discrete" }\n'
        '[[sweep.variants]]\nlabel = "stn-affine"\n'
        'model.params = { frontend = "stn", transform = "affine", glimpse = 16 }\n'
        '[[sweep.variants]]\nlabel = "multigaze"\nmodel.params = { frontend = "multigaze", glimpse = 16 }\n'
    )
    nr("repro", "fov_tiny", cwd=tmp_path)
    folder = tmp_path / "reports" / "fov_tiny"
    md = (folder / "report.md").read_text()
    # no claims file maps to this experiment: our numbers only, never the thesis' ImageNet10 ones beside them
    assert "All models (ours only, %; pgd20)" in md and "Table 1" not in md
    ours = md[md.index("All models (ours only") :]
    for model in ("standard", "retinal-discrete", "stn-affine", "multigaze"):
        assert f"| {model} |" in ours
    for name in ("foveation_fixations.png", "foveation_stn.png", "foveation_multigaze.png"):
        assert (folder / name).read_bytes()[:4] == b"\x89PNG" and f"({name})" in md

    # the thesis' tables, as the caltech10 report has them: ours / thesis, its rows only where we ran the model
    from neurorobust.report.build import latest_rows
    from neurorobust.report.families.foveation import paper_tables

    with ResultsStore(tmp_path / "results.db") as st:
        rows = latest_rows(st.results(experiment="fov_tiny", done_only=True))
    tables = {title: body for title, _, body in paper_tables(rows, thesis=True)}
    (t1,) = [body for title, body in tables.items() if title.startswith("Table 1 (ours / thesis")]
    assert [r[0] for r in t1] == ["standard", "retinal-discrete"]  # coarse and cortical were not run
    assert t1[0][1].endswith(" / 89.2") and t1[0][5].endswith(" / 3")  # thesis clean and eps 0.01
    assert t1[0][3] == "— / 79.6"  # eps 0.001 not attacked here
    (others,) = [body for title, body in tables.items() if title.startswith("Other models")]
    assert [r[0] for r in others] == ["multigaze", "stn-affine"]


def test_retinal_source_equals_the_coded_polar_form_for_any_gaze():
    """(A r + B) d is the authors' g(r) (cos theta, sin theta), theta = atan2(d_col, d_row), row and column
    in their places (an asymmetric gaze on an odd side, so a swap or a sign would show); gradients finite."""
    from neurorobust.mechanisms.foveation import retinal_constants, retinal_source

    size = 33
    a, b = retinal_constants(size)
    gaze = torch.tensor([[3.0, -7.5], [-11.25, 2.0], [0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    idx = torch.arange(size, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(idx, idx, indexing="ij"), dim=-1)
    d = grid[None] - (size - 1) / 2 - gaze.detach()[:, None, None, :]
    r = d.norm(dim=-1, keepdim=True)
    theta = torch.atan2(d[..., 1:], d[..., :1])
    gr = a * r**2 + b * r
    coded = torch.cat([gr * torch.cos(theta), gr * torch.sin(theta)], dim=-1) + gaze.detach()[:, None, None] + size / 2
    ours = retinal_source(size, gaze)
    assert torch.allclose(ours, coded.clamp(0.0, size + 2.0), atol=1e-10)
    ours.sum().backward()
    assert torch.isfinite(gaze.grad).all()


def _foveation_items(tmp_path, rows, experiment="foveation_caltech10"):
    """The foveation reporter's items for ``rows`` of ``experiment`` (its real config and claims file)."""
    from neurorobust.report.families import ReportContext
    from neurorobust.report.families.foveation import FoveationReporter

    with ResultsStore(tmp_path / "results.db") as st:
        ctx = ReportContext(experiment=experiment, store=st, outdir=tmp_path / "report", rows=rows)
        reporter = FoveationReporter()
        assert reporter.applies(ctx)
        return reporter.items(ctx)


def test_report_keeps_the_tables_when_the_figures_fail(tmp_path, monkeypatch):
    import neurorobust.report.families.foveation as fov
    from neurorobust.errors import DataError

    def missing(*args, **kwargs):
        raise DataError("caltech10 not found: see docs/data.md")

    monkeypatch.setattr(fov, "save_figures", missing)
    rows = [
        {
            "model": "standard",
            "attack": "clean",
            "metric": "accuracy",
            "eps": None,
            "value": 0.9,
            "n": 10,
            "params": {},
        },
        {
            "model": "standard",
            "attack": "pgd20",
            "metric": "accuracy",
            "eps": 0.01,
            "value": 0.5,
            "n": 10,
            "params": {},
        },
    ]
    items = _foveation_items(tmp_path, rows)
    titles = [title for _, title, _ in items]
    assert titles[0].startswith("Table 1 (ours / thesis") and titles[-1] == "Foveation figures skipped"
    (row,) = items[0][2][1]
    assert row[0] == "standard" and row[1] == "90.0 / 89.2" and row[5] == "50.0 / 3"
    assert "caltech10 not found" in items[-1][2][1][0][0]


def test_report_table_numbers_are_the_stored_numbers(tmp_path, monkeypatch):
    """Every cell of the reporter's tables is the store's value (mean ± sample sd over seeds, in %), its n
    and seed count, in the row of its model and the column of its eps; the thesis' number after ' / '."""
    import neurorobust.report.families.foveation as fov
    from neurorobust.report.build import latest_rows
    from neurorobust.store import ResultRow

    monkeypatch.setattr(fov, "save_figures", lambda *a, **k: [])  # the tables only (no dataset needed)
    stored = {  # (model, attack, metric, eps) -> value per seed
        ("standard", "clean", "accuracy", None): [0.9, 0.8],
        ("standard", "clean", "balanced_accuracy", None): [0.85, 0.75],
        ("standard", "pgd20", "accuracy", 0.005): [0.30, 0.20],
        ("standard", "pgd20", "accuracy", 0.01): [0.06, 0.04],
        ("cortical", "clean", "accuracy", None): [0.875],
        ("cortical", "pgd20", "accuracy", 0.01): [0.44],
        ("multigaze", "clean", "accuracy", None): [0.7],
        ("multigaze", "pgd20", "accuracy", 0.02): [0.123],
    }
    with ResultsStore(tmp_path / "results.db") as st:
        for seed in (0, 1):
            rows = [
                ResultRow("foveation_caltech10", m, "caltech10", a, metric, vals[seed], n=50, eps=e, seed=seed)
                for (m, a, metric, e), vals in stored.items()
                if seed < len(vals)
            ]
            st.record_run("foveation_caltech10", "evaluate", spec={}, train_key=None, eval_key=None, rows=rows)
        rows = latest_rows(st.results(experiment="foveation_caltech10", done_only=True))
    items = _foveation_items(tmp_path, rows)
    tables = {title: payload for kind, title, payload in items if kind == "table"}
    assert list(tables) == ["Table 1 (ours / thesis, %; pgd20)", "Table 2 (ours / thesis, %; pgd20)",
                            "Other models (ours only, %; pgd20)"]  # fmt: skip
    grid = (0.001, 0.005, 0.01, 0.02, 0.05)
    for title, (header, body) in tables.items():
        assert header == ["model", "clean", "balanced", *[f"eps {e:g}" for e in grid], "n", "seeds"]
        thesis = fov.THESIS_TABLES.get(title.split(" (")[0])
        for cells in body:
            model = cells[0]
            keys = [("clean", "accuracy", None), ("clean", "balanced_accuracy", None)]
            keys += [("pgd20", "accuracy", e) for e in grid]
            for k, (attack, metric, eps) in enumerate(keys):
                values = stored.get((model, attack, metric, eps))
                want = "—"
                if values:
                    mean, sd = float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
                    want = f"{100 * mean:.1f}" + (f" ± {100 * sd:.1f}" if sd else "")
                if thesis is not None and k != 1:  # the thesis' number after ours (no balanced accuracy)
                    want += f" / {thesis[model][0 if k == 0 else k - 1]:g}"
                assert cells[1 + k] == want, (title, model, attack, eps)
            seeds = {len(v) for (m, a, _, _), v in stored.items() if m == model and a == "pgd20"}
            assert cells[-2:] == ["50", str(seeds.pop())]
    assert [c[0] for c in tables["Table 1 (ours / thesis, %; pgd20)"][1]] == ["standard", "cortical"]
    assert [c[0] for c in tables["Other models (ours only, %; pgd20)"][1]] == ["multigaze"]
    assert tables["Table 1 (ours / thesis, %; pgd20)"][1][0][5] == "5.0 ± 1.4 / 3"  # (6 + 4) / 2, sd 1.41
