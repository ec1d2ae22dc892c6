"""The training objective of §3.4 (eq. 6–8) plus the auxiliary terms of the multi-task heads.

``SegmentationLoss(config)(outputs, mask, depth)`` returns the total loss and a dict of per-term
values for logging. Terms whose model outputs are missing are skipped (the smp baselines return
only ``logits``: they get cross-entropy and the boundary-enhanced loss).

Terms (``w_*`` are :class:`LossConfig` weights):

- ``ce``: pixel-wise cross-entropy of ``logits`` with optional class weights.
- ``boundary`` — the boundary-enhanced semantic loss, **eq. 7**: for image i and category j,
  ``p_ij`` is the number of contour pixels of j in the label map (pixels of j with a 4-neighbour
  of another label; the image border is not a contour), and the term is the per-pixel CE summed
  over those pixels divided by ``p_ij`` and weighted by ``w_j``. The ``1/(N·P)`` mean runs over
  the (i, j) pairs that *have* contour pixels (``1/p_ij`` is undefined elsewhere); a batch with
  no contour at all (all background) gives 0. With ``boundary_outer`` (the ``palsyseg``
  recipe; our reading, the paper says only "contour pixels of category j") the contour of ``j``
  is a two-sided band: its own contour pixels *and* the pixels of other labels with a
  4-neighbour of ``j`` (:func:`category_bands`). One-sided, the term pulls every small part
  outward: the eye's few contour pixels carry the eye's whole share of the loss while the skin
  ring around it is a sliver of the skin's long contour, so the CE there says "eye" far louder
  than "skin" — trained networks drew the parts about a contour pixel too wide (validation
  precision 0.65 at recall 0.90 for brows at the benchmark's defaults). The band weighs both
  sides of each border alike.
- ``hist`` — the HIST loss [26] (**eq. 6**: ``L_hist = λ_s·L_CE + L_D``) following the official
  formulation (Lim et al., CVPR 2022): learnable class means and diagonal log-variances; each
  node's squared Mahalanobis distance (after L2 normalisation, log-variances through ReLU6) to
  every class; the distribution loss ``L_D`` = −log of the softmax(−τ·distance) mass on the true
  class; a hypergraph with one hyperedge per class present in the batch whose incidence is 1 for
  the class's own nodes and ``exp(−α·distance)`` for the others (semantic tuples); a two-layer
  HGNN (Feng et al., AAAI 2019) classifies the nodes, ``L_CE`` its cross-entropy. **Our reading**:
  HIST is a metric-learning loss over *samples*, so the samples here are the per-category
  embeddings pooled per image (``category_embeddings`` B×C×D): node (i, c) exists when category c
  occurs in image i's label map and is labelled c. (The HGNN uses LayerNorm where the official
  code uses BatchNorm, so a batch with few nodes trains.) The loss owns parameters (means,
  log-variances, HGNN; width ``LossConfig.hist_dim``): the optimiser must include
  ``loss.parameters()`` and the loss must be moved to the model's device.
- ``aux`` — deep supervision of the foreground-attention masks (``aux_logits``, Mask2Former):
  one-vs-rest BCE + soft Dice per category, the targets area-downsampled to the mask resolution.
  One-vs-rest matches the ``sigmoid > 0.5`` foreground of eq. 5.
- ``depth`` — against the generator's relative depth ``d ∈ [0, 1]`` (0 = no depth, masked out),
  target ``m_max·d``: scale-invariant log error (Eigen et al., the PanopticDepth depth loss,
  ``sqrt(mean g² − λ·mean(g)²)``, ``g = log(pred + f) − log(target + f)`` per image) plus the
  absolute relative error ``|pred − target| / max(target, f)``, with ``f = depth_floor·m_max``:
  the generator's nearest point (nose tip) has relative depth ~0, where an unfloored relative
  error is unbounded. Images without any depth pixel are skipped; a batch without depth gives 0.
- ``dice`` (off unless ``dice_weight`` > 0; not in the paper) — ``1 −`` the mean soft Dice of
  the softmax over the six face classes, batch-wise (:func:`soft_dice_loss`): it scores the
  small parts by their overlap rather than per pixel, as the F1 they are measured by does.
- ``decision`` (off unless ``decision_weight`` > 0; not in the paper: it supervises our
  :class:`~palsyseg.models.asymmetry.PartSideFPP`) — BCE of the decision ``q`` per part and
  half (``fpp_side_log_q``, B×P×2) against :func:`fpp_decision_targets`: which half, if any,
  holds most of that part's FPP pixels in the label map. Through the pixels alone the decision learns only
  from the few FPP pixels' cross-entropy; this gives each face one clear vote per part and half.
- ``edge`` — BCE of the ``edge`` logits against the union of category contours, with
  ``pos_weight = #negative / #positive`` (clamped to ``[1, edge_max_pos_weight]``).

**Eq. 8** writes ``L = L_D + λ_s·L_CE·L_best``, a *product* of the segmentation CE and the
boundary loss. Its gradient ``L_best·∇L_CE + L_CE·∇L_best`` scales each term by the other, which
vanishes as either one improves (a perfect boundary switches off learning of the interiors and
vice versa) and makes the effective learning rate depend on the loss scale. We therefore default
to a **weighted sum** (``combine="sum"``):
``w_ce·CE + w_boundary·L_best + w_hist·L_hist + w_aux·aux + w_depth·depth + w_edge·edge``
(``+ w_dice·dice + w_decision·decision`` when on), which
keeps eq. 8's ingredients (HIST's ``L_D`` and ``λ_s·L_CE`` via eq. 6, the CE, the boundary loss)
with independent, bounded gradients. ``combine="product"`` reproduces eq. 8's
``w_ce·CE·L_best`` for the segmentation part (the other terms are still added).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from palsyseg.labels import Label

__all__ = [
    "PART_ANCHOR_FALLBACKS",
    "HISTLoss",
    "LossConfig",
    "SegmentationLoss",
    "category_contours",
    "decision_loss",
    "fpp_decision_targets",
    "label_edges",
    "soft_dice_loss",
]


@dataclass
class LossConfig:
    """Weights and settings of :class:`SegmentationLoss` (a ``params.yaml`` ``loss`` section)."""

    ce_weight: float = 1.0
    class_weights: tuple[float, ...] | None = None  # per class, for the CE; None = uniform
    boundary_weight: float = 1.0  # eq. 7
    boundary_category_weights: tuple[float, ...] | None = None  # w_j of eq. 7; None = all 1
    boundary_outer: bool = False  # eq. 7's contour of j also holds the pixels touching it
    combine: str = "sum"  # "sum" | "product"  # eq. 8 reading, see the module docstring
    hist_weight: float = 0.1  # eq. 6 as a whole
    hist_lambda_s: float = 1.0  # λ_s of eq. 6
    hist_tau: float = 32.0  # softmax temperature of the distribution loss (official default)
    hist_alpha: float = 0.9  # incidence decay exp(−α·d) (official default)
    hist_hidden: int = 64  # HGNN hidden width
    hist_dim: int = 64  # width of category_embeddings (= PalsyNetConfig.embed_dim)
    aux_weight: float = 0.5
    depth_weight: float = 0.5
    depth_si_lambda: float = 0.85  # λ of the scale-invariant log error
    m_max: float = 80.0  # target depth = m_max · relative depth (eq. 2–3)
    depth_floor: float = 0.02  # × m_max: log offset and smallest relative-error denominator
    edge_weight: float = 0.5
    edge_max_pos_weight: float = 50.0
    dice_weight: float = 0.0  # soft Dice of the softmax over the face classes (0 = off, the paper)
    decision_weight: float = 0.0  # BCE of palsynet's per-part, per-side FPP decision (0 = off)
    fpp_parts: tuple[int, ...] = (4, 5)  # the parts that decision covers (eye, mouth), in order

    def __post_init__(self) -> None:
        self.fpp_parts = tuple(int(p) for p in self.fpp_parts)
        for name in ("class_weights", "boundary_category_weights"):
            values = getattr(self, name)
            if values is not None:
                setattr(self, name, tuple(float(v) for v in values))
                if any(not v >= 0 for v in getattr(self, name)):
                    raise ValueError(f"{name} must be non-negative numbers")
        if self.combine not in ("sum", "product"):
            raise ValueError(f"combine must be 'sum' or 'product', got {self.combine!r}")
        if self.hist_lambda_s <= 0:
            raise ValueError("hist_lambda_s must be > 0 (eq. 6)")
        if self.m_max <= 0:
            raise ValueError("m_max must be > 0")
        if self.depth_floor <= 0:
            raise ValueError("depth_floor must be > 0")
        if not 0 <= self.depth_si_lambda <= 1:
            raise ValueError("depth_si_lambda must lie in [0, 1]")


# ----------------------------------------------------------------------------------------------
# Boundaries of a label map


def category_contours(mask: Tensor, num_classes: int) -> Tensor:
    """Per-category inner contours of a label map B×H×W → bool B×C×H×W.

    A pixel is on the contour of its own category when one of its 4-neighbours has another label;
    the image border is not a contour (edge-replicated neighbours).
    """
    differs = torch.zeros_like(mask, dtype=torch.bool)
    for neighbour in _four_neighbours(mask):
        differs |= neighbour != mask
    return _onehot_bool(mask, num_classes) & differs[:, None]


def category_bands(mask: Tensor, num_classes: int) -> Tensor:
    """Two-sided category contours B×H×W → bool B×C×H×W: for category ``j``, its own contour
    pixels (:func:`category_contours`) and the pixels of other labels with a 4-neighbour of
    ``j`` (the image border is not a contour)."""
    onehot = _onehot_bool(mask, num_classes)
    touches = torch.zeros_like(onehot)
    for neighbour in _four_neighbours(onehot):
        touches |= neighbour
    return category_contours(mask, num_classes) | (touches & ~onehot)


def _four_neighbours(x: Tensor) -> list[Tensor]:
    """The up, down, left and right neighbour of every pixel of ``x`` (…×H×W), the image's edge
    replicated (so the border is nobody's contour)."""
    h, w = x.shape[-2:]
    flat = x.reshape(1, -1, h, w).float()  # replicate padding takes a 4-D tensor
    padded = (
        F.pad(flat, (1, 1, 1, 1), mode="replicate").to(x.dtype).view(*x.shape[:-2], h + 2, w + 2)
    )
    return [padded[..., dy : dy + h, dx : dx + w] for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2))]


def _onehot_bool(mask: Tensor, num_classes: int) -> Tensor:
    """B×H×W labels → bool B×C×H×W (1 byte per entry, unlike int64 ``F.one_hot``)."""
    classes = torch.arange(num_classes, device=mask.device)
    return mask[:, None] == classes[None, :, None, None]


def label_edges(mask: Tensor) -> Tensor:
    """Union of category contours, B×H×W float (1 on a boundary pixel of either side)."""
    return category_contours(mask, int(mask.max().item()) + 1).any(dim=1).float()


def boundary_enhanced_loss(
    pixel_ce: Tensor, contours: Tensor, category_weights: Tensor | None
) -> Tensor:
    """Eq. 7: mean over present (image, category) pairs of ``w_j/p_ij · Σ_contour CE``."""
    c = contours.float()
    p = c.sum(dim=(2, 3))  # p_ij: contour pixels of category j in image i
    summed = (c * pixel_ce[:, None]).sum(dim=(2, 3))
    present = p > 0
    per_pair = summed / p.clamp(min=1)
    if category_weights is not None:
        per_pair = per_pair * category_weights[None]
    if not present.any():
        return pixel_ce.sum() * 0.0
    return per_pair[present].mean()


# ----------------------------------------------------------------------------------------------
# HIST (eq. 6)


class HISTLoss(nn.Module):
    """Hypergraph-induced semantic tuplet loss (Lim et al., CVPR 2022), eq. 6.

    ``forward(embeddings N×D, labels N)`` → (``λ_s·L_CE + L_D``, ``L_CE``, ``L_D``).
    """

    def __init__(
        self, num_classes: int, dim: int, tau: float, alpha: float, lambda_s: float, hidden: int
    ) -> None:
        super().__init__()
        self.num_classes, self.tau, self.alpha, self.lambda_s = num_classes, tau, alpha, lambda_s
        self.means = nn.Parameter(torch.empty(num_classes, dim))
        self.log_vars = nn.Parameter(torch.empty(num_classes, dim))
        nn.init.kaiming_normal_(self.means, mode="fan_out")
        nn.init.kaiming_normal_(self.log_vars, mode="fan_out")
        self.theta1 = nn.Linear(dim, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.theta2 = nn.Linear(hidden, num_classes)

    def distances(self, x: Tensor) -> Tensor:
        """Squared Mahalanobis distances N×C of L2-normalised nodes to L2-normalised class means
        under diagonal covariances ``exp(relu6(log_var))``."""
        x = F.normalize(x, dim=-1)
        mu = F.normalize(self.means, dim=-1)
        var = torch.exp(F.relu6(self.log_vars))
        return ((x[:, None, :] - mu[None]) ** 2 / var[None]).sum(dim=-1)

    @staticmethod
    def propagation(incidence: Tensor) -> Tensor:
        """HGNN propagation ``Dv^-1/2 H W De^-1 Hᵀ Dv^-1/2`` with unit hyperedge weights W."""
        dv = incidence.sum(dim=1).clamp(min=1e-12)
        de = incidence.sum(dim=0).clamp(min=1e-12)
        h = incidence * dv.rsqrt()[:, None]
        return (h / de[None]) @ h.t()

    def forward(self, x: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = x.float()
        dist = self.distances(x)
        onehot = F.one_hot(labels, self.num_classes).float()
        # distribution loss L_D: −log of the probability mass on the true class distribution
        log_prob = F.log_softmax(-self.tau * dist, dim=1)
        loss_d = -(log_prob * onehot).sum(dim=1).mean()
        # hypergraph: one hyperedge per class in the batch (semantic tuple), soft incidence
        in_batch = onehot.sum(dim=0) > 0
        own = onehot[:, in_batch]
        incidence = own + torch.exp(-self.alpha * dist[:, in_batch]) * (1 - own)
        g = self.propagation(incidence)
        hidden = F.leaky_relu(self.norm(g @ self.theta1(x)), 0.1)
        node_logits = g @ self.theta2(hidden)
        loss_ce = F.cross_entropy(node_logits, labels)
        return self.lambda_s * loss_ce + loss_d, loss_ce, loss_d  # eq. 6


# ----------------------------------------------------------------------------------------------
# The whole objective


def soft_dice_loss(logits: Tensor, mask: Tensor, *, smooth: float = 1.0) -> Tensor:
    """``1 −`` the mean soft Dice of the softmax over the face classes (1 … C−1), batch-wise.

    Per class ``j``: ``(2·Σ p_j·t_j + s) / (Σ p_j + Σ t_j + s)`` summed over every pixel of the
    batch (``p`` the softmax, ``t`` the one-hot labels, ``s`` = ``smooth``), so a class absent
    from the batch's labels still pays for the probability it predicts. Background is left out:
    its Dice is ~1 on any face photo and carries no signal.
    """
    num_classes = logits.shape[1]
    prob = logits.softmax(dim=1)[:, 1:]
    target = _onehot_bool(mask, num_classes)[:, 1:].to(prob.dtype)
    inter = (prob * target).sum(dim=(0, 2, 3))
    denom = prob.sum(dim=(0, 2, 3)) + target.sum(dim=(0, 2, 3))
    return 1 - ((2 * inter + smooth) / (denom + smooth)).mean()


PART_ANCHOR_FALLBACKS: dict[int, tuple[int, ...]] = {int(Label.EYE): (int(Label.EYEBROW),)}
"""Where a part with no pixel of its own sits (:func:`fpp_decision_targets`): the eye (4) under
its eyebrow (3). In an eye-closure photo the strong eye is shut and the weak one, which does not
close, is all FPP, so no eye pixel is left to say where the eyes are."""


def fpp_decision_targets(
    mask: Tensor,
    parts: tuple[int, ...],
    fpp_class: int,
    fallbacks: dict[int, tuple[int, ...]] | None = None,
) -> Tensor:
    """B×P×2 float targets of the per-part, per-side FPP decision from B×H×W labels.

    ``[b, p, 0]`` is 1 when image ``b``'s FPP pixels of part ``parts[p]`` lie mostly left of
    the centre line (column < (W − 1)/2; the face frame's midline), ``[b, p, 1]`` when mostly
    right of it (the centre column counts for neither): one weak half per part, as the label
    rule has it — the face's own midline is a few pixels off the frame's in a third of the
    streamed palsy photos, so a weak mouth half's FPP often crosses it by a column or two
    (1.8 % of those pixels, measured). An FPP pixel belongs to the part whose anchor row is
    nearest to its row: the mean row of the part's own pixels (FPP replaces half an eye or
    mouth, so the other half usually remains), or, where the part shows none, of its
    ``fallbacks`` classes (default :data:`PART_ANCHOR_FALLBACKS`: the eyebrows for the eye); a
    part with neither is never nearest.

    Before the fallback, a weak eye in an eye-closure photo (the strong eye shut, no eye pixel
    left) was read as a weak *mouth* half: 11 of the first 150 test photos of the benchmark,
    every one of them an eye closure, so the decision was trained to mark the mouth where the
    pixels' labels marked the eye.
    """
    fallbacks = PART_ANCHOR_FALLBACKS if fallbacks is None else fallbacks
    b, h, w = mask.shape
    rows = torch.arange(h, device=mask.device, dtype=torch.float32)
    distances = []
    for part in parts:
        own = (mask == part).float()
        count = own.sum(dim=(1, 2))
        anchor = torch.zeros_like(own)
        for other in fallbacks.get(part, ()):
            anchor = anchor + (mask == other).float()
        anchor = torch.where(count[:, None, None] > 0, own, anchor)
        count = anchor.sum(dim=(1, 2))
        centre = (anchor.sum(dim=2) * rows).sum(dim=1) / count.clamp(min=1)  # B
        distance = (rows[None] - centre[:, None]).abs()  # B×H
        distances.append(torch.where(count[:, None] > 0, distance, torch.full_like(distance, 1e9)))
    nearest = torch.stack(distances).argmin(dim=0)  # B×H: the part each row's FPP belongs to
    fpp = mask == fpp_class
    cols = torch.arange(w, device=mask.device, dtype=torch.float32)
    halves = torch.stack([cols < (w - 1) / 2, cols > (w - 1) / 2])  # 2×W: left, right
    targets = torch.zeros(b, len(parts), 2, device=mask.device)
    for i in range(len(parts)):
        of_part = (fpp & (nearest == i)[:, :, None]).sum(dim=1).float()  # B×W: per column
        counts = (of_part[:, None, :] * halves[None].float()).sum(dim=-1)  # B×2
        weak = counts.argmax(dim=1)  # the half that holds most of the part's FPP
        present = counts.sum(dim=1) > 0
        targets[torch.arange(b, device=mask.device), i, weak] = present.float()
    return targets


def decision_loss(log_q: Tensor, targets: Tensor) -> Tensor:
    """Mean BCE of ``q = exp(log_q)`` (B×P×2) against 0/1 ``targets`` of the same shape."""
    log_not_q = torch.log(-torch.expm1(log_q.clamp(max=-1e-6)))
    return -(targets * log_q + (1 - targets) * log_not_q).mean()


def _resize_logits(logits: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


class SegmentationLoss(nn.Module):
    """Eq. 6–8 and the auxiliary multi-task terms; see the module docstring for each term.

    ``forward(outputs, mask, depth=None)``: ``outputs`` a model's dict (``logits`` required;
    ``aux_logits``, ``category_embeddings``, ``depth``, ``edge`` used when present), ``mask`` B×H×W
    int64 labels, ``depth`` B×H×W relative depth in ``[0, 1]`` (0 = no depth) or None. Returns
    (total loss, ``{term: value}`` floats for logging, including ``total``).
    """

    def __init__(self, config: LossConfig | None = None, num_classes: int = 7) -> None:
        super().__init__()
        self.config = cfg = config or LossConfig()
        self.num_classes = num_classes
        for name in ("class_weights", "boundary_category_weights"):
            values = getattr(cfg, name)
            if values is not None and len(values) != num_classes:
                raise ValueError(f"{name} needs {num_classes} values, got {len(values)}")
            tensor = None if values is None else torch.tensor(list(values), dtype=torch.float32)
            self.register_buffer(name, tensor, persistent=False)
        self.hist = HISTLoss(
            num_classes,
            cfg.hist_dim,
            cfg.hist_tau,
            cfg.hist_alpha,
            cfg.hist_lambda_s,
            cfg.hist_hidden,
        )

    def forward(
        self, outputs: dict, mask: Tensor, depth: Tensor | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        cfg = self.config
        mask = mask.long()
        logits = _resize_logits(outputs["logits"].float(), tuple(mask.shape[-2:]))
        terms: dict[str, Tensor] = {}

        pixel_ce = F.cross_entropy(logits, mask, weight=self.class_weights, reduction="none")
        if self.class_weights is not None:  # weighted mean, as F.cross_entropy(reduction="mean")
            ce = pixel_ce.sum() / self.class_weights[mask].sum()
        else:
            ce = pixel_ce.mean()
        contours = category_contours(mask, self.num_classes)
        band = category_bands(mask, self.num_classes) if cfg.boundary_outer else contours
        boundary = boundary_enhanced_loss(pixel_ce, band, self.boundary_category_weights)
        terms["ce"], terms["boundary"] = ce, boundary
        if cfg.combine == "product":  # eq. 8: λ·L_CE·L_best
            total = cfg.ce_weight * ce * boundary
        else:
            total = cfg.ce_weight * ce + cfg.boundary_weight * boundary

        if cfg.dice_weight > 0:
            terms["dice"] = soft_dice_loss(logits, mask)
            total = total + cfg.dice_weight * terms["dice"]

        if cfg.decision_weight > 0 and outputs.get("fpp_side_log_q") is not None:
            log_q = outputs["fpp_side_log_q"].float()
            if log_q.shape[1] != len(cfg.fpp_parts):
                raise ValueError(
                    f"fpp_side_log_q covers {log_q.shape[1]} parts but LossConfig.fpp_parts "
                    f"names {len(cfg.fpp_parts)}: set loss.fpp_parts to the model's parts"
                )
            targets = fpp_decision_targets(mask, cfg.fpp_parts, self.num_classes - 1)
            terms["decision"] = decision_loss(log_q, targets)
            total = total + cfg.decision_weight * terms["decision"]

        if cfg.hist_weight > 0 and outputs.get("category_embeddings") is not None:
            emb = outputs["category_embeddings"]
            b = mask.shape[0]
            offsets = torch.arange(b, device=mask.device)[:, None, None] * self.num_classes
            counts = torch.bincount((mask + offsets).flatten(), minlength=b * self.num_classes)
            present = counts.view(b, self.num_classes) > 0  # category c occurs in image i
            image_idx, category_idx = present.nonzero(as_tuple=True)
            if emb.shape[-1] != cfg.hist_dim:
                raise ValueError(
                    f"category_embeddings have width {emb.shape[-1]} but LossConfig.hist_dim is "
                    f"{cfg.hist_dim}: set loss.hist_dim to the model's embed_dim"
                )
            hist_total, hist_ce, hist_d = self.hist(emb[image_idx, category_idx], category_idx)
            terms["hist"], terms["hist_ce"], terms["hist_d"] = hist_total, hist_ce, hist_d
            total = total + cfg.hist_weight * hist_total

        if cfg.aux_weight > 0 and outputs.get("aux_logits"):
            aux = [self._mask_loss(a.float(), mask) for a in outputs["aux_logits"]]
            terms["aux"] = torch.stack(aux).mean()
            total = total + cfg.aux_weight * terms["aux"]

        if cfg.depth_weight > 0 and outputs.get("depth") is not None and depth is not None:
            terms["depth"] = self._depth_loss(outputs["depth"].float(), depth.float())
            total = total + cfg.depth_weight * terms["depth"]

        if cfg.edge_weight > 0 and outputs.get("edge") is not None:
            edge_target = contours.any(dim=1).float()
            edge_logits = _resize_logits(outputs["edge"].float(), tuple(mask.shape[-2:]))[:, 0]
            pos = edge_target.sum()
            neg = edge_target.numel() - pos
            pos_weight = (neg / pos.clamp(min=1)).clamp(1.0, cfg.edge_max_pos_weight)
            terms["edge"] = F.binary_cross_entropy_with_logits(
                edge_logits, edge_target, pos_weight=pos_weight.detach()
            )
            total = total + cfg.edge_weight * terms["edge"]

        names = [*terms, "total"]
        values = torch.stack([v.detach().float() for v in [*terms.values(), total]]).tolist()
        return total, dict(zip(names, values, strict=True))  # one device sync for all terms

    def _mask_loss(self, mask_logits: Tensor, mask: Tensor) -> Tensor:
        """One-vs-rest BCE + soft Dice of B×C×h×w mask logits against area-downsampled targets."""
        onehot = _onehot_bool(mask, self.num_classes).float()
        target = F.adaptive_avg_pool2d(onehot, mask_logits.shape[-2:])
        bce = F.binary_cross_entropy_with_logits(mask_logits, target)
        prob = mask_logits.sigmoid()
        inter = (prob * target).sum(dim=(2, 3))
        denom = prob.sum(dim=(2, 3)) + target.sum(dim=(2, 3))
        dice = 1 - (2 * inter + 1) / (denom + 1)
        return bce + dice.mean()

    def _depth_loss(self, pred: Tensor, relative: Tensor) -> Tensor:
        """Scale-invariant log error + absolute relative error on pixels with depth (> 0)."""
        cfg = self.config
        pred = _resize_logits(pred, tuple(relative.shape[-2:]))[:, 0].clamp(min=0.0)
        target = cfg.m_max * relative
        valid = (relative > 0).float()
        # The generator's nearest point (nose tip) has relative depth ~1/65535: a floor keeps the
        # log and the relative error bounded there, and log finite where the prediction is 0.
        floor = cfg.depth_floor * cfg.m_max
        count = valid.sum(dim=(1, 2))
        has_depth = count > 0
        n = count.clamp(min=1)
        g = (torch.log(pred + floor) - torch.log(target + floor)) * valid
        mean_g, mean_g2 = g.sum(dim=(1, 2)) / n, g.pow(2).sum(dim=(1, 2)) / n
        silog = torch.sqrt((mean_g2 - cfg.depth_si_lambda * mean_g.pow(2)).clamp(min=1e-8))
        abs_rel = ((pred - target).abs() / target.clamp(min=floor) * valid).sum(dim=(1, 2)) / n
        per_image = (silog + abs_rel) * has_depth  # images without depth contribute nothing
        return per_image.sum() / has_depth.sum().clamp(min=1)
