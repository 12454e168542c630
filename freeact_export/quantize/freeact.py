"""FreeAct: per-token-type activation masks on one learned, shared weight transform.

For a group with weight W (its consumers stacked) and calibration samples X_k of each type k:

    x̃_k = Q_a( m_k ⊙ ((x / s) (P1 ⊗ P2)) ; c_k )      W̃ = Q_w( W diag(s) (P1 ⊗ P2)⁻ᵀ ; c_w )

m_k keeps the shared block and type k's dedicated block and zeroes the other types' blocks;
it is exact for a type-k token whose activations have no energy in those blocks. P1, P2, s, the
per-output-channel weight clip c_w and the per-type activation clip c_k are learned with AdamW
on Σ_k ‖X_k Wᵀ − x̃_k W̃ᵀ‖² over all calibration tokens, relative to Σ_k ‖X_k Wᵀ‖²
(straight-through rounding). With one type there are no masks: that is the FlatQuant-style method.

Masks chosen in the starting basis leak (a random or Hadamard basis spreads every type over
every dimension), and zeroing leaked energy is pure error. So learning runs in two phases: the
first without masks; then the dedicated blocks (at most r_k = d · dedicated_fraction per type)
are taken in the learned basis, only where the other types keep less than `MAX_LEAK` of their
mean energy per dimension; the second phase learns a branch with these masks from the first
phase's result, and the lower final objective wins: the masks are kept only where they pay.
With `branch_steps` set, the first phase has all `steps` (it is then the one-type method's
learning, so a group falls back to what FlatQuant-style would give it) and the branch has
`branch_steps` more. Without it (the older schedule) each phase has half the steps, and with
continue_shared the shared transform also continues through the second half.

The general per-type variant (`per_type=True`, method "freeact-general") replaces the masks by
per-type activation factors: type k's tokens take x̃_k = (x / s)(A_k1 ⊗ A_k2) while the weights
keep the one shared fold W diag(s)(P1 ⊗ P2)⁻ᵀ. Exact whenever A_k − P maps type k's row space to
zero (X_k A_k = X_k P), a set far larger than {A_k = P} for rank-deficient types such as
attention sinks (docs/design.md: Penrose's solution set). The A_k start from the first half's learned
P and are learned with it in the second half, against the shared branch; the lower objective wins.
"""

from __future__ import annotations

import copy
import math

import torch

from freeact_export.calibrate.stats import TypeStats
from freeact_export.config import FreeActSpec, QuantSpec
from freeact_export.quantize.baselines import smoothing_factors
from freeact_export.quantize.quantizers import fake_quantize, searched_row_clip
from freeact_export.transforms.apply import kron_apply
from freeact_export.transforms.hadamard import hadamard, hadamard_supported, random_orthogonal

_CLIP_LOGIT_INIT = 5.0  # sigmoid(5) = 0.993: start from (almost) no clipping, as FlatQuant does
# Activation clips tried per type for clip_start="search". A clip's logit moves about lr per AdamW step,
# so from 0.993 (logit 5) the cpu preset's 100 steps at 5e-3 could not reach 0.9 (logit 2.2): the learned
# clips barely moved, and starting them searched did more for the objective than 15x the steps.
ACT_CLIP_GRID = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6)
_CLIP_SEARCH_TOKENS = 1024  # tokens per type that the activation clip grid is scored on
# How dedicated blocks are chosen; recorded with results so figures of earlier choices stay labelled.
MASK_SELECTION = "v2: in the learned basis, leak-guarded, kept where they lower the objective"
MAX_LEAK = 0.05  # a dimension is dedicated to one type only where the others keep < 5 % of their mean energy


def kron_dims(d: int) -> tuple[int, int]:
    """d = d1 · d2 with d1 ≤ d2 as close to sqrt(d) as possible (cheapest O(d (d1 + d2)))."""
    d1 = max(f for f in range(1, math.isqrt(d) + 1) if d % f == 0)
    return d1, d // d1


def _init_factor(n: int, spec: FreeActSpec, seed: int) -> torch.Tensor:
    if spec.init == "hadamard" and hadamard_supported(n):
        return hadamard(n)
    return random_orthogonal(n, seed)


def type_masks(energy: torch.Tensor, fraction: float, max_leak: float = float("inf")) -> torch.Tensor:
    """0/1 masks [K, d] from per-type energy per transformed dimension [K, d].

    Each type in turn takes, among unclaimed dimensions, up to r = round(d · fraction) where its
    energy most exceeds the others' (ratio to their sum), skipping any dimension where another
    type has more than `max_leak` times its own mean energy per dimension; every other type
    zeroes the dimensions taken.
    """
    num_types, d = energy.shape
    masks = torch.ones(num_types, d, dtype=torch.float64)
    if num_types == 1 or fraction == 0:
        return masks
    r = max(1, round(d * fraction))
    share = energy / energy.sum(dim=1, keepdim=True).clamp(min=1e-30)  # types with few tokens count equally
    claimed = torch.zeros(d, dtype=torch.bool)
    for k in range(num_types):
        others = torch.cat([share[:k], share[k + 1:]])
        ratio = share[k] / (others.sum(dim=0) + 1e-12)
        leaky = (others * d > max_leak).any(dim=0)  # share · d = energy relative to the type's mean
        ratio[claimed | leaky] = -1.0
        dims = torch.topk(ratio, r).indices
        dims = dims[ratio[dims] >= 0]
        claimed[dims] = True
        for other in range(num_types):
            if other != k:
                masks[other, dims] = 0.0
    return masks


class _Learner(torch.nn.Module):
    def __init__(self, weight: torch.Tensor, smooth: torch.Tensor, p1: torch.Tensor, p2: torch.Tensor,
                 num_types: int):
        super().__init__()
        self.a1: torch.nn.Parameter | None = None  # per-type activation factors (general variant)
        self.a2: torch.nn.Parameter | None = None
        self.register_buffer("weight", weight)
        self.p1 = torch.nn.Parameter(p1.float().clone())
        self.p2 = torch.nn.Parameter(p2.float().clone())
        self.log_smooth = torch.nn.Parameter(smooth.float().log())
        self.weight_clip = torch.nn.Parameter(torch.full((weight.shape[0], 1), _CLIP_LOGIT_INIT))
        self.act_clip = torch.nn.Parameter(torch.full((num_types,), _CLIP_LOGIT_INIT))

    def folded_weight(self) -> torch.Tensor:
        smooth = self.log_smooth.exp()
        return kron_apply(self.weight * smooth, torch.linalg.inv(self.p1).T, torch.linalg.inv(self.p2).T)

    def split_per_type(self, num_types: int) -> None:
        """Give every type its own activation factors, starting from the shared ones."""
        self.a1 = torch.nn.Parameter(self.p1.detach().expand(num_types, -1, -1).clone())
        self.a2 = torch.nn.Parameter(self.p2.detach().expand(num_types, -1, -1).clone())

    def activations(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Type k's transformed activations (before masks and quantization)."""
        a1, a2 = (self.p1, self.p2) if self.a1 is None else (self.a1[k], self.a2[k])
        return kron_apply(x / self.log_smooth.exp(), a1, a2)


def _clip_logit(clip: torch.Tensor | float) -> torch.Tensor:
    """The logit a learned clip starts at: no higher than the unclipped start (its gradient vanishes above)."""
    ceiling = 1 / (1 + math.exp(-_CLIP_LOGIT_INIT))
    return torch.logit(torch.as_tensor(clip, dtype=torch.float32).clamp(max=ceiling))


def _search_clips(learner: _Learner, weight_spec: QuantSpec, quantized_acts: bool, score) -> None:
    """Start the clips searched on the starting transform: each weight row's by QuaRot's search, then
    each type's activation clip, in turn, as the grid value with the lowest `score()` (the objective)."""
    learner.weight_clip.copy_(_clip_logit(searched_row_clip(learner.folded_weight(), weight_spec)))
    if not quantized_acts:
        return
    for k in range(len(learner.act_clip)):
        tried = []
        for clip in ACT_CLIP_GRID:
            learner.act_clip[k] = _clip_logit(clip)
            tried.append((score(), -clip))  # a tie keeps the larger clip
        learner.act_clip[k] = _clip_logit(-min(tried)[1])


def learn_freeact(group_name: str, stats: list[TypeStats], weights: list[torch.Tensor], weight_spec: QuantSpec,
                  act_spec: QuantSpec | None, spec: FreeActSpec, single_type: bool,
                  seed: int, per_type: bool = False) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict]:
    """Learn one group's transform.

    Args:
        single_type: pool all types (FlatQuant-style): no masks.
        per_type: the general variant: per-type activation factors instead of masks.

    Returns:
        tensors: plan tensors ("smooth", "kron_1", "kron_2", "clip" [K], and "masks" [K, d] or
            "type_kron_1" [K, d1, d1] + "type_kron_2" [K, d2, d2] where they paid).
        weight_clip: learned per-output-channel clip [n, 1] for quantizing the folded weight.
        info: objective before and after learning.
    """
    gen = torch.Generator().manual_seed(seed)
    samples = [s.samples.float() for s in stats]
    if single_type:
        samples = [torch.cat(samples)]
    num_types = len(samples)
    weight = torch.cat([w.detach().float() for w in weights])
    d = weight.shape[1]
    d1, d2 = kron_dims(d)
    smooth = smoothing_factors(stats, weights)
    learner = _Learner(weight, smooth, _init_factor(d1, spec, seed), _init_factor(d2, spec, seed + 1), num_types)
    targets = [x @ weight.T for x in samples]
    counts = torch.tensor([float(len(x)) for x in samples] if single_type else [float(s.count) for s in stats])
    if spec.type_weighting == "tokens":  # Σ over all tokens of the squared error, relative to the target's
        share = counts / counts.sum()
        scale = float(sum(share[k] * targets[k].pow(2).mean() for k in range(num_types)))
        weights_k = [float(share[k]) / scale for k in range(num_types)]
    else:  # each type's relative error counts the same
        weights_k = [1.0 / float(t.pow(2).mean()) for t in targets]

    def objective(model: _Learner, masks: torch.Tensor, batches: list[torch.Tensor]) -> torch.Tensor:
        w_q = fake_quantize(model.folded_weight(), weight_spec, torch.sigmoid(model.weight_clip))
        loss = torch.zeros(())
        for k, idx in enumerate(batches):
            x = model.activations(samples[k][idx], k) * masks[k]
            if act_spec is not None:
                x = fake_quantize(x, act_spec, torch.sigmoid(model.act_clip[k]))
            loss = loss + weights_k[k] * (x @ w_q.T - targets[k][idx]).pow(2).mean()
        return loss

    def learn(model: _Learner, masks: torch.Tensor, steps: int, branch_gen: torch.Generator) -> float:
        optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.0)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
        for _ in range(steps):
            batches = [torch.randint(0, len(x), (min(spec.batch_tokens, len(x)),), generator=branch_gen)
                       for x in samples]
            optimizer.zero_grad()
            objective(model, masks, batches).backward()
            optimizer.step()
            schedule.step()
        with torch.no_grad():
            return float(objective(model, masks, everything))

    everything = [torch.arange(len(x)) for x in samples]
    no_masks = torch.ones(num_types, d)
    with torch.no_grad():
        if spec.clip_start == "search":
            subset = [idx[:_CLIP_SEARCH_TOKENS] for idx in everything]
            _search_clips(learner, weight_spec, act_spec is not None,
                          lambda: float(objective(learner, no_masks, subset)))
        before = float(objective(learner, no_masks, everything))
    splits = num_types > 1 and (per_type or spec.dedicated_fraction > 0)
    if splits and spec.branch_steps:  # the shared transform has every step; the branch comes on top
        first, second = spec.steps, spec.branch_steps
    else:
        first = spec.steps // 2 if splits else spec.steps
        second = spec.steps - first
    after = learn(learner, no_masks, first, gen)
    masks = no_masks
    if second:  # the shared branch against masks or per-type factors
        with torch.no_grad():
            energy = torch.stack([learner.activations(x, k).double().pow(2).mean(0) for k, x in enumerate(samples)])
        candidate = no_masks if per_type else type_masks(energy, spec.dedicated_fraction, MAX_LEAK).float()
        branch = copy.deepcopy(learner)
        if per_type:
            branch.split_per_type(num_types)
        branch_seed = int(torch.randint(0, 2**31, (1,), generator=gen))
        if spec.continue_shared and not spec.branch_steps:  # else the branch competes with the first half's result
            after = learn(learner, no_masks, second, torch.Generator().manual_seed(branch_seed))
        if per_type or not bool((candidate == 1).all()):
            after_branch = learn(branch, candidate, second, torch.Generator().manual_seed(branch_seed))
            if after_branch < after:
                learner, masks, after = branch, candidate, after_branch
    with torch.no_grad():
        act_clip = torch.sigmoid(learner.act_clip)
        if single_type:
            act_clip = act_clip.expand(len(stats))
        tensors = {"smooth": learner.log_smooth.exp().detach(), "kron_1": learner.p1.detach(),
                   "kron_2": learner.p2.detach(), "clip": act_clip.detach().clone()}
        if not bool((masks == 1).all()):  # all-ones masks (one type, or masks that did not pay) are not stored
            tensors["masks"] = masks
        if learner.a1 is not None:
            tensors["type_kron_1"], tensors["type_kron_2"] = learner.a1.detach(), learner.a2.detach()
        weight_clip = torch.sigmoid(learner.weight_clip).detach().double()
    kept = masks.sum(dim=1).tolist()
    return tensors, weight_clip, {"group": group_name, "objective_before": before, "objective_after": after,
                                  "kept_dims_per_type": kept, "per_type_factors": learner.a1 is not None}
