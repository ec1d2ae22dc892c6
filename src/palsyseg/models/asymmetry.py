"""Comparing the face's two halves: PalsyNet's facial-asymmetry blocks.

In the canonical face frame (:mod:`palsyseg.align`) the image's vertical centre line is the face's
midline, so a feature map mirrored about it is the face's own mirror. FPP is defined by that
comparison (the weak half's eye or mouth), and the paper names no mechanism for it; these blocks
are ours, wired into :class:`palsyseg.models.palsynet.PalsyNet` (its docstring says which
variant uses which, and what each measured):

- :func:`mirror_about_image_centre`: a stride-``s`` map mirrored about the image's centre line;
- :class:`MirrorAsymmetry`: each feature beside its signed difference from its mirror;
- :class:`SidePath`: a global, odd vote on which half is weak, added to the FPP logits;
- :class:`PartSideFPP`: FPP decided once per part and side, composed into the final logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from palsyseg.models.layers import ConvBNReLU


def mirror_about_image_centre(x: Tensor, image_width: int | None, stride: int) -> Tensor:
    """A stride-``stride`` feature map mirrored about its image's vertical centre line.

    Cell ``j`` sits on input pixel ``stride · j`` (stride-2 3×3 convolutions with padding 1
    centre output ``j`` on input ``2j``), so its mirror is read at the fractional cell
    ``(image_width − 1) / stride − j``, linearly interpolated along the row and clamped at the
    border. ``image_width=None`` flips the grid about its own centre.
    """
    if image_width is None:
        return x.flip(-1)
    w = x.shape[-1]
    source = ((image_width - 1) / stride - torch.arange(w, device=x.device)).clamp(0, w - 1)
    low = source.floor().long()
    high = (low + 1).clamp(max=w - 1)
    weight = (source - low).to(x.dtype)
    return x[..., low] * (1 - weight) + x[..., high] * weight


class MirrorAsymmetry(nn.Module):
    """Facial-asymmetry features: each position compared with its mirror image across the midline.

    ``y = x + ReLU(BN(W·[x, x − mirror(x)]))`` at stride 16. The signed difference
    ``x − mirror(x)`` is mirror-*equivariant* (flipping the input flips it and, being a
    difference, it says which side differs), so a horizontal flip of the face moves the evidence
    to the other half exactly as it moves the FPP label.

    The mirror axis is the *image's* vertical centre line, which in the canonical face frame
    (:mod:`palsyseg.align`) is the face's own midline, ``x = (W − 1) / 2``. It is not the
    feature grid's centre: every stride-2 3×3 convolution (padding 1) centres output cell ``j``
    on input pixel ``2j``, so cell ``j`` of the 1/16 map sits on input pixel ``16j`` and the grid's
    own centre lies ~half a cell (~7.5 px at 128 px) off the image's. Given the input width
    ``image_width``, the mirror of cell ``j`` is read at the fractional cell
    ``(image_width − 1) / 16 − j`` (linear interpolation along the row, clamped at the border);
    without it, the grid is flipped about its own centre.
    """

    def __init__(self, channels: int, stride: int = 16) -> None:
        super().__init__()
        self.stride = stride
        self.fuse = ConvBNReLU(2 * channels, channels, 1)

    def mirror(self, x: Tensor, image_width: int | None = None) -> Tensor:
        """``x`` mirrored about the image's centre line (see the class docstring)."""
        return mirror_about_image_centre(x, image_width, self.stride)

    def forward(self, x: Tensor, image_width: int | None = None) -> Tensor:
        return x + self.fuse(torch.cat([x, x - self.mirror(x, image_width)], dim=1))


class SidePath(nn.Module):
    """A global, side-aware vote on which half of the face is weak, added to the FPP logits.

    FPP is a whole-face judgement (which half's eye or mouth moves less than its mirror), and
    the per-pixel head, the pooled ESC/ASPP paths and the masked FPP query cannot tell left from
    right. From the signed asymmetry ``a = x − mirror(x)`` of the 1/16 context, the descriptor
    ``d = mean(sign · a)`` (``sign`` = +1 on the image's left half, −1 on its right, about the
    image's centre line) feeds an *odd* two-layer map ``v = w · tanh(U d)`` (no biases), and
    ``v · sign`` is added to the FPP logit at every pixel: a push toward FPP on one half and away
    from it on the other. Mirroring the face mirrors ``a`` (it is antisymmetric), so ``d`` and
    ``v`` change sign and the push moves to the other half: the path is mirror-equivariant by
    construction, whatever its weights. ``w`` starts at zero, so an untrained path is silent.
    """

    def __init__(self, channels: int, hidden: int = 32) -> None:
        super().__init__()
        self.proj = nn.Linear(channels, hidden, bias=False)
        self.vote = nn.Linear(hidden, 1, bias=False)
        nn.init.zeros_(self.vote.weight)

    @staticmethod
    def sign_map(width: int, image_width: int, stride: int, device: torch.device) -> Tensor:
        """+1 / −1 / 0 for cells left of / right of / on the image's centre line; cell ``j`` of a
        stride-``stride`` map sits on input pixel ``stride · j`` (see :class:`MirrorAsymmetry`)."""
        position = stride * torch.arange(width, device=device, dtype=torch.float32)
        return torch.sign((image_width - 1) / 2 - position)

    def forward(self, asymmetry: Tensor, image_width: int, stride: int = 16) -> Tensor:
        """The vote ``v`` per image (B×1×1×1) from the 1/16 asymmetry map ``x − mirror(x)``."""
        sign = self.sign_map(asymmetry.shape[-1], image_width, stride, asymmetry.device)
        descriptor = (asymmetry * sign.to(asymmetry.dtype)).mean(dim=(2, 3))
        return self.vote(torch.tanh(self.proj(descriptor)))[:, :, None, None]


class PartSideFPP(nn.Module):
    """FPP as a per-part, per-side decision: the weak half's eye or mouth, decided once per face.

    FPP is the eye or the mouth half of the *weak* side where the photo shows the weakness
    (:mod:`palsyseg.visibility`): a whole-face judgement, taken per part. Left to the per-pixel
    head, the weak mouth half's pixels vote one by one and a face ends up part FPP, part mouth,
    often on both halves — the mouth↔FPP swaps that held mouth F1 near 0.6 and FPP F1 near 0.3.
    Here the segmentation says *where* each part is (FPP pixels count as their part) and this
    block says, per part and side, *whether* that part of that half is FPP:

    - **Descriptor.** In the face frame the image's centre line is the midline. For part ``p``
      (eye, mouth), the 1/4 pixel features (which carry each position's difference from its
      mirror, :class:`MirrorAsymmetry` on the skips) are averaged under the part's predicted
      probability (detached: the decision reads the segmentation, it does not reshape it) over
      the left half, ``L_p``, and over the right half, ``R_p``, each embedded by a small MLP.
    - **Decision.** ``v_p = w·e(L_p) − w·e(R_p)`` (which side is weak; *odd* in the swap of the
      halves) and ``u_p = g([|e(L_p) − e(R_p)|, e(L_p) + e(R_p)])`` (whether a side is; *even*
      in the swap). ``q_p(left) = σ(u_p)·σ(v_p)``, ``q_p(right) = σ(u_p)·σ(−v_p)``. Mirroring the
      face swaps ``L`` and ``R``, so ``u`` stays, ``v`` changes sign and the FPP moves to the
      other half: the decision is mirror-equivariant by construction (the features it reads are
      as equivariant as training with flips makes them).
    - **Composition** (in log-probabilities, so the result is a valid logit map that
      cross-entropy, the boundary loss, ``argmax`` and ``softmax`` use unchanged): with
      ``P6 = softmax`` of the base logits without the FPP channel and ``h(x)`` the half of
      pixel ``x`` (a pixel on the centre line takes the mean of both halves),
      ``P(part p) = P6(p)·(1 − q_p(h(x)))``, ``P(FPP) = Σ_p P6(p)·q_p(h(x))``, other classes
      ``P6``. The per-pixel cross-entropy on FPP and on the parts trains ``u`` and ``v``
      through every pixel of the part.

    - **Shape** (``geometry=True``): the moments of each half's predicted part probability at
      the input's resolution (:meth:`shape_moments`: mass, mean row, mean distance from the
      centre line, spread in rows and columns) — the mouth-corner drop and the eye opening
      that the landmark rule measures, read from the segmentation, which is learnt long before
      the pooled features say which half is weak. Their left − right difference ``δ`` enters
      the side logit linearly, ``v += a·δ`` (``a`` starts at 0), and ``|δ|`` the presence
      MLP: ``δ`` is odd and ``|δ|`` even in the swap (the moments measure distances from the
      centre line), so the equivariance above is kept. Only differences go in: the moments
      themselves (a mouth's mean row ~84 px) would swamp the ~1 px asymmetries.
    - **Outline** (``outline=True``, with ``geometry``): three more numbers per half
      (:meth:`outline_moments`) for what the label rule reads at the part's *ends* and *middle*
      rather than its mass: the row of the part's outer end (rows weighted by the fourth power
      of the distance from the centre line: the mouth corner's drop), the outer extent
      (``E[off⁴]^¼``: the corner's excursion) and the height of its tallest columns
      (``Σ h² / Σ h`` over the column heights ``h``: the eye's aperture at mid-eye). Measured
      before training with them: a logistic regression on the ground-truth masks' per-half
      differences (1,500 streamed faces → the benchmark's 300 test photos, 128 px) decided the
      mouth's side correctly on 87 % of the halves that show it with the five moments and on
      90 % with the eight; on 192 px masks 90 % → 93 %, eyes 84 % → 86 %. Trained
      (palsynet at the benchmark's defaults, the same 300 test photos): FPP F1 0.551 → 0.600,
      side accuracy 0.948 → 0.990, palsy-visible accuracy 0.807 → 0.827, mean F1 0.819 →
      0.833; patient side 0.85 → 0.82 (one patient).
    - **Fine features** (``fine``, PalsyNet's ``part_fine``): the part-weighted mean of the
      1/2-resolution decoder features over each half is appended to the 1/4 one. The eye's
      weakness is an aperture excess of 0.03 inter-ocular distances, 1.2 px in the 160 px
      frame: below a 1/4 cell. Measured before building it in (the benchmark's seed-7 network,
      6,000 of its training items → its 300 test photos, a small probe per part, three probe
      seeds): the eye's decision F1 0.71 from the 1/4 features and the moments, 0.82 with the
      1/2 features added (mouth 0.87 → 0.89). Trained with them (the benchmark's defaults,
      training seeds 7–9, the same test photos): FPP F1 0.771 → 0.780, 0.777 → 0.833 and
      0.782 → 0.775, mean F1 0.889 → 0.894 on average; seed 7's eye decision F1 0.85 → 0.86,
      mouth 0.81 → 0.84 (README, step 12).

    The presence logit starts at −2 (``q ≈ 0.1``): an untrained network marks no FPP.

    - **Operating point** (``decision_bias``, a buffer per part, 0 until validation sets it):
      in eval mode :meth:`shift` adds it to ``logit(q)`` before the composition, so a half is
      marked where ``q > σ(−bias)``. Training (cross-entropy, Dice and the decision BCE) leaves
      ``q`` under-confident on a part that is FPP on few halves — at the benchmark's defaults
      the weak mouth half got ``q`` ≈ 0.3–0.8 against ≈ 0.1 on the other and FPP pixels need
      ``q > 0.5`` — so :func:`palsyseg.scoring.validate` chooses the bias on the validation split
      (:func:`palsyseg.metrics.choose_decision_bias`), as it chooses the palsy threshold, and
      the checkpoint keeps it. Training never reads it: the losses see the raw decision.
    - **Refit** (:mod:`palsyseg.refit`): :meth:`describe` (what the decision reads: no
      parameters) and :meth:`judge` (the decision: all of them) are split so that, once the
      network is trained, the decision can be fit again on descriptors collected from the
      frozen network — end to end it stays well short of what those descriptors hold.
    """

    SHAPE_FEATURES = 5
    """Moments per part and half (:meth:`shape_moments`)."""
    OUTLINE_FEATURES = 3
    """Outline numbers per part and half, with ``outline`` (:meth:`outline_moments`)."""

    def __init__(
        self,
        channels: int,
        parts: tuple[int, ...],
        fpp_class: int,
        hidden: int = 32,
        *,
        geometry: bool = False,
        outline: bool = False,
    ) -> None:
        super().__init__()
        if outline and not geometry:
            raise ValueError("PartSideFPP: outline moments need geometry=True")
        self.parts = parts
        self.fpp_class = fpp_class
        self.geometry = geometry
        self.outline = outline
        shape = (self.SHAPE_FEATURES + self.OUTLINE_FEATURES * outline) if geometry else 0
        self.embed = nn.ModuleList(
            nn.Sequential(
                nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, hidden)
            )
            for _ in parts
        )
        self.side = nn.ModuleList(nn.Linear(hidden, 1, bias=False) for _ in parts)
        if geometry:  # v gains a · (g(L) − g(R)): odd in the swap; starts at 0
            self.shape_side = nn.ModuleList(nn.Linear(shape, 1, bias=False) for _ in parts)
            for head in self.shape_side:
                nn.init.zeros_(head.weight)
        self.presence = nn.ModuleList(
            nn.Sequential(
                nn.Linear(2 * hidden + shape, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1)
            )
            for _ in parts
        )
        for head in self.presence:
            nn.init.constant_(head[-1].bias, -2.0)
        self.register_buffer("decision_bias", torch.zeros(len(parts)))

    @staticmethod
    def decision_logits(log_q: Tensor) -> Tensor:
        """``logit(q) = log q − log(1 − q)`` from ``log q`` (``q`` kept just below 1)."""
        return log_q - torch.log(-torch.expm1(log_q.clamp(max=-1e-7)))

    def shift(self, log_q: Tensor) -> Tensor:
        """``log_q`` (B×P×2) at the operating point: ``log σ(logit(q) + decision_bias[p])``."""
        bias = self.decision_bias.to(log_q.dtype)[None, :, None]
        return F.logsigmoid(self.decision_logits(log_q) + bias)

    def others(self, num_classes: int) -> list[int]:
        """Every class index but FPP's, in order."""
        return [c for c in range(num_classes) if c != self.fpp_class]

    def part_log_probs(self, logits: Tensor) -> Tensor:
        """Log-softmax over every class but FPP (FPP pixels belong to their part here)."""
        return logits[:, self.others(logits.shape[1])].log_softmax(dim=1)

    @staticmethod
    def _half_grid(prob: Tensor, halves: Tensor) -> tuple[float, Tensor, Tensor, Tensor, Tensor]:
        """What both kinds of moment read: the pixel size ``unit`` of a 128 px frame, each row's
        position (H×1) and each column's distance from the centre line (1×W) in those pixels,
        the part probability per half (B×2×H×W) and its mass per half (B×2, kept above 0)."""
        h, w = prob.shape[-2:]
        unit = 128 / w
        rows = torch.arange(h, device=prob.device, dtype=prob.dtype)[:, None] * unit
        off = (torch.arange(w, device=prob.device, dtype=prob.dtype) - (w - 1) / 2).abs()
        off = (off * unit)[None]
        weight = prob[:, None] * halves[None, :, None, :]  # B×2×H×W
        mass = weight.sum(dim=(2, 3)) + 1e-3
        return unit, rows, off, weight, mass

    @staticmethod
    def shape_moments(prob: Tensor, halves: Tensor) -> Tensor:
        """B×2×5 moments of a B×H×W part probability over the left and right half (``halves``
        2×W, 0/1): mass, mean row, mean distance from the centre line, and the spread of both.
        Lengths are in pixels of a 128 px frame and the mass in 16-pixel units of it, so one
        pixel of droop is ~1 unit at any input size."""
        unit, rows, off, weight, mass = PartSideFPP._half_grid(prob, halves)
        mean_row = (weight * rows).sum(dim=(2, 3)) / mass
        mean_off = (weight * off).sum(dim=(2, 3)) / mass
        row_spread = (weight * (rows - mean_row[..., None, None]).pow(2)).sum(dim=(2, 3)) / mass
        off_spread = (weight * (off - mean_off[..., None, None]).pow(2)).sum(dim=(2, 3)) / mass
        moments = [
            mass * unit * unit / 16,
            mean_row,
            mean_off,
            (row_spread + 1e-6).sqrt(),
            (off_spread + 1e-6).sqrt(),
        ]
        return torch.stack(moments, dim=-1)

    @staticmethod
    def outline_moments(prob: Tensor, halves: Tensor) -> Tensor:
        """B×2×3 outline numbers of a B×H×W part probability over the left and right half
        (``halves`` 2×W, 0/1), in pixels of a 128 px frame: the row of the part's outer end
        (rows weighted by ``off⁴``, ``off`` the distance from the centre line), its outer extent
        ``E[off⁴]^¼`` and the height of its tallest columns ``Σ h² / Σ h`` (``h`` the part's
        mass per column)."""
        unit, rows, off, weight, mass = PartSideFPP._half_grid(prob, halves)
        outer = weight * (off / 16).pow(4)  # off in units of 16 px, so off⁴ stays small
        outer_mass = outer.sum(dim=(2, 3)) + 1e-6
        end_row = (outer * rows).sum(dim=(2, 3)) / outer_mass
        extent = 16 * (outer_mass / mass).pow(0.25)
        column = weight.sum(dim=2) * unit  # B×2×W: the part's height per column
        height = column.pow(2).sum(dim=-1) / (column.sum(dim=-1) + 1e-3)
        return torch.stack([end_row, extent, height], dim=-1)

    def describe(
        self,
        features: Tensor,
        logits: Tensor,
        image_width: int,
        stride: int,
        shape_logits: Tensor | None = None,
        fine: Tensor | None = None,
        fine_stride: int = 2,
    ) -> tuple[Tensor, Tensor | None]:
        """What the decision reads, per part and half, from stride-``stride`` ``features`` and
        base ``logits`` at any resolution (``shape_logits``: the base logits at the input's
        size, for the moments; default ``logits``): the part-weighted mean ``features``
        (B×P×2×C; with ``fine``, stride-``fine_stride`` features, their part-weighted mean
        appended: B×P×2×(C + C_fine)) and, with ``geometry``, the part's moments (B×P×2×M,
        :meth:`shape_moments` then :meth:`outline_moments`; ``None`` without). Both are detached
        from the segmentation's probabilities, not from the features. :meth:`judge` decides
        from them."""
        keep = self.others(logits.shape[1])
        pooled = self._pool(features, logits, keep, image_width, stride)
        if fine is not None:
            pooled = torch.cat(
                [pooled, self._pool(fine, logits, keep, image_width, fine_stride)], dim=-1
            )
        if not self.geometry:
            return pooled, None
        base = logits if shape_logits is None else shape_logits
        shape_prob = base.detach()[:, keep].softmax(dim=1)
        shape_sign = SidePath.sign_map(
            base.shape[-1], image_width, image_width // base.shape[-1], base.device
        )
        shape_halves = torch.stack([(shape_sign > 0), (shape_sign < 0)]).to(base.dtype)
        moments = []
        for part in self.parts:
            part_prob = shape_prob[:, keep.index(part)]
            m = self.shape_moments(part_prob, shape_halves)
            if self.outline:
                m = torch.cat([m, self.outline_moments(part_prob, shape_halves)], -1)
            moments.append(m)
        return pooled, torch.stack(moments, dim=1)  # float32 under autocast: ~1 px asymmetries

    def _pool(
        self, features: Tensor, logits: Tensor, keep: list[int], image_width: int, stride: int
    ) -> Tensor:
        """Each part's probability-weighted mean of ``features`` over each half (B×P×2×C)."""
        prob = F.interpolate(
            logits.detach(), size=features.shape[-2:], mode="bilinear", align_corners=False
        )[:, keep].softmax(dim=1)
        sign = SidePath.sign_map(features.shape[-1], image_width, stride, features.device)
        halves = torch.stack([(sign > 0), (sign < 0)]).to(features.dtype)  # 2×w: left, right
        weight = (
            prob[:, [keep.index(part) for part in self.parts], None]
            * halves[None, None, :, None, :]
        )  # B×P×2×h×w
        pooled = torch.einsum("bpshw,bchw->bpsc", weight, features)
        return pooled / (weight.sum(dim=(3, 4))[..., None] + 1e-3)

    def judge(self, pooled: Tensor, moments: Tensor | None) -> Tensor:
        """Log ``q`` (B×P×2) from :meth:`describe`'s descriptors (the class docstring's
        decision): all the trainable part of the block, so it can be refit on descriptors
        collected once (:mod:`palsyseg.refit`)."""
        out = []
        for i in range(len(self.parts)):
            e = self.embed[i](pooled[:, i])  # B×2×hidden
            v = self.side[i](e[:, 0]) - self.side[i](e[:, 1])  # B×1, odd in the swap
            even = [(e[:, 0] - e[:, 1]).abs(), e[:, 0] + e[:, 1]]
            if self.geometry:
                if moments is None:
                    raise ValueError("PartSideFPP with geometry needs the parts' moments")
                difference = (moments[:, i, 0] - moments[:, i, 1]).to(v.dtype)  # B×5 (8), odd
                v = v + self.shape_side[i](difference)
                even.append(difference.abs())
            u = self.presence[i](torch.cat(even, -1))
            out.append(F.logsigmoid(u) + F.logsigmoid(torch.cat([v, -v], dim=-1)))
        return torch.stack(out, dim=1)

    def compose(self, logits: Tensor, log_q: Tensor) -> Tensor:
        """Final logits (log-probabilities) from base ``logits`` B×C×H×W (H×W the input's size,
        the face frame's centre line at ``(W − 1) / 2``) and ``log_q`` from :meth:`judge`."""
        c, w = logits.shape[1], logits.shape[-1]
        keep = self.others(c)
        log_p = self.part_log_probs(logits)
        sign = SidePath.sign_map(w, w, 1, logits.device).to(logits.dtype)  # +1 left, −1 right
        left = (sign > 0).to(logits.dtype)
        right = (sign < 0).to(logits.dtype)
        centre = 1 - left - right
        q = log_q.exp()  # B×P×2
        q_x = (  # B×P×1×W: q of the pixel's half; the centre column averages the two
            q[..., 0:1, None] * left
            + q[..., 1:2, None] * right
            + 0.5 * (q[..., 0:1, None] + q[..., 1:2, None]) * centre
        )
        q_x = q_x.clamp(1e-6, 1 - 1e-6)
        channels = list(log_p.unbind(dim=1))
        fpp_terms = []
        for i, part in enumerate(self.parts):
            j = keep.index(part)
            fpp_terms.append(channels[j] + q_x[:, i].log())
            channels[j] = channels[j] + torch.log1p(-q_x[:, i])
        channels.insert(self.fpp_class, torch.logsumexp(torch.stack(fpp_terms), dim=0))
        return torch.stack(channels, dim=1)
