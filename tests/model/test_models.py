"""Every registered model behind one tester, PalsyNet's blocks at their edges, and a tiny overfit
(the blocks that compare the face's halves: ``test_asymmetry.py``).

The shared tester (smp ``tests/models/base.py`` / timm ``tests/test_models.py`` style) runs over
``list_models()``: a model added to the registry is tested without touching this file.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from palsyseg.labels import Label
from palsyseg.losses import LossConfig, SegmentationLoss
from palsyseg.metrics import ConfusionMatrix
from palsyseg.models import PalsyNetConfig, create_model, list_models, model_summary
from palsyseg.models.asymmetry import (
    MirrorAsymmetry,
    PartSideFPP,
    SidePath,
)
from palsyseg.models.palsynet import (
    CategoryDepthHead,
    ESCBlock,
    ForegroundAttentionLayer,
    MaskedCrossAttention,
    depth_range_shift,
    foreground_mask,
    merge_by_segmentation,
    upsample_gate,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

ALL_MODELS = list_models()
PALSYNETS = [name for name in ALL_MODELS if name.startswith("palsynet")]
EXPECTED_NAMES = {
    "palsynet",
    "palsynet_no_fg_attention",
    "palsynet_no_depth",
    "palsynet_no_esc",
    "palsynet_no_mirror",
    "palsynet_no_mirror_skips",
    "palsynet_no_part_side",
    "palsynet_side",
    "deeplabv3plus_r34",
    "unet_r18",
    "unet_r18_mirror",
}


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    torch.set_num_threads(2)


@pytest.fixture(scope="module")
def built() -> dict[str, torch.nn.Module]:
    """One instance per registered model (seeded), shared by the cheap tests."""
    models = {}
    for name in ALL_MODELS:
        torch.manual_seed(0)
        models[name] = create_model(name)
    return models


# ---------------------------------------------------------------------------------------------
# Factory


def test_registry_holds_the_agreed_names() -> None:
    assert set(ALL_MODELS) == EXPECTED_NAMES


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown model 'resnet9000'") as info:
        create_model("resnet9000")
    for name in EXPECTED_NAMES:
        assert name in str(info.value)


def test_unknown_palsynet_option_is_refused() -> None:
    with pytest.raises(TypeError, match="use_magic"):
        create_model("palsynet", use_magic=True)


def test_kwargs_reach_the_config_and_lists_become_tuples() -> None:
    model = create_model("palsynet", num_classes=5, m_max=10.0, widths=[8, 16, 32, 48])
    assert model.config.num_classes == 5
    assert model.config.m_max == 10.0
    assert model.config.widths == (8, 16, 32, 48)
    out = model.eval()(torch.randn(1, 3, 40, 40))
    assert out["logits"].shape == (1, 5, 40, 40)


def test_ablations_switch_their_part_off(built: dict[str, torch.nn.Module]) -> None:
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        outs = {name: built[name].eval()(x) for name in PALSYNETS}
    assert {"logits", "depth", "edge", "aux_logits", "category_embeddings"} <= set(outs["palsynet"])
    assert "aux_logits" not in outs["palsynet_no_fg_attention"]
    assert "depth" not in outs["palsynet_no_depth"]
    assert not any(isinstance(m, ESCBlock) for m in built["palsynet_no_esc"].modules())
    assert sum(isinstance(m, ESCBlock) for m in built["palsynet"].modules()) == 4  # one per block
    no_mirror = built["palsynet_no_mirror"]
    assert not any(isinstance(m, MirrorAsymmetry | SidePath) for m in no_mirror.modules())
    assert no_mirror.stem[0].in_channels == 3 and built["palsynet_side"].stem[0].in_channels == 6
    assert any(isinstance(m, SidePath) for m in built["palsynet_side"].modules())
    assert not any(isinstance(m, SidePath) for m in built["palsynet"].modules())

    def mirror_strides(name: str) -> list[int]:
        return sorted(m.stride for m in built[name].modules() if isinstance(m, MirrorAsymmetry))

    assert mirror_strides("palsynet") == [4, 8, 16]  # the 1/4 and 1/8 skips, the 1/16 context
    assert mirror_strides("palsynet_no_mirror_skips") == [16]

    def decides_per_part(name: str) -> bool:
        return any(isinstance(m, PartSideFPP) for m in built[name].modules())

    assert decides_per_part("palsynet") and decides_per_part("palsynet_no_mirror_skips")
    for name in ("palsynet_no_part_side", "palsynet_no_mirror", "palsynet_side"):
        assert not decides_per_part(name), name
    assert "fpp_side_log_q" in outs["palsynet"] and "fpp_side_log_q" not in outs["palsynet_side"]


@pytest.mark.parametrize("name", ["palsynet", "palsynet_side"])
def test_palsynet_overfits_a_face_and_its_mirror_with_fpp_on_opposite_halves(name: str) -> None:
    # Two parts mirror each other; FPP is the one *brighter than its mirror*. Brightness alone
    # does not tell (a part of brightness 1 is FPP in one image and not in another): the
    # network must compare each half with its mirror, and a mirrored face moves FPP across.
    torch.manual_seed(0)
    model = create_model(name)
    size = 64
    images, masks = [], []
    for left, right in ((2.0, 1.0), (1.0, 0.5)):
        x = torch.randn(1, 3, size, size) * 0.2
        x[..., 20:28, 8:24] += left
        x[..., 20:28, 40:56] += right
        mask = torch.ones(1, size, size, dtype=torch.long)
        mask[:, 20:28, 8:24] = 6
        mask[:, 20:28, 40:56] = 4
        images += [x, x.flip(-1)]
        masks += [mask, mask.flip(-1)]
    images, masks = torch.cat(images), torch.cat(masks)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    # 100 steps: at 80 one run sat in a transient dip of AdamW's (86 of 128 FPP pixels, all
    # 128 at steps 60 and 100) after a change that only reordered a sum in the decision.
    for _ in range(100):
        loss = F.cross_entropy(model(images)["logits"], masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        pred = model(images)["logits"].argmax(1)
    for i in range(len(images)):
        fpp, truth = pred[i] == 6, masks[i] == 6
        assert (fpp & truth).sum() > 0.7 * truth.sum(), i
        assert (fpp & ~truth).sum() < 0.3 * truth.sum(), i


# ---------------------------------------------------------------------------------------------
# The shared tester


@pytest.mark.parametrize("name", ALL_MODELS)
@pytest.mark.parametrize("size", [(250, 250), (97, 131)])
def test_forward_returns_logits_at_input_size(
    built: dict[str, torch.nn.Module], name: str, size: tuple[int, int]
) -> None:
    model = built[name].eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *size))
    assert isinstance(out, dict)
    assert out["logits"].shape == (1, 7, *size)
    assert torch.isfinite(out["logits"]).all()
    if "depth" in out:
        assert out["depth"].shape == (1, 1, *size)
    if "edge" in out:
        assert out["edge"].shape == (1, 1, *size)
    if "category_embeddings" in out:
        assert out["category_embeddings"].shape[:2] == (1, 7)
    for aux in out.get("aux_logits", []):
        assert aux.shape[:2] == (1, 7)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_backward_gives_finite_gradients_to_every_used_parameter(name: str) -> None:
    torch.manual_seed(1)
    model = create_model(name).train()
    x = torch.randn(2, 3, 65, 47)
    mask = torch.randint(0, 7, (2, 65, 47))
    depth = torch.rand(2, 65, 47)
    loss, logs = SegmentationLoss(LossConfig())(model(x), mask, depth)
    loss.backward()
    assert math.isfinite(loss.item())
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads), "a parameter got no gradient"
    assert all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    if name.startswith("palsynet"):
        assert {"ce", "boundary", "hist", "edge"} <= set(logs)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_eval_mode_is_deterministic(built: dict[str, torch.nn.Module], name: str) -> None:
    model = built[name].eval()
    x = torch.randn(2, 3, 72, 90)
    with torch.no_grad():
        a, b = model(x), model(x)
    for key in a:
        if isinstance(a[key], list):
            for u, v in zip(a[key], b[key], strict=True):
                assert torch.equal(u, v)
        else:
            assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("name", ALL_MODELS)
def test_batch_items_do_not_leak_into_each_other(
    built: dict[str, torch.nn.Module], name: str
) -> None:
    model = built[name].eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        both = model(x)["logits"]
        alone = model(x[1:])["logits"]
    assert torch.allclose(both[1:], alone, atol=1e-4)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_param_count_and_flops(built: dict[str, torch.nn.Module], name: str) -> None:
    summary = model_summary(built[name], image_size=250)
    assert summary["params"] == sum(p.numel() for p in built[name].parameters())
    assert summary["gflops"] > 0
    if name.startswith("palsynet"):
        assert summary["params"] <= 5_000_000  # "light" (§1): ≤ 5 M parameters
        assert summary["gflops"] < 2.0
    else:
        # smp's published sizes for 7 classes; the mirror U-Net's stem sees 6 channels
        expected = {"deeplabv3plus_r34": 22.4e6, "unet_r18": 14.3e6, "unet_r18_mirror": 14.33e6}[
            name
        ]
        assert abs(summary["params"] - expected) / expected < 0.02


def test_palsynet_is_lighter_than_the_baselines(built: dict[str, torch.nn.Module]) -> None:
    ours = model_summary(built["palsynet"])
    for baseline in ("deeplabv3plus_r34", "unet_r18"):
        theirs = model_summary(built[baseline])
        assert ours["params"] * 5 < theirs["params"]
        assert ours["gflops"] * 5 < theirs["gflops"]


def test_baseline_padding_is_cropped_away() -> None:
    """The wrapper's output at an odd size equals the inner model's output on the same zero-padded
    input, cropped: nothing is resized, the pad is symmetric."""
    torch.manual_seed(0)
    model = create_model("unet_r18").eval()
    x = torch.randn(1, 3, 50, 70)  # pads to 64×96: 7+7 rows, 13+13 columns
    with torch.no_grad():
        wrapped = model(x)["logits"]
        inner = model.model(F.pad(x, (13, 13, 7, 7)))
    assert torch.equal(wrapped, inner[..., 7:57, 13:83])


def test_mirror_unet_sees_the_face_and_its_mirror() -> None:
    """unet_r18_mirror's encoder gets [x, flip(x)], mirrored before the zero pad (so the mirror is
    exact at any width), and its logits depend on the mirror half."""
    torch.manual_seed(0)
    model = create_model("unet_r18_mirror").eval()
    x = torch.randn(1, 3, 40, 70)  # pads to 64×96: 12+12 rows, 13+13 columns
    seen: list[torch.Tensor] = []
    hook = model.model.encoder.conv1.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    with torch.no_grad():
        out = model(x)["logits"]
        hook.remove()
        expected = F.pad(torch.cat([x, x.flip(-1)], dim=1), (13, 13, 12, 12))
        assert torch.equal(seen[0], expected)
        model.model.encoder.conv1.weight[:, 3:] = 0  # blind to the mirror half
        blind = model(x)["logits"]
    assert out.shape == (1, 7, 40, 70)
    assert not torch.allclose(out, blind, atol=1e-3)


def test_esc_gate_upsampling_equals_bilinear_interpolation() -> None:
    torch.manual_seed(0)
    gate = torch.rand(2, 5, 1, 1)
    expected = F.interpolate(gate, size=(7, 9), mode="bilinear", align_corners=False)
    # w·v + (1 − w)·v differs from v by float rounding only (≤ 1 ulp ≈ 1.2e-7 near 1)
    assert torch.allclose(upsample_gate(gate, (7, 9)), expected, rtol=0, atol=1e-6)


def test_esc_gates_channels_by_global_context() -> None:
    """Fig. 2: the output is the input plus the 1×1-conv features scaled per channel by a sigmoid
    gate in (0, 1) computed from their global average."""
    torch.manual_seed(0)
    esc = ESCBlock(16).eval()
    x = torch.randn(2, 16, 9, 11)
    with torch.no_grad():
        y = esc.conv(x)
        gate = esc.fc(y.mean(dim=(2, 3)))
        assert ((gate > 0) & (gate < 1)).all()
        assert torch.allclose(esc(x), x + y * gate[:, :, None, None], atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Foreground attention (eq. 4–5)


def _attention_inputs(b: int = 2, c: int = 7, n: int = 48, d: int = 32) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(0)
    return torch.randn(b, c, d), torch.randn(b, c, d), torch.randn(b, n, d), torch.randn(b, n, d)


def test_a_query_ignores_tokens_outside_its_mask() -> None:
    queries, query_pos, tokens, token_pos = _attention_inputs()
    attention = MaskedCrossAttention(32, heads=4).eval()
    allowed = torch.zeros(2, 7, 48, dtype=torch.bool)
    allowed[:, 3, :10] = True  # query 3 may look at tokens 0–9 only
    allowed[:, [0, 1, 2, 4, 5, 6], :] = True
    perturbed = tokens.clone()
    perturbed[:, 10:] += 100 * torch.randn_like(perturbed[:, 10:])
    with torch.no_grad():
        before = attention(queries, query_pos, tokens, token_pos, allowed)
        after = attention(queries, query_pos, perturbed, token_pos, allowed)
    assert torch.allclose(before[:, 3], after[:, 3], atol=1e-5)
    assert not torch.allclose(before[:, 0], after[:, 0], atol=1e-2)  # an open query does see it


def test_a_whole_layer_ignores_tokens_outside_every_mask() -> None:
    """Self-attention mixes queries, so a full layer is unchanged only when no query may see the
    perturbed tokens; then all of its outputs are unchanged."""
    queries, query_pos, tokens, token_pos = _attention_inputs()
    layer = ForegroundAttentionLayer(32, heads=4, ffn_dim=64).eval()
    allowed = torch.zeros(2, 7, 48, dtype=torch.bool)
    allowed[..., :20] = True
    perturbed = tokens.clone()
    perturbed[:, 20:] = -50.0
    with torch.no_grad():
        before = layer(queries, query_pos, tokens, token_pos, allowed)
        after = layer(queries, query_pos, perturbed, token_pos, allowed)
    assert torch.allclose(before, after, atol=1e-5)


def test_an_empty_mask_attends_everywhere_without_nan() -> None:
    logits = torch.full((1, 3, 8, 8), -5.0)  # sigmoid < 0.5 everywhere: every mask is empty…
    logits[0, 1, :2, :2] = 5.0  # …except category 1's
    allowed = foreground_mask(logits, (4, 4))
    assert allowed[0, 0].all() and allowed[0, 2].all()  # empty → everywhere
    assert 0 < allowed[0, 1].sum() < 16  # non-empty → only inside

    queries, query_pos, tokens, token_pos = _attention_inputs(b=1, c=3, n=16)
    attention = MaskedCrossAttention(32, heads=4).eval()
    everywhere = torch.ones_like(allowed)
    with torch.no_grad():
        masked = attention(queries, query_pos, tokens, token_pos, allowed)
        full = attention(queries, query_pos, tokens, token_pos, everywhere)
    assert torch.isfinite(masked).all()
    assert torch.allclose(masked[0, 0], full[0, 0], atol=1e-6)
    assert not torch.allclose(masked[0, 1], full[0, 1], atol=1e-4)


def test_foreground_mask_thresholds_sigmoid_at_one_half_after_resizing() -> None:
    logits = torch.tensor([[[[0.3, -0.3], [-0.3, -0.3]]]])
    allowed = foreground_mask(logits, (2, 2))
    assert allowed.tolist() == [[[True, False, False, False]]]
    big = foreground_mask(logits, (4, 4)).view(4, 4)
    assert big[0, 0] and not big[3, 3]


def test_foreground_mask_is_detached() -> None:
    logits = torch.randn(1, 2, 6, 6, requires_grad=True)
    assert not foreground_mask(logits, (3, 3)).requires_grad


def test_palsynet_full_forward_query_masks_gate_attention() -> None:
    """End to end: the masks of layer l (aux_logits[l]) decide what layer l+1 may see."""
    torch.manual_seed(0)
    model = create_model("palsynet").eval()
    seen: list[torch.Tensor] = []
    for layer in model.fg_attention.layers:
        layer.cross.register_forward_hook(lambda _m, args, _o: seen.append(args[4]))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert len(out["aux_logits"]) == model.config.attention_layers + 1
    for l_idx, allowed in enumerate(seen):
        expected = foreground_mask(out["aux_logits"][l_idx], (8, 8))
        assert torch.equal(allowed, expected)


# ---------------------------------------------------------------------------------------------
# Depth (eq. 1–3)


def test_range_and_shift_keep_eq3_inside_unit_interval() -> None:
    a = torch.linspace(-40, 40, 81)
    range_logit, shift_logit = torch.meshgrid(a, a, indexing="ij")
    r, s = depth_range_shift(range_logit, shift_logit)
    for m_star in (0.0, 0.5, 1.0):
        value = (m_star - 0.5) * r + s
        assert value.min() >= 0.0 and value.max() <= 1.0
    assert r.min() >= 0 and r.max() <= 1


@pytest.mark.parametrize("scale", [1.0, 1e3, 1e6])
def test_category_depth_stays_within_zero_and_m_max(scale: float) -> None:
    torch.manual_seed(0)
    head = CategoryDepthHead(pixel_dim=8, category_dim=12, kernel_dim=16, m_max=80.0)
    embedding = scale * torch.randn(2, 16, 5, 5)
    categories = scale * torch.randn(2, 7, 12)
    depth = head(embedding, categories)
    assert depth.shape == (2, 7, 5, 5)
    assert torch.isfinite(depth).all()
    assert depth.min() >= 0.0 and depth.max() <= 80.0


@pytest.mark.parametrize("m_max", [1.0, 80.0])
def test_palsynet_depth_within_range_for_extreme_images(m_max: float) -> None:
    torch.manual_seed(0)
    model = create_model("palsynet", m_max=m_max).eval()
    for x in (
        torch.full((1, 3, 48, 40), 1e4),
        -1e4 * torch.rand(1, 3, 48, 40),
        torch.zeros(1, 3, 48, 40),
    ):
        with torch.no_grad():
            depth = model(x)["depth"]
        assert torch.isfinite(depth).all()
        assert depth.min() >= 0.0 and depth.max() <= m_max


def test_depth_merge_takes_each_pixels_argmax_category() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 7, 9, 11)
    logits[0, :, 0, 0] = 1.0  # a tie resolves to the lowest index, like argmax
    category_depth = torch.rand(2, 7, 9, 11)
    expected = category_depth.gather(1, logits.argmax(1, keepdim=True))
    assert torch.equal(merge_by_segmentation(logits, category_depth), expected)


def test_depth_and_kernels_get_gradients() -> None:
    torch.manual_seed(0)
    model = create_model("palsynet").train()
    out = model(torch.randn(2, 3, 48, 48))
    out["depth"].mean().backward()
    assert model.depth_head.kernel_generator.weight.grad.abs().sum() > 0
    assert model.depth_head.embedding[-1].weight.grad.abs().sum() > 0


def test_config_rejects_impossible_values() -> None:
    with pytest.raises(ValueError):
        PalsyNetConfig(m_max=0)
    with pytest.raises(ValueError):
        PalsyNetConfig(widths=(8, 16))
    with pytest.raises(ValueError):
        PalsyNetConfig(embed_dim=30, attention_heads=4)


@pytest.mark.slow
def test_palsynet_exports_with_torch_export() -> None:
    """MLflow's default ``pt2`` format goes through ``torch.export``: the graph must trace."""
    torch.manual_seed(0)
    model = create_model("palsynet").eval()
    x = torch.randn(1, 3, 64, 72)
    program = torch.export.export(model, (x,))
    with torch.no_grad():
        exported, eager = program.module()(x), model(x)
    for key in ("logits", "depth", "edge"):
        assert torch.allclose(exported[key], eager[key], atol=1e-4)


# ---------------------------------------------------------------------------------------------
# A tiny overfit: the whole objective trains the whole network


def draw_faces(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Procedural face-like label maps, images and relative depth.

    Skin ellipse, hair cap, two brows, two eyes, a mouth; every other face has a palsy: on its
    drooping side (alternating patient left/right) the eye is narrower, the mouth corner lower and
    those eye and mouth pixels are FPP (the contract's definition). Images are label colours with
    noise and a little shading; depth is an ellipsoid bump on the face, 0 on the background.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    colours = np.array(
        [
            [0.2, 0.5, 0.3],
            [0.9, 0.7, 0.55],
            [0.3, 0.2, 0.1],
            [0.15, 0.1, 0.05],
            [0.95, 0.95, 0.95],
            [0.8, 0.3, 0.35],
            [0.95, 0.95, 0.95],
        ]
    )
    images, masks, depths = [], [], []
    for i in range(n):
        cx = 0.5 + rng.uniform(-0.05, 0.05)
        cy = 0.52 + rng.uniform(-0.04, 0.04)
        m = np.zeros((size, size), np.int64)
        face = ((xx - cx) / 0.3) ** 2 + ((yy - cy) / 0.4) ** 2 <= 1
        m[face] = Label.SKIN
        hair = face & (yy < cy - 0.22)
        m[hair] = Label.HAIR
        palsy_half = None if i % 2 == 0 else ("left" if i % 4 == 1 else "right")  # image half
        for side, sx in (("left", -1), ("right", 1)):
            ex = cx + sx * 0.12
            droop = palsy_half == side
            brow = (np.abs(xx - ex) < 0.08) & (np.abs(yy - (cy - 0.16)) < 0.02)
            m[brow] = Label.EYEBROW
            eye_h = 0.02 if droop else 0.04
            eye = ((xx - ex) / 0.07) ** 2 + ((yy - (cy - 0.08)) / eye_h) ** 2 <= 1
            m[eye] = Label.FPP if droop else Label.EYE
        tilt = 0.0 if palsy_half is None else (0.06 if palsy_half == "right" else -0.06)
        mouth_y = cy + 0.2 + tilt * (xx - cx) / 0.15
        mouth = (np.abs(xx - cx) < 0.14) & (np.abs(yy - mouth_y) < 0.03)
        m[mouth] = Label.MOUTH
        if palsy_half is not None:
            on_side = (xx < cx) if palsy_half == "left" else (xx >= cx)
            m[mouth & on_side] = Label.FPP
        img = colours[m] * (0.85 + 0.15 * (1 - yy))[..., None] + rng.normal(
            0, 0.03, (size, size, 3)
        )
        depth = np.where(
            m > 0,
            np.sqrt(np.clip(1 - ((xx - cx) / 0.3) ** 2 - ((yy - cy) / 0.4) ** 2, 0, 1)) * 0.5 + 0.3,
            0,
        )
        images.append(img.transpose(2, 0, 1))
        masks.append(m)
        depths.append(depth)
    x = torch.tensor(np.stack(images), dtype=torch.float32)
    x = (x - 0.45) / 0.25
    return x, torch.tensor(np.stack(masks)), torch.tensor(np.stack(depths), dtype=torch.float32)


def test_drawn_faces_follow_the_label_contract() -> None:
    _, masks, depth = draw_faces(4, 64, seed=0)
    assert set(torch.unique(masks).tolist()) <= set(range(7))
    assert (masks[0] == Label.FPP).sum() == 0  # healthy
    assert (masks[1] == Label.FPP).sum() > 0  # palsy
    assert (depth[masks == 0] == 0).all() and (depth[masks > 0] > 0).all()


@pytest.mark.slow
def test_palsynet_overfits_eight_faces() -> None:
    """The full objective (CE, eq. 7, HIST, aux masks, depth, edge) fits 8 drawn faces: mean F1
    ≥ 0.9 and FPP F1 ≥ 0.8 in eval mode within 300 AdamW steps (~75 are enough; ~40 s on an idle
    2-core CPU)."""
    torch.manual_seed(0)
    x, mask, depth = draw_faces(8, 64, seed=0)
    model = create_model("palsynet").train()
    criterion = SegmentationLoss(LossConfig())
    optimizer = torch.optim.AdamW([*model.parameters(), *criterion.parameters()], lr=3e-3)
    history = []
    for step in range(1, 301):
        optimizer.zero_grad(set_to_none=True)
        loss, logs = criterion(model(x), mask, depth)
        loss.backward()
        optimizer.step()
        if step % 25 == 0:
            model.eval()
            with torch.no_grad():
                pred = model(x)["logits"].argmax(1)
            model.train()
            confusion = ConfusionMatrix()
            confusion.update(pred, mask)
            metrics = confusion.compute()
            history.append((step, round(metrics["mean_f1"], 3), round(metrics["f1_fpp"], 3)))
            if metrics["mean_f1"] >= 0.9 and metrics["f1_fpp"] >= 0.8:
                break
    assert metrics["mean_f1"] >= 0.9, history
    assert metrics["f1_fpp"] >= 0.8, history
    assert logs["hist_ce"] < 1.5, logs  # the HGNN node classifier learns too (log 7 ≈ 1.95)


@pytest.mark.parametrize("name", ["palsynet", "unet_r18"])
def test_class_offsets_shift_the_logits_in_eval_only(name: str) -> None:
    """Validation's per-class offsets (palsyseg.scoring.choose_class_offsets) are the model's
    segmentation operating point: eval logits carry them, training logits never do."""
    torch.manual_seed(0)
    model = create_model(name, 7)
    x = torch.randn(2, 3, 64, 64)
    offsets = torch.tensor([0.0, 1.0, -0.5, 0.25, 0.0, 2.0, -1.0])
    with torch.no_grad():
        before = model.eval()(x)["logits"]
        model.class_offsets.copy_(offsets)
        torch.testing.assert_close(model(x)["logits"], before + offsets[:, None, None])
        model.train()
        torch.manual_seed(1)
        shifted = model(x)["logits"]
        model.class_offsets.zero_()
        torch.manual_seed(1)
        torch.testing.assert_close(model(x)["logits"], shifted)
